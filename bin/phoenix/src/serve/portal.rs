//! The portal: server-rendered HTML pages over the same views as the JSON API (ADR 007), with
//! no asset to build: one small vendored script (`live.js`, embedded) follows a fleet's
//! operations live over server-sent events. Signing in with an API token gives an HttpOnly
//! session cookie; every form that changes something carries the session's CSRF token.

use super::api::{self, ApiError};
use super::auth::{self, Role};
use super::{AppState, blocking};
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The session cookie's name.
const COOKIE: &str = "phoenix_session";
/// How long a session lasts (the token it was opened with is checked on every page too).
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once; the oldest is dropped first.
const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Clone, Debug)]
struct Session {
    /// The SHA-256 of the token it was opened with.
    token_hash: String,
    name: String,
    role: Role,
    /// Sent back with every form that changes something.
    csrf: String,
    opened: Instant,
}

/// Open sessions, by the random id the cookie carries. Bounded by [`MAX_SESSIONS`].
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    table: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn open(&self, session: Session) -> anyhow::Result<String> {
        let id = auth::new_secret()?;
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        table.retain(|_, s| now.duration_since(s.opened) < SESSION_TTL);
        if table.len() >= MAX_SESSIONS
            && let Some(oldest) = table
                .iter()
                .min_by_key(|(_, s)| s.opened)
                .map(|(k, _)| k.clone())
        {
            table.remove(&oldest);
        }
        table.insert(id.clone(), session);
        Ok(id)
    }

    fn get(&self, id: &str) -> Option<Session> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table
            .get(id)
            .filter(|s| s.opened.elapsed() < SESSION_TTL)
            .cloned()
    }

    fn close(&self, id: &str) {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

fn cookie_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| v.len() <= 128)
}

/// The session of a request whose token is still live; `None` sends the browser to sign in.
async fn session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(String, Session)>, ApiError> {
    let Some(id) = cookie_id(headers) else {
        return Ok(None);
    };
    let Some(s) = state.sessions.get(&id) else {
        return Ok(None);
    };
    let hash = s.token_hash.clone();
    let token = blocking(state, move |store| Ok(store.api_token_by_secret(&hash)?)).await?;
    if token.is_some_and(|t| t.is_live(jiff::Timestamp::now())) {
        Ok(Some((id, s)))
    } else {
        // Revoked or expired since: the session ends with it.
        state.sessions.close(&id);
        Ok(None)
    }
}

/// HTML-escapes text.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON value as short text.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222}\
header{background:#222;color:#fff;padding:.6em 1em;display:flex;gap:1.5em;align-items:center}\
header a{color:#fff}main{padding:1em}table{border-collapse:collapse;margin:.5em 0}\
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}.ok{color:#070}.bad{color:#b00}\
pre{background:#f4f4f4;padding:.5em;overflow:auto}form.inline{display:inline}\
#live{border:1px solid #ccc;padding:.5em 1em;margin:.5em 0;max-width:60em}#live ol{max-height:24em;overflow:auto;font-family:monospace;font-size:.9em}\
#live .status{font-weight:bold}svg.chart{display:block;margin:.5em 0;max-width:100%;height:auto}\
table.numbers td{font-variant-numeric:tabular-nums}tr.critical td{font-weight:bold;color:#b00}\
ol.log{font-family:monospace;font-size:.85em;max-height:40em;overflow:auto;background:#f8f8f8;padding:.5em 1em .5em 3.5em;white-space:pre-wrap}\
ol.log .unit{color:#777}ol.log .partial{color:#999}.wave{display:inline-block;margin-right:.5em;padding:0 .4em;border:1px solid #070}";

/// The portal's one script, vendored (no build step) and embedded.
const LIVE_JS: &str = include_str!("live.js");

/// `GET /portal/static/live.js`: answers without a session, as static files do.
pub(crate) async fn live_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        LIVE_JS,
    )
        .into_response()
}

fn page(title: &str, signed_in: Option<&Session>, body: &str) -> Response {
    let mut nav = String::from(
        "<strong>Phoenix</strong><a href=\"/portal\">Fleets</a><a href=\"/portal/ledger\">Ledger</a>",
    );
    if let Some(s) = signed_in {
        let _ = write!(
            nav,
            "<span>{} ({})</span><form class=\"inline\" method=\"post\" action=\"/portal/sign-out\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Sign out</button></form>",
            esc(&s.name),
            s.role.as_str(),
            esc(&s.csrf)
        );
    }
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} - Phoenix</title>\
         <style>{STYLE}</style></head><body><header>{nav}</header><main><h1>{}</h1>{body}</main></body></html>",
        esc(title),
        esc(title)
    );
    let mut response = Html(html).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

fn error_page(e: ApiError, signed_in: Option<&Session>) -> Response {
    let (status, message) = e.parts();
    let mut r = page(
        "Error",
        signed_in,
        &format!("<p class=\"bad\">{}</p>", esc(message)),
    );
    *r.status_mut() = status;
    r
}

fn to_sign_in() -> Response {
    Redirect::to("/portal/sign-in").into_response()
}

/// Runs `view` for a signed-in browser, or sends it to sign in.
macro_rules! signed_in {
    ($state:expr, $headers:expr) => {
        match session(&$state, &$headers).await {
            Ok(Some(s)) => s,
            Ok(None) => return to_sign_in(),
            Err(e) => return error_page(e, None),
        }
    };
}

pub(crate) async fn root() -> Redirect {
    Redirect::to("/portal")
}

pub(crate) async fn sign_in_form() -> Response {
    page(
        "Sign in",
        None,
        "<form method=\"post\" action=\"/portal/sign-in\"><p>API token (from \
         <code>phoenix serve token create NAME --role viewer</code>):</p>\
         <p><input type=\"password\" name=\"token\" size=\"72\" autocomplete=\"off\" autofocus></p>\
         <p><button>Sign in</button></p></form>",
    )
}

#[derive(Deserialize)]
pub(crate) struct SignIn {
    token: String,
}

pub(crate) async fn sign_in(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    form: Result<Form<SignIn>, axum::extract::rejection::FormRejection>,
) -> Response {
    let ip = peer.ip();
    if let Some(retry) = state.limiter.blocked(ip, Instant::now()) {
        state.metrics.rate_limited();
        return error_page(
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many failed sign-in attempts; try again in {retry} s"),
            ),
            None,
        );
    }
    let token = form
        .map(|Form(f)| f.token.trim().to_string())
        .unwrap_or_default();
    let refuse = |why: &str| {
        state.limiter.failed(ip, Instant::now());
        state.metrics.auth_failed();
        let mut r = page(
            "Sign in",
            None,
            &format!(
                "<p class=\"bad\">{}</p><p><a href=\"/portal/sign-in\">Try again</a></p>",
                esc(why)
            ),
        );
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        r
    };
    if token.len() > 128 || !token.starts_with(auth::TOKEN_PREFIX) {
        return refuse("not a Phoenix token");
    }
    let hash = auth::secret_hash(&token);
    let lookup = hash.clone();
    let found = match blocking(&state, move |store| Ok(store.api_token_by_secret(&lookup)?)).await {
        Ok(f) => f,
        Err(e) => return error_page(e, None),
    };
    let Some(t) = found.filter(|t| t.is_live(jiff::Timestamp::now())) else {
        return refuse("unknown, revoked or expired token");
    };
    let Some(role) = Role::parse(&t.role) else {
        return refuse("a token of a role this Phoenix does not know");
    };
    let csrf = match auth::new_secret() {
        Ok(c) => c,
        Err(e) => return error_page(ApiError::internal(e.to_string()), None),
    };
    let id = match state.sessions.open(Session {
        token_hash: hash,
        name: t.name,
        role,
        csrf,
        opened: Instant::now(),
    }) {
        Ok(id) => id,
        Err(e) => return error_page(ApiError::internal(e.to_string()), None),
    };
    let secure = if state.tls { "; Secure" } else { "" };
    let mut r = Redirect::to("/portal").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/portal; Max-Age={}{secure}",
        SESSION_TTL.as_secs()
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
    /// The revision a rollback form returns to.
    #[serde(default)]
    to: Option<String>,
}

fn csrf_ok(
    s: &Session,
    form: &Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> bool {
    form.as_ref()
        .is_ok_and(|Form(f)| !f.csrf.is_empty() && f.csrf == s.csrf)
}

fn csrf_refused(s: &Session) -> Response {
    error_page(
        ApiError::new(
            StatusCode::FORBIDDEN,
            "this form's CSRF token is missing or not this session's: reload the page and try again",
        ),
        Some(s),
    )
}

pub(crate) async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let (id, s) = signed_in!(state, headers);
    if !csrf_ok(&s, &form) {
        return csrf_refused(&s);
    }
    state.sessions.close(&id);
    let mut r = Redirect::to("/portal/sign-in").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "phoenix_session=; HttpOnly; SameSite=Strict; Path=/portal; Max-Age=0",
        ),
    );
    r
}

fn health_cell(healthy: &Value, total: &Value) -> String {
    let (h, t) = (healthy.as_u64().unwrap_or(0), total.as_u64().unwrap_or(0));
    let class = if h == t { "ok" } else { "bad" };
    format!("<span class=\"{class}\">{h}/{t} healthy</span>")
}

pub(crate) async fn overview(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (_, s) = signed_in!(state, headers);
    let fleets = api::with_views(&state, |store, views| {
        let mut out = Vec::new();
        for f in store.list_fleets()? {
            let view = views.get(store, &f)?;
            out.push((
                api::fleet_summary_of(&**store, &f, &view)?,
                view.tiers.clone(),
            ));
        }
        Ok(out)
    })
    .await;
    let fleets = match fleets {
        Ok(f) => f,
        Err(e) => return error_page(e, Some(&s)),
    };
    let mut body = String::from(
        "<table id=\"fleets\"><tr><th>Fleet</th><th>Health</th><th>Sites by tier and region</th><th>Latest revision</th><th></th></tr>",
    );
    for (f, groups) in &fleets {
        let name = text(&f["name"]);
        // One line per tier and region at a glance; its sites, each with its healthy
        // instances, one click away.
        let mut sites = String::new();
        for g in groups {
            let list = g["sites"].as_array().cloned().unwrap_or_default();
            let _ = write!(
                sites,
                "<details class=\"group\"><summary>{} &middot; {}: {} sites, {}</summary>",
                esc(&text(&g["tier"])),
                esc(&text(&g["region"])),
                list.len(),
                health_cell(&g["healthy"], &g["instances"])
            );
            for site in &list {
                let _ = write!(
                    sites,
                    "<span class=\"site\">{}: {}</span><br>",
                    esc(&text(&site["site"])),
                    health_cell(&site["healthy"], &site["instances"])
                );
            }
            sites.push_str("</details>");
        }
        let latest = &f["latest_revision"];
        let _ = write!(
            body,
            "<tr><td><a href=\"/portal/fleets/{n}\">{n}</a></td><td>{}</td><td>{sites}</td>\
             <td>r{} {}</td><td><a href=\"/portal/fleets/{n}/audit\">audit</a></td></tr>",
            health_cell(&f["healthy"], &f["instances"]),
            esc(&text(&latest["number"])),
            esc(&text(&latest["outcome"])),
            n = esc(&name),
        );
    }
    body.push_str("</table>");
    if fleets.is_empty() {
        body.push_str("<p>No fleet in the state store yet: <code>phoenix apply FILE</code>.</p>");
    }
    page("Fleets", Some(&s), &body)
}

pub(crate) async fn fleet(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(fleet): Path<String>,
) -> Response {
    let (_, s) = signed_in!(state, headers);
    let name = fleet.clone();
    let views = api::with_views(&state, move |store, views| {
        let revisions = api::known_fleet(&**store, &name)?;
        let view = views.get(store, &name)?;
        Ok((
            api::fleet_summary_of(&**store, &name, &view)?,
            view.instances_now(),
            revisions
                .iter()
                .map(|r| api::revision_summary_of(r, &views.revisions().get(&name, r)))
                .collect::<Vec<_>>(),
        ))
    })
    .await;
    let (summary, instances, revisions) = match views {
        Ok(v) => v,
        Err(e) => return error_page(e, Some(&s)),
    };
    let f = esc(&fleet);
    let mut body = format!(
        "<p>{} &middot; <a href=\"/portal/fleets/{p}/plan\">plan</a> &middot; <a href=\"/portal/fleets/{f}/audit\">audit log</a></p>\
         <section id=\"live\" data-state=\"idle\" data-events=\"/portal/fleets/{p}/events\">\
         <h2>Latest operation, live</h2><p class=\"status\">waiting for events (needs JavaScript)</p>\
         <p class=\"waves\"></p><ol></ol></section><script src=\"/portal/static/live.js\" defer></script>\
         <h2>By site</h2><p>Instances desired running on each site, and how many ran healthy at the last observation.</p>\
         <table id=\"by-site\"><tr><th>Site</th><th>Healthy</th><th>Oldest observation</th></tr>",
        health_cell(&summary["healthy"], &summary["instances"]),
        p = esc(&percent_path(&fleet)),
    );
    for (site, h) in summary["sites"].as_object().into_iter().flatten() {
        let _ = write!(
            body,
            "<tr data-site=\"{s}\"><td>{s}</td><td>{}</td><td>{}</td></tr>",
            health_cell(&h["healthy"], &h["instances"]),
            h["oldest_observation_age_seconds"]
                .as_f64()
                .map_or("-".to_string(), |a| format!("{a:.0} s ago")),
            s = esc(site),
        );
    }
    body.push_str(
        "</table><h2>Instances</h2><p>Health as the engine last observed it (age in seconds).</p>\
         <table><tr><th>Site</th><th>Host</th><th>Instance</th><th>Revision</th><th>Observed</th><th>Age</th></tr>",
    );
    for i in &instances {
        let class = if i["healthy"] == true { "ok" } else { "bad" };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td><a href=\"/portal/fleets/{p}/instances/{ip}\">{}</a></td><td>r{}</td><td class=\"{class}\">{}</td><td>{:.0}</td></tr>",
            esc(&text(&i["site"])),
            esc(&text(&i["host"])),
            esc(&text(&i["instance"])),
            esc(&text(&i["revision"])),
            esc(&text(&i["observed"])),
            i["age_seconds"].as_f64().unwrap_or(0.0),
            p = esc(&percent_path(&fleet)),
            ip = esc(&percent_path(&text(&i["instance"]))),
        );
    }
    body.push_str("</table><h2>Revisions</h2><table><tr><th>Revision</th><th>Kind</th><th>Outcome</th><th>Actor</th><th>Created</th><th></th></tr>");
    let mut prev: Option<String> = None;
    for r in &revisions {
        let n = text(&r["number"]);
        let diff = prev.as_ref().map_or(String::new(), |p| {
            format!(
                "<a href=\"/portal/fleets/{f}/diff?from={}&amp;to={}\">diff with r{}</a> ",
                esc(p),
                esc(&n),
                esc(p)
            )
        });
        let rollback = if s.role >= Role::Deployer {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"/portal/fleets/{f}/rollback\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"to\" value=\"{}\">\
                 <button>Roll back to r{}</button></form>",
                esc(&s.csrf),
                esc(&n),
                esc(&n)
            )
        } else {
            String::new()
        };
        let _ = write!(
            body,
            "<tr><td>r{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{diff}{rollback}</td></tr>",
            esc(&n),
            esc(&text(&r["kind"])),
            esc(&text(&r["outcome"])),
            esc(&text(&r["actor"])),
            esc(&text(&r["created_at"])),
        );
        prev = Some(n);
    }
    body.push_str("</table>");
    page(&format!("Fleet {fleet}"), Some(&s), &body)
}

/// `GET /portal/fleets/{fleet}/instances/{instance}`: one instance's record and the tail of its
/// logs, followed live by `live.js` from where the rendered tail ends (the tail's cursor), so
/// no line is lost or shown twice between the page and its stream. Without script the page is
/// the tail as of its loading.
pub(crate) async fn instance(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((fleet, instance)): Path<(String, String)>,
) -> Response {
    let (_, s) = signed_in!(state, headers);
    let record = match super::logs::known_instance(&state, &fleet, &instance).await {
        Ok(r) => r,
        Err(e) => return error_page(e, Some(&s)),
    };
    let tail =
        match super::logs::tail_of(&state, &fleet, &instance, super::logs::DEFAULT_TAIL).await {
            Ok(t) => t,
            Err(e) => return error_page(e, Some(&s)),
        };
    let (f, p, ip) = (
        esc(&fleet),
        esc(&percent_path(&fleet)),
        esc(&percent_path(&instance)),
    );
    let class = if record["healthy"] == true {
        "ok"
    } else {
        "bad"
    };
    let mut body = format!(
        "<p><a href=\"/portal/fleets/{p}\">fleet {f}</a></p><table id=\"instance\">\
         <tr><th>Unit</th><td>{}</td></tr><tr><th>Service</th><td>{}</td></tr>\
         <tr><th>Site</th><td>{}</td></tr><tr><th>Host</th><td>{}</td></tr>\
         <tr><th>Endpoint</th><td>{}</td></tr><tr><th>Desired</th><td>{}</td></tr>\
         <tr><th>Observed</th><td class=\"{class}\">{}</td></tr><tr><th>Ports</th><td>{}</td></tr>\
         <tr><th>Observed at</th><td>{} ({:.0} s ago)</td></tr></table>",
        esc(&text(&record["unit"])),
        esc(&text(&record["service"])),
        esc(&text(&record["site"])),
        esc(&text(&record["host"])),
        esc(&text(&record["endpoint"])),
        esc(&text(&record["desired"])),
        esc(&text(&record["observed"])),
        esc(&text(&record["ports"])),
        esc(&text(&record["observed_at"])),
        record["age_seconds"].as_f64().unwrap_or(0.0),
    );
    let _ = write!(
        body,
        "<section id=\"logs-live\" data-state=\"idle\" data-events=\"/portal/fleets/{p}/instances/{ip}/logs?follow=true&amp;after={}\">\
         <h2>Logs</h2><p>The last {} lines of {} (<a href=\"/portal/fleets/{p}/instances/{ip}\">reload</a>); \
         new lines appear below as the unit writes them.</p><p class=\"status\">not following (needs JavaScript)</p>\
         <ol id=\"log-lines\" class=\"log\">",
        esc(&percent_path(&tail.cursor)),
        super::logs::DEFAULT_TAIL,
        esc(&tail.units.join(", ")),
    );
    for l in &tail.lines {
        // Log text is whatever the unit wrote: escaped like every other value.
        let _ = write!(
            body,
            "<li data-unit=\"{}\"{}><span class=\"unit\">{}</span> {}</li>",
            esc(&l.unit),
            if l.partial { " class=\"partial\"" } else { "" },
            esc(&l.unit),
            esc(&l.text),
        );
    }
    body.push_str("</ol></section><script src=\"/portal/static/live.js\" defer></script>");
    if tail.units.is_empty() {
        body.push_str("<p id=\"no-logs\">No log file of this instance on the sites this server reaches yet.</p>");
    }
    page(&format!("Instance {instance} of {fleet}"), Some(&s), &body)
}

/// `401` for a portal stream asked for without a live session (the portal's event and log
/// streams take the session cookie in place of a bearer token); `None` when signed in.
async fn unless_signed_in(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    if matches!(session(state, headers).await, Ok(Some(_))) {
        return None;
    }
    Some(
        ApiError::new(StatusCode::UNAUTHORIZED, "sign in at /portal/sign-in first").into_response(),
    )
}

/// `GET /portal/fleets/{fleet}/instances/{instance}/logs`: the instance's logs for a signed-in
/// browser (the API's route with the session cookie in place of a bearer token).
pub(crate) async fn instance_logs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((fleet, instance)): Path<(String, String)>,
    query: Result<Query<api::LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Some(refused) = unless_signed_in(&state, &headers).await {
        return refused;
    }
    let Ok(Query(q)) = query else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "give ?tail=N, ?follow=true, ?after=CURSOR",
        )
        .into_response();
    };
    api::logs_answer(state, fleet, instance, &headers, q).await
}

/// `GET /portal/fleets/{fleet}/plan`: the plan of the fleet's applied spec as inline SVG charts
/// with their numbers in tables (`charts.rs`), from the same JSON as the API's plan.
pub(crate) async fn plan(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(fleet): Path<String>,
) -> Response {
    let (_, s) = signed_in!(state, headers);
    let name = fleet.clone();
    let plan = match blocking(&state, move |store| api::plan_view(store, &name)).await {
        Ok(p) => p,
        Err(e) => return error_page(e, Some(&s)),
    };
    let body = format!(
        "<p><a href=\"/portal/fleets/{}\">fleet {}</a></p>{}",
        esc(&percent_path(&fleet)),
        esc(&fleet),
        super::charts::plan_body(&plan)
    );
    page(&format!("Plan of {fleet}"), Some(&s), &body)
}

#[derive(Deserialize)]
pub(crate) struct DiffQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

pub(crate) async fn diff(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(fleet): Path<String>,
    query: Result<Query<DiffQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (_, s) = signed_in!(state, headers);
    let Ok(Query(q)) = query else {
        return error_page(
            ApiError::new(StatusCode::BAD_REQUEST, "give ?from=1&to=2"),
            Some(&s),
        );
    };
    let name = fleet.clone();
    let d = match blocking(&state, move |store| {
        api::diff_view(store, &name, &q.from, &q.to)
    })
    .await
    {
        Ok(d) => d,
        Err(e) => return error_page(e, Some(&s)),
    };
    let mut body = String::new();
    for (kind, title) in [
        ("added", "Added"),
        ("removed", "Removed"),
        ("changed", "Changed"),
    ] {
        let list = d["instances"][kind].as_array().cloned().unwrap_or_default();
        let _ = write!(body, "<h2>{title} ({})</h2><ul>", list.len());
        for i in &list {
            let _ = write!(
                body,
                "<li>{} ({} on {})</li>",
                esc(&text(&i["instance"])),
                esc(&text(&i["service"])),
                esc(&text(&i["site"]))
            );
        }
        body.push_str("</ul>");
    }
    let _ = write!(
        body,
        "<p>{} unchanged</p><h2>Spec files</h2>",
        text(&d["instances"]["unchanged"])
    );
    for file in d["files"].as_array().cloned().unwrap_or_default() {
        let _ = write!(
            body,
            "<h3>{}</h3><table><tr><th>r{}</th><th>r{}</th></tr><tr><td><pre>{}</pre></td><td><pre>{}</pre></td></tr></table>",
            esc(&text(&file["name"])),
            esc(&text(&d["from"])),
            esc(&text(&d["to"])),
            esc(&text(&file["from"])),
            esc(&text(&file["to"])),
        );
    }
    page(
        &format!(
            "Fleet {fleet}: r{} to r{}",
            text(&d["from"]),
            text(&d["to"])
        ),
        Some(&s),
        &body,
    )
}

pub(crate) async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(fleet): Path<String>,
) -> Response {
    let (_, s) = signed_in!(state, headers);
    let name = fleet.clone();
    let a = match blocking(&state, move |store| api::audit_view(store, &name)).await {
        Ok(a) => a,
        Err(e) => return error_page(e, Some(&s)),
    };
    let ledger = super::ledger::audit_confirmation(&state, &fleet).await;
    let mut body = if a["verified"] == true {
        format!(
            "<p class=\"ok\" id=\"verification\">Verified: {} records, every hash, link and signature checks out up to the anchor.</p>",
            text(&a["verification"]["records"])
        )
    } else {
        let mut b = String::from("<p class=\"bad\" id=\"verification\">Does not verify:</p><ul>");
        for p in a["verification"]["problems"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let _ = write!(
                b,
                "<li>record {}: {}</li>",
                esc(&text(&p["seq"])),
                esc(&text(&p["message"]))
            );
        }
        b.push_str("</ul>");
        b
    };
    // Per record: its confirmation on the ledger, when one is configured.
    let mut on_ledger: HashMap<u64, (String, String)> = HashMap::new();
    if let Some(l) = &ledger {
        if let Some(err) = l["error"].as_str() {
            let _ = write!(
                body,
                "<p class=\"bad\" id=\"ledger-confirmation\">Ledger: cannot be checked: {}</p>",
                esc(err)
            );
        } else {
            let total = l["records"].as_array().map_or(0, Vec::len);
            let confirmed = l["confirmed"].as_u64().unwrap_or(0);
            let class = if confirmed as usize == total
                && l["problems"].as_array().is_some_and(Vec::is_empty)
            {
                "ok"
            } else {
                "bad"
            };
            let _ = write!(
                body,
                "<p class=\"{class}\" id=\"ledger-confirmation\">Ledger ({}): {confirmed} of {total} records confirmed with the same hash, in order.</p>",
                esc(&text(&l["url"]))
            );
            for r in l["records"].as_array().cloned().unwrap_or_default() {
                if let Some(seq) = r["seq"].as_u64() {
                    on_ledger.insert(seq, (text(&r["status"]), text(&r["message"])));
                }
            }
        }
    }
    let ledger_th = if ledger.is_some() {
        "<th>Ledger</th>"
    } else {
        ""
    };
    let _ = write!(
        body,
        "<table id=\"records\"><tr><th>Seq</th><th>At</th><th>Actor</th><th>Step</th><th>Outcome</th>{ledger_th}</tr>"
    );
    for r in a["records"].as_array().cloned().unwrap_or_default() {
        let ledger_td = match (&ledger, r["seq"].as_u64().and_then(|q| on_ledger.get(&q))) {
            (None, _) => String::new(),
            (Some(_), Some((status, message))) => format!(
                "<td class=\"{} ledger-{}\" title=\"{}\">{}</td>",
                if status == "confirmed" { "ok" } else { "bad" },
                esc(status),
                esc(message),
                esc(status)
            ),
            (Some(_), None) => "<td>-</td>".to_string(),
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{ledger_td}</tr>",
            esc(&text(&r["seq"])),
            esc(&text(&r["at"])),
            esc(&text(&r["actor"])),
            esc(&text(&r["step"])),
            esc(&text(&r["outcome"])),
        );
    }
    body.push_str("</table>");
    page(&format!("Audit log of {fleet}"), Some(&s), &body)
}

/// `GET /portal/ledger`: the ledger explorer (status, validators' signing liveness, the
/// latest blocks, advancing live through `live.js`).
pub(crate) async fn ledger(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (_, s) = signed_in!(state, headers);
    let urls = state.ledger.ledger.clone();
    if urls.is_empty() {
        return page(
            "Ledger",
            Some(&s),
            "<p>No ledger is configured: start <code>phoenix serve --ledger URL[,URL...]</code>.</p>",
        );
    }
    let views = super::ledger::with_client(&urls, |c| {
        Ok((
            super::ledger::status(c)?,
            super::ledger::validators(c)?,
            super::ledger::blocks(c, 10)?,
        ))
    })
    .await;
    let (status, validators, blocks) = match views {
        Ok(v) => v,
        Err(e) => return error_page(e, Some(&s)),
    };
    let st = &status["status"];
    let mut body = format!(
        "<p>Chain <code>{}</code> at {} &middot; finalized height <strong id=\"finalized-height\">{}</strong> \
         &middot; view {} &middot; epoch {} &middot; {} peers &middot; mempool {}</p>",
        esc(&text(&st["chain_id"])),
        esc(&text(&status["url"])),
        esc(&text(&st["finalized_height"])),
        esc(&text(&st["view"])),
        esc(&text(&st["epoch"])),
        esc(&text(&st["peers"])),
        esc(&text(&st["mempool"])),
    );
    let quorum = validators["quorum_signing"] == true;
    let _ = write!(
        body,
        "<h2>Validators</h2><p class=\"{}\" id=\"quorum\">{} of {} signing (quorum {}), as the node at {} saw their votes</p>\
         <table id=\"validators\"><tr><th>Key</th><th>Address</th><th>Notarize</th><th>Finalize</th><th>Nullify</th><th>Last view</th><th>Signing</th></tr>",
        if quorum { "ok" } else { "bad" },
        esc(&text(&validators["signing"])),
        validators["validators"].as_array().map_or(0, Vec::len),
        esc(&text(&validators["quorum"])),
        esc(&text(&validators["url"])),
    );
    for v in validators["validators"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let key = text(&v["key"]);
        let signing = v["signing"] == true;
        let _ = write!(
            body,
            "<tr><td><code title=\"{}\">{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            esc(&key),
            esc(key.get(..16).unwrap_or(&key)),
            esc(&text(&v["address"])),
            esc(&text(&v["notarizes"])),
            esc(&text(&v["finalizes"])),
            esc(&text(&v["nullifies"])),
            esc(&text(&v["last_view"])),
            if signing { "ok" } else { "bad" },
            if signing { "signing" } else { "not signing" },
        );
    }
    body.push_str(
        "</table><section id=\"ledger-live\" data-events=\"/portal/ledger/events\"><h2>Blocks, live</h2>\
         <table id=\"blocks\"><thead><tr><th>Height</th><th>Hash</th><th>Proposer</th><th>View</th><th>Transactions</th><th>Finalized by</th></tr></thead><tbody>",
    );
    for b in blocks["blocks"].as_array().cloned().unwrap_or_default() {
        body.push_str(&block_row(&b));
    }
    body.push_str(
        "</tbody></table></section><script src=\"/portal/static/live.js\" defer></script>",
    );
    page("Ledger", Some(&s), &body)
}

/// One row of the blocks table (`live.js` builds the same for blocks that arrive later).
fn block_row(b: &Value) -> String {
    let hash = text(&b["hash"]);
    let proposer = text(&b["proposer"]);
    format!(
        "<tr data-height=\"{}\"><td>{}</td><td><code title=\"{}\">{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
        esc(&text(&b["height"])),
        esc(&text(&b["height"])),
        esc(&hash),
        esc(hash.get(..16).unwrap_or(&hash)),
        esc(proposer.get(..16).unwrap_or(&proposer)),
        esc(&text(&b["view"])),
        esc(&text(&b["tx_count"])),
        esc(&text(&b["finalized_by"])),
    )
}

/// `GET /portal/ledger/events`: finalized blocks as they come, for a signed-in browser.
pub(crate) async fn ledger_events(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(refused) = unless_signed_in(&state, &headers).await {
        return refused;
    }
    super::ledger::block_events(state).await
}

/// `GET /portal/fleets/{fleet}/events`: the fleet's live events for a signed-in browser (the
/// same stream as `/api/v1/fleets/{fleet}/events`; `EventSource` cannot send a bearer token,
/// so the session cookie stands in for it).
pub(crate) async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(fleet): Path<String>,
    query: Result<Query<api::EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Some(refused) = unless_signed_in(&state, &headers).await {
        return refused;
    }
    let Ok(Query(q)) = query else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "the only query parameter is ?after=SEQ",
        )
        .into_response();
    };
    match super::events::after_of(&headers, q.after()) {
        Ok(after) => super::events::stream(state, fleet, after).await,
        Err(e) => e.into_response(),
    }
}

pub(crate) async fn rollback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(fleet): Path<String>,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let (_, s) = signed_in!(state, headers);
    if !csrf_ok(&s, &form) {
        return csrf_refused(&s);
    }
    if s.role < Role::Deployer {
        return error_page(
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "{} has the viewer role; a rollback needs a deployer token",
                    s.name
                ),
            ),
            Some(&s),
        );
    }
    let to = form.as_ref().ok().and_then(|f| f.0.to.clone());
    let to = match super::api::revision_arg(to.as_deref()) {
        Ok(to) => to,
        Err(e) => return error_page(e, Some(&s)),
    };
    // Through the same engine as `phoenix rollback`, with the token's name as the actor.
    match super::run_write(
        &state,
        fleet.clone(),
        super::Write::Rollback { to, force: false },
        s.name.clone(),
    )
    .await
    {
        Ok(_) => Redirect::to(&format!("/portal/fleets/{}", percent_path(&fleet))).into_response(),
        Err(e) => error_page(e, Some(&s)),
    }
}

/// `s` as one URL path segment (or a query parameter's value).
fn percent_path(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
