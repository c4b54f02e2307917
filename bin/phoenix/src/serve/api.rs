//! The routes: health, metrics, and the JSON API under `/api/v1` (every route there needs a
//! token; see `auth`). Errors are `{"error": "..."}` with a status code, and a refused or bad
//! request changes nothing.

use super::auth::{self, Caller, Role};
use super::{AppState, blocking, metrics};
use axum::extract::rejection::{QueryRejection, StringRejection};
use axum::extract::{DefaultBodyLimit, Extension, MatchedPath, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use phoenix_engine::{RevisionDoc, fingerprint};
use phoenix_state::{ObservedState, Revision, RevisionNumber, StateError, StateStore};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The largest request body read (a posted spec); larger ones get 413.
const MAX_BODY: usize = 1024 * 1024;

/// An error answer: a status and a message, sent as `{"error": message}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The status and the message.
    pub(crate) fn parts(&self) -> (StatusCode, &str) {
        (self.status, &self.message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        let status = if e.is_retryable() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        // The whole chain: the driver's message says what the database said.
        ApiError::new(status, format!("{:#}", anyhow::Error::new(e)))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// A ledger node as a scrape target: scheme, `host:port`, metrics path.
type LedgerKey = (&'static str, String, String);

/// One target group of Prometheus HTTP service discovery.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct TargetGroup {
    /// `host:port` of each target (one here).
    targets: Vec<String>,
    /// Its labels: `fleet`, `service`, `instance`, `site`, `unit`, `phoenix_job`,
    /// `__metrics_path__` (and `__scheme__` for ledger nodes).
    labels: BTreeMap<String, String>,
}

/// The body of every error answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// What is wrong, for people.
    error: String,
}

/// The OpenAPI document, generated from the routes' annotations below.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Phoenix", description = "The API of `phoenix serve` (docs/serve.md)."),
    paths(
        live, ready, metrics_text, whoami, fleets, fleet, instances, instance, instance_logs, revisions, revision, spec,
        fleet_plan, diff, audit, events, rollback, apply, destroy, validate, plan_posted, monitoring_targets,
        super::ledger::ledger_status, super::ledger::ledger_blocks, super::ledger::ledger_block,
        super::ledger::ledger_tx, super::ledger::ledger_validators, super::ledger::ledger_state,
        super::ledger::ledger_proof, super::ledger::ledger_events
    ),
    components(schemas(ErrorBody, TargetGroup, super::logs::LogTail, super::logs::LogLine)),
    modifiers(&BearerAuth)
)]
pub(crate) struct ApiDoc;

/// Declares the `bearer` security scheme the routes name.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

async fn openapi_json() -> Response {
    use utoipa::OpenApi as _;
    match ApiDoc::openapi().to_json() {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => {
            ApiError::internal(format!("the OpenAPI document does not encode: {e}")).into_response()
        }
    }
}

/// Every route of the server.
pub(crate) fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/fleets", get(fleets))
        .route("/fleets/{fleet}", get(fleet))
        .route("/fleets/{fleet}/instances", get(instances))
        .route("/fleets/{fleet}/instances/{instance}", get(instance))
        .route(
            "/fleets/{fleet}/instances/{instance}/logs",
            get(instance_logs),
        )
        .route("/fleets/{fleet}/revisions", get(revisions))
        .route("/fleets/{fleet}/revisions/{revision}", get(revision))
        .route("/fleets/{fleet}/spec", get(spec))
        .route("/fleets/{fleet}/plan", get(fleet_plan))
        .route("/fleets/{fleet}/diff", get(diff))
        .route("/fleets/{fleet}/audit", get(audit))
        .route("/fleets/{fleet}/events", get(events))
        .route("/fleets/{fleet}/rollback", post(rollback))
        .route("/fleets/{fleet}/apply", post(apply))
        .route("/fleets/{fleet}/destroy", post(destroy))
        .route("/validate", post(validate))
        .route("/plan", post(plan_posted))
        .route("/monitoring/targets", get(monitoring_targets))
        .route("/whoami", get(whoami))
        .route("/ledger", get(super::ledger::ledger_status))
        .route("/ledger/blocks", get(super::ledger::ledger_blocks))
        .route("/ledger/blocks/{height}", get(super::ledger::ledger_block))
        .route("/ledger/tx/{hash}", get(super::ledger::ledger_tx))
        .route("/ledger/validators", get(super::ledger::ledger_validators))
        .route(
            "/ledger/state/{module}/{*key}",
            get(super::ledger::ledger_state),
        )
        .route(
            "/ledger/proof/audit/{fleet}/{seq}",
            get(super::ledger::ledger_proof),
        )
        .route("/ledger/events", get(super::ledger::ledger_events))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi_json))
        .route("/", get(super::portal::root))
        .route("/portal", get(super::portal::overview))
        .route(
            "/portal/sign-in",
            get(super::portal::sign_in_form).post(super::portal::sign_in),
        )
        .route("/portal/sign-out", post(super::portal::sign_out))
        .route("/portal/fleets/{fleet}", get(super::portal::fleet))
        .route("/portal/fleets/{fleet}/diff", get(super::portal::diff))
        .route("/portal/fleets/{fleet}/plan", get(super::portal::plan))
        .route(
            "/portal/fleets/{fleet}/instances/{instance}",
            get(super::portal::instance),
        )
        .route(
            "/portal/fleets/{fleet}/instances/{instance}/logs",
            get(super::portal::instance_logs),
        )
        .route("/portal/fleets/{fleet}/audit", get(super::portal::audit))
        .route("/portal/fleets/{fleet}/events", get(super::portal::events))
        .route("/portal/static/live.js", get(super::portal::live_js))
        .route("/portal/ledger", get(super::portal::ledger))
        .route("/portal/ledger/events", get(super::portal::ledger_events))
        .route(
            "/portal/fleets/{fleet}/rollback",
            post(super::portal::rollback),
        )
        .nest("/api/v1", api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// Counts every answer by route pattern and status.
async fn count(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(metrics::UNMATCHED.to_string(), |m| m.as_str().to_string());
    let response = next.run(request).await;
    state.metrics.request(&route, response.status().as_u16());
    response
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route (the API is under /api/v1; see docs/serve.md)")
}

#[utoipa::path(get, path = "/health/live", tag = "health", summary = "Liveness", responses((status = 200, description = "The process runs", body = super::schemas::Live)))]
async fn live() -> Json<Value> {
    Json(json!({ "status": "live" }))
}

/// Ready when the state store answers.
#[utoipa::path(get, path = "/health/ready", tag = "health", summary = "Readiness: the state store answers", responses((status = 200, description = "Ready", body = super::schemas::Ready), (status = 503, description = "The state store does not answer", body = super::schemas::Ready)))]
async fn ready(State(state): State<AppState>) -> Response {
    match blocking(&state, |store| Ok(store.list_fleets()?.len())).await {
        Ok(fleets) => Json(json!({ "status": "ready", "fleets": fleets })).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "error": e.message })),
        )
            .into_response(),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "health", summary = "Prometheus metrics of this server", responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")))]
async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(state.limiter.tracked()),
    )
        .into_response()
}

#[utoipa::path(get, path = "/api/v1/whoami", tag = "read", summary = "The token's name and role", security(("bearer" = [])), responses((status = 200, description = "The token's name and role", body = super::schemas::WhoAmI), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
async fn whoami(Extension(caller): Extension<Caller>) -> Json<Value> {
    Json(json!({ "name": caller.name, "role": caller.role.as_str() }))
}

// ---------------------------------------------------------------------------------------------
// Fleets

/// Refuses names no fleet can have before asking the store.
pub(super) fn check_fleet_name(name: &str) -> Result<(), ApiError> {
    let ok = name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "`{name}` is not a fleet name ([a-z0-9][a-z0-9-_]*)"
        )))
    }
}

/// The fleet's revisions, or 404 when the store does not know the fleet.
pub(super) fn known_fleet(store: &dyn StateStore, fleet: &str) -> Result<Vec<Revision>, ApiError> {
    fleet_exists(store, fleet)?;
    Ok(store.list_revisions(fleet)?)
}

/// Seconds from `then_ms` to `now_ms` (Unix milliseconds), never negative.
pub(super) fn age_seconds(then_ms: i64, now_ms: i64) -> f64 {
    (now_ms.saturating_sub(then_ms).max(0) as f64) / 1000.0
}

/// A fleet's instance records as the API shows them ([`instance_views`]).
pub(super) struct InstanceViews {
    /// Each instance, in the store's order (by unit), without its `age_seconds`: an answer
    /// adds it as of when it is made (`View::instance_now`), from `observed_ms`.
    pub(super) instances: Vec<Value>,
    /// When each was recorded (Unix milliseconds), so that an answer states its age as of then.
    pub(super) observed_ms: Vec<i64>,
    /// Per site: instances desired running and how many of them are healthy; its
    /// `oldest_observation_age_seconds` is null until an answer fills it in from
    /// `site_oldest_ms` (`View::sites_now`).
    pub(super) sites: Value,
    /// Per site, its oldest observation (Unix milliseconds).
    pub(super) site_oldest_ms: Vec<(String, i64)>,
}

/// Instance records of a fleet as the API shows them, and a summary per site. Health is the
/// engine's last observation as recorded in the store (`observed: running` means started and
/// past its health gate), with when it was recorded; how long ago is for the answer to say.
pub(super) fn instance_views(
    store: &dyn StateStore,
    fleet: &str,
) -> Result<InstanceViews, ApiError> {
    let records = store.list_instances(fleet)?;
    let mut sites: BTreeMap<String, (u64, u64, Option<i64>)> = BTreeMap::new();
    let mut out = Vec::with_capacity(records.len());
    let mut observed_ms = Vec::with_capacity(records.len());
    for r in &records {
        let s = &r.state;
        let at = r.updated_at.as_millisecond();
        let desired_running = s.desired == phoenix_state::DesiredState::Running;
        let healthy = s.observed == ObservedState::Running;
        if desired_running {
            let e = sites.entry(s.site.clone()).or_insert((0, 0, None));
            e.0 += 1;
            e.1 += u64::from(healthy);
            e.2 = Some(e.2.map_or(at, |t| t.min(at)));
        }
        observed_ms.push(at);
        out.push(json!({
            "unit": s.unit,
            "service": s.service,
            "instance": s.instance,
            "revision": s.revision.0,
            "site": s.site,
            "host": s.host,
            "endpoint": s.endpoint,
            "desired": s.desired.as_str(),
            "observed": s.observed.as_str(),
            "healthy": healthy,
            "ports": s.ports,
            "observed_at": r.updated_at.to_string(),
        }));
    }
    let site_oldest_ms = sites
        .iter()
        .filter_map(|(site, (_, _, oldest))| oldest.map(|t| (site.clone(), t)))
        .collect();
    let sites: serde_json::Map<String, Value> = sites
        .into_iter()
        .map(|(site, (instances, healthy, _))| {
            (
                site,
                json!({
                    "instances": instances,
                    "healthy": healthy,
                    "oldest_observation_age_seconds": Value::Null,
                }),
            )
        })
        .collect();
    Ok(InstanceViews {
        instances: out,
        observed_ms,
        sites: Value::Object(sites),
        site_oldest_ms,
    })
}

/// A revision as the API lists it, its document parsed now (see [`revision_summary_of`]).
pub(super) fn revision_summary(r: &Revision) -> Value {
    revision_summary_of(r, &super::views::ParsedRevision::of(r))
}

/// A revision as the API lists it, from its document as parsed once (`views::Revisions`).
pub(super) fn revision_summary_of(r: &Revision, doc: &super::views::ParsedRevision) -> Value {
    let (reason, rolled_back_to) = match &r.outcome {
        phoenix_state::RevisionOutcome::Failed { reason } => (Some(reason.clone()), None),
        phoenix_state::RevisionOutcome::RolledBack { to } => (None, Some(to.0)),
        _ => (None, None),
    };
    json!({
        "number": r.number.0,
        "outcome": r.outcome.name(),
        "reason": reason,
        "rolled_back_to": rolled_back_to,
        "kind": doc.kind,
        "rollback_of": doc.rollback_of,
        "instances": doc.instances,
        "actor": r.actor,
        "plan_hash": r.plan_hash,
        "created_at": r.created_at.to_string(),
        "finished_at": r.finished_at.map(|t| t.to_string()),
    })
}

/// The fleet's summary (revisions, health per site) from its instance views, without the lock.
pub(super) fn summary_of(
    fleet: &str,
    revisions: &[Revision],
    parsed: &super::views::Revisions,
    instances: &[Value],
    sites: Value,
) -> Value {
    let applied = revisions
        .iter()
        .rev()
        .find(|r| r.outcome == phoenix_state::RevisionOutcome::Applied);
    let running: Vec<&Value> = instances
        .iter()
        .filter(|i| i["desired"] == "running")
        .collect();
    let healthy = running.iter().filter(|i| i["healthy"] == true).count();
    json!({
        "name": fleet,
        "latest_revision": revisions.last().map(|r| revision_summary_of(r, &parsed.get(fleet, r))),
        "applied_revision": applied.map(|r| r.number.0),
        "instances": running.len(),
        "healthy": healthy,
        "all_healthy": healthy == running.len(),
        "sites": sites,
    })
}

/// The fleet's summary as the API answers it: its view's summary, the deploy lock read now,
/// and how old the view is.
pub(super) fn fleet_summary_of(
    store: &dyn StateStore,
    fleet: &str,
    view: &super::views::View,
) -> Result<Value, ApiError> {
    let mut summary = view.summary_now();
    summary["lock"] = json!(store.lock_holder(fleet)?.map(|h| json!({
        "who": h.owner.who,
        "operation": h.owner.operation,
        "expires_at": h.expires_at.to_string(),
    })));
    summary["view_age_seconds"] = json!(view.age_seconds());
    Ok(summary)
}

/// 404 unless the store knows `fleet` (one row read: its generation, which every known fleet
/// has).
pub(super) fn fleet_exists(store: &dyn StateStore, fleet: &str) -> Result<(), ApiError> {
    check_fleet_name(fleet)?;
    if store.fleet_generation(fleet)?.is_some() {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "no fleet {fleet} in the state store"
        )))
    }
}

/// The fleet's sites grouped by tier and region (as its current spec declares them, in tier
/// order core, regional, edge), each site with its instances desired running and healthy from
/// `summary["sites"]`. Sites without instances are listed too; a spec that no longer parses
/// gives every recorded site under an unknown tier.
pub(super) fn sites_by_tier_and_region(
    fleet: &str,
    revisions: &[Revision],
    parsed: &super::views::Revisions,
    summary: &Value,
) -> Vec<Value> {
    let declared: Vec<(String, String, String)> = current_revision(revisions, fleet)
        .ok()
        .and_then(|r| parsed.get(fleet, r).sites().map(<[_]>::to_vec))
        .unwrap_or_else(|| {
            summary["sites"]
                .as_object()
                .map(|m| {
                    m.keys()
                        .map(|k| ("unknown".into(), "-".into(), k.clone()))
                        .collect()
                })
                .unwrap_or_default()
        });
    let order = |t: &str| match t {
        "core" => 0,
        "regional" => 1,
        "edge" => 2,
        _ => 3,
    };
    let mut groups: BTreeMap<(u8, String, String), Vec<Value>> = BTreeMap::new();
    for (tier, region, site) in declared {
        let health = &summary["sites"][&site];
        groups
            .entry((order(&tier), tier, region))
            .or_default()
            .push(json!({
                "site": site,
                "instances": health["instances"].as_u64().unwrap_or(0),
                "healthy": health["healthy"].as_u64().unwrap_or(0),
            }));
    }
    groups
        .into_iter()
        .map(|((_, tier, region), sites)| {
            let instances: u64 = sites.iter().filter_map(|s| s["instances"].as_u64()).sum();
            let healthy: u64 = sites.iter().filter_map(|s| s["healthy"].as_u64()).sum();
            json!({"tier": tier, "region": region, "instances": instances, "healthy": healthy, "sites": sites})
        })
        .collect()
}

#[utoipa::path(get, path = "/api/v1/fleets", tag = "read", summary = "Every fleet with its health at a glance", security(("bearer" = [])), responses((status = 200, description = "Every fleet with its health at a glance", body = super::schemas::Fleets), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
async fn fleets(State(state): State<AppState>) -> ApiResult {
    with_views(&state, |store, views| {
        let mut out = Vec::new();
        for f in store.list_fleets()? {
            let view = views.get(store, &f)?;
            out.push(fleet_summary_of(&**store, &f, &view)?);
        }
        Ok(Json(json!({ "fleets": out })))
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/fleets/{fleet}", tag = "read", summary = "One fleet with its health per site", params(("fleet" = String, Path, description = "The fleet's name", example = "demo")), security(("bearer" = [])), responses((status = 200, description = "One fleet with its health per site", body = super::schemas::FleetSummary), (status = 400, description = "Not a fleet name", body = ErrorBody), (status = 404, description = "No such fleet", body = ErrorBody), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
async fn fleet(State(state): State<AppState>, Path(fleet): Path<String>) -> ApiResult {
    with_views(&state, move |store, views| {
        fleet_exists(&**store, &fleet)?;
        let view = views.get(store, &fleet)?;
        Ok(Json(fleet_summary_of(&**store, &fleet, &view)?))
    })
    .await
}

/// The most instances one page of `/instances` holds.
const MAX_PAGE: usize = 10_000;

/// A page of a fleet's instances: `limit` of them after the instance `after` (in the store's
/// order, by unit).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct PageQuery {
    /// How many instances (default and at most 10000).
    limit: Option<usize>,
    /// The instance the page starts after (the last one of the page before).
    after: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/fleets/{fleet}/instances", tag = "read", summary = "Instance records with the last observation and its age, per site, a page at a time", params(("fleet" = String, Path, description = "The fleet's name", example = "demo"), PageQuery), security(("bearer" = [])), responses((status = 200, description = "Instance records with the last observation and its age, per site", body = super::schemas::InstancePage), (status = 400, description = "Not a fleet name, or a bad page", body = ErrorBody), (status = 404, description = "No such fleet", body = ErrorBody), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
async fn instances(
    State(state): State<AppState>,
    Path(fleet): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult {
    let Query(page) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "{e}: give ?limit=N (1 to {MAX_PAGE}) and ?after=INSTANCE (e.g. ?limit=100&after=web-99)"
        ))
    })?;
    with_views(&state, move |store, views| {
        fleet_exists(&**store, &fleet)?;
        let view = views.get(store, &fleet)?;
        let limit = page.limit.unwrap_or(MAX_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Err(ApiError::bad_request(format!(
                "`limit` must be 1 to {MAX_PAGE}"
            )));
        }
        let start = match &page.after {
            None => 0,
            Some(after) => match view.by_instance.get(after) {
                Some(i) => i + 1,
                None => {
                    return Err(ApiError::bad_request(format!(
                        "`after`: no instance {after} in fleet {fleet}"
                    )));
                }
            },
        };
        let items = &view.instances[start.min(view.instances.len())..];
        let items = &items[..limit.min(items.len())];
        let next = (start + items.len() < view.instances.len())
            .then(|| items.last().and_then(|i| i["instance"].as_str()))
            .flatten();
        Ok(Json(json!({
            "fleet": fleet,
            "source": "the state store's last observation (run `phoenix status` for a live probe)",
            "view_age_seconds": view.age_seconds(),
            "sites": view.sites_now(),
            "total": view.instances.len(),
            "instances": (start..start + items.len()).map(|i| view.instance_now(i)).collect::<Vec<_>>(),
            "next_after": next,
        })))
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/fleets/{fleet}/instances/{instance}", tag = "read", summary = "One instance with its last observation and its age", params(("fleet" = String, Path, description = "The fleet's name", example = "demo"), ("instance" = String, Path, description = "The instance, e.g. web-0", example = "web-0")), security(("bearer" = [])), responses((status = 200, description = "One instance with its last observation and its age", body = super::schemas::OneInstance), (status = 400, description = "Not a fleet name", body = ErrorBody), (status = 404, description = "No such fleet or instance", body = ErrorBody), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
async fn instance(
    State(state): State<AppState>,
    Path((fleet, instance)): Path<(String, String)>,
) -> ApiResult {
    with_views(&state, move |store, views| {
        fleet_exists(&**store, &fleet)?;
        let view = views.get(store, &fleet)?;
        match view.by_instance.get(&instance) {
            Some(&i) => {
                let mut v = view.instance_now(i);
                v["fleet"] = json!(fleet);
                v["view_age_seconds"] = json!(view.age_seconds());
                Ok(Json(v))
            }
            None => Err(ApiError::not_found(format!(
                "no instance {instance} in fleet {fleet}"
            ))),
        }
    })
    .await
}

/// `?tail=`, `?follow=`, `?after=` of an instance's logs.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct LogsQuery {
    /// How many of the last lines (0 to 5000, default 200).
    tail: Option<usize>,
    /// Keep the answer open and send each new line as a server-sent event.
    follow: Option<bool>,
    /// With `follow`: start after this cursor (a tail's `cursor`, an event's id) instead of
    /// after the last `tail` lines; the `Last-Event-ID` header wins.
    after: Option<String>,
}

/// An instance's logs: the tail, or followed (`follow=true`), after its instance was checked.
pub(super) async fn logs_answer(
    state: AppState,
    fleet: String,
    instance: String,
    headers: &axum::http::HeaderMap,
    q: LogsQuery,
) -> Response {
    use super::logs;
    let n = match logs::tail_arg(q.tail) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(q.after);
    let after = match after.as_deref().map(logs::Cursor::parse).transpose() {
        Ok(a) => a,
        Err(why) => {
            return ApiError::bad_request(format!("`after`: {why} (give a tail's `cursor`)"))
                .into_response();
        }
    };
    if let Err(e) = logs::known_instance(&state, &fleet, &instance).await {
        return e.into_response();
    }
    if q.follow.unwrap_or(false) {
        logs::follow(state, fleet, instance, n, after).await
    } else {
        match logs::tail_of(&state, &fleet, &instance, n).await {
            Ok(t) => Json(t).into_response(),
            Err(e) => e.into_response(),
        }
    }
}

/// The last lines an instance's units wrote (as `phoenix logs INSTANCE` finds them: through
/// the providers of the fleet's latest revision), or with `follow=true` the lines it writes
/// from then on as server-sent events (`event: line`, id the cursor after it; `event: end`
/// when the instance has no unit desired running any more or after an hour).
#[utoipa::path(get, path = "/api/v1/fleets/{fleet}/instances/{instance}/logs", tag = "read", summary = "An instance's logs: the last lines, or followed live (server-sent events)", params(("fleet" = String, Path, description = "The fleet's name", example = "demo"), ("instance" = String, Path, description = "The instance, e.g. web-0", example = "web-0"), LogsQuery, ("Last-Event-ID" = Option<String>, Header, description = "With follow: the last event id received, when reconnecting")), security(("bearer" = [])), responses((status = 200, description = "The last lines (JSON), or with follow=true a text/event-stream", content((super::logs::LogTail = "application/json"), (String = "text/event-stream"))), (status = 400, description = "Not a fleet name, a bad tail or cursor", body = ErrorBody), (status = 404, description = "No such fleet or instance", body = ErrorBody), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody), (status = 503, description = "Too many streams open", body = ErrorBody)))]
async fn instance_logs(
    State(state): State<AppState>,
    Path((fleet, instance)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Response {
    match query {
        Ok(Query(q)) => logs_answer(state, fleet, instance, &headers, q).await,
        Err(e) => ApiError::bad_request(format!(
            "{}: give ?tail=N (0 to {}), ?follow=true, ?after=CURSOR",
            e.body_text(),
            super::logs::MAX_TAIL
        ))
        .into_response(),
    }
}

/// Runs `f` on the blocking pool with the store and the fleets' views.
pub(super) async fn with_views<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Arc<dyn StateStore>, &super::views::Views) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let (store, views) = (state.store.clone(), state.views.clone());
    tokio::task::spawn_blocking(move || f(&store, &views))
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format!("a store call failed: {e}"))))
}

#[utoipa::path(get, path = "/api/v1/fleets/{fleet}/revisions", tag = "read", summary = "Every revision of a fleet", params(("fleet" = String, Path, description = "The fleet's name", example = "demo")), security(("bearer" = [])), responses((status = 200, description = "Every revision of a fleet", body = super::schemas::Revisions), (status = 400, description = "Not a fleet name", body = ErrorBody), (status = 404, description = "No such fleet", body = ErrorBody), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
async fn revisions(State(state): State<AppState>, Path(fleet): Path<String>) -> ApiResult {
    with_views(&state, move |store, views| {
        let revisions = known_fleet(&**store, &fleet)?;
        let list: Vec<Value> = revisions
            .iter()
            .map(|r| revision_summary_of(r, &views.revisions().get(&fleet, r)))
            .collect();
        Ok(Json(json!({ "fleet": fleet, "revisions": list })))
    })
    .await
}

/// `3` or `r3`.
fn parse_revision(s: &str) -> Result<RevisionNumber, ApiError> {
    s.trim_start_matches(['r', 'R'])
        .parse()
        .map(RevisionNumber)
        .map_err(|_| ApiError::bad_request(format!("`{s}` is not a revision number (3 or r3)")))
}

fn find_revision<'a>(
    revisions: &'a [Revision],
    fleet: &str,
    number: RevisionNumber,
) -> Result<&'a Revision, ApiError> {
    revisions
        .iter()
        .find(|r| r.number == number)
        .ok_or_else(|| ApiError::not_found(format!("fleet {fleet} has no revision {number}")))
}

fn document(r: &Revision) -> Result<RevisionDoc, ApiError> {
    RevisionDoc::parse(&r.spec_json).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "revision {} holds no spec document this phoenix can read",
                r.number
            ),
        )
    })
}

fn spec_view(r: &Revision, doc: &RevisionDoc) -> Value {
    json!({
        "revision": r.number.0,
        "environment": doc.environment,
        "files": doc.sources.iter().map(|(name, text)| json!({"name": name, "text": text})).collect::<Vec<_>>(),
    })
}

#[utoipa::path(get, path = "/api/v1/fleets/{fleet}/revisions/{revision}", tag = "read", summary = "One revision with its spec files", params(("fleet" = String, Path, description = "The fleet's name", example = "demo"), ("revision" = String, Path, description = "3 or r3", example = "1")), security(("bearer" = [])), responses((status = 200, description = "One revision with its spec files", body = super::schemas::RevisionView), (status = 400, description = "Not a fleet name", body = ErrorBody), (status = 404, description = "No such fleet", body = ErrorBody), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
async fn revision(
    State(state): State<AppState>,
    Path((fleet, number)): Path<(String, String)>,
) -> ApiResult {
    blocking(&state, move |store| {
        let revisions = known_fleet(store, &fleet)?;
        let number = parse_revision(&number)?;
        let r = find_revision(&revisions, &fleet, number)?;
        let mut v = revision_summary(r);
        if let (Some(obj), Some(doc)) = (v.as_object_mut(), RevisionDoc::parse(&r.spec_json)) {
            obj.insert("spec".into(), spec_view(r, &doc));
            obj.insert(
                "targets".into(),
                json!({"target": doc.targets, "exclude": doc.excludes}),
            );
        }
        Ok(Json(v))
    })
    .await
}

/// The latest applied revision (what should run), else the latest one.
fn current_revision<'a>(revisions: &'a [Revision], fleet: &str) -> Result<&'a Revision, ApiError> {
    revisions
        .iter()
        .rev()
        .find(|r| r.outcome == phoenix_state::RevisionOutcome::Applied)
        .or(revisions.last())
        .ok_or_else(|| ApiError::not_found(format!("fleet {fleet} has no revision yet")))
}

#[utoipa::path(get, path = "/api/v1/fleets/{fleet}/spec", tag = "read", summary = "The spec files of the applied revision", params(("fleet" = String, Path, description = "The fleet's name", example = "demo")), security(("bearer" = [])), responses((status = 200, description = "The spec files of the applied revision", body = super::schemas::SpecView), (status = 400, description = "Not a fleet name", body = ErrorBody), (status = 404, description = "No such fleet", body = ErrorBody), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
async fn spec(State(state): State<AppState>, Path(fleet): Path<String>) -> ApiResult {
    blocking(&state, move |store| {
        let revisions = known_fleet(store, &fleet)?;
        let r = current_revision(&revisions, &fleet)?;
        Ok(Json(spec_view(r, &document(r)?)))
    })
    .await
}

/// The fleet of a stored revision, parsed again from its sources.
fn fleet_of(r: &Revision) -> Result<phoenix_spec::Fleet, ApiError> {
    let doc = document(r)?;
    phoenix_spec::parse_sources(&doc.sources, doc.environment.as_deref()).map_err(|d| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the spec of revision {} no longer parses:\n{}",
                r.number,
                d.render()
            ),
        )
    })
}

fn plan_json(fleet: &phoenix_spec::Fleet) -> Result<Value, ApiError> {
    let plan = phoenix_plan::plan(fleet);
    serde_json::from_str(&phoenix_plan::to_json_string(&plan))
        .map_err(|e| ApiError::internal(format!("the plan is not JSON: {e}")))
}

#[utoipa::path(get, path = "/api/v1/fleets/{fleet}/plan", tag = "read", summary = "The plan of the applied revision's spec", params(("fleet" = String, Path, description = "The fleet's name", example = "demo")), security(("bearer" = [])), responses((status = 200, description = "The plan of the applied revision's spec", body = super::schemas::Plan), (status = 400, description = "Not a fleet name", body = ErrorBody), (status = 404, description = "No such fleet", body = ErrorBody), (status = 422, description = "The stored spec no longer parses", body = ErrorBody), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
async fn fleet_plan(State(state): State<AppState>, Path(fleet): Path<String>) -> ApiResult {
    blocking(&state, move |store| Ok(Json(plan_view(store, &fleet)?))).await
}

/// The plan of the fleet's applied (else latest) revision, with that revision's number.
pub(super) fn plan_view(store: &dyn StateStore, fleet: &str) -> Result<Value, ApiError> {
    let revisions = known_fleet(store, fleet)?;
    let r = current_revision(&revisions, fleet)?;
    let mut v = plan_json(&fleet_of(r)?)?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("revision".into(), r.number.0.into());
    }
    Ok(v)
}

#[derive(Deserialize)]
struct DiffQuery {
    from: String,
    to: String,
}

/// What changed between two revisions: instances added, removed and changed (by the
/// fingerprint of everything that makes a unit run differently), and the spec files that
/// differ, with both texts.
#[utoipa::path(get, path = "/api/v1/fleets/{fleet}/diff", tag = "read", summary = "What changed between two revisions", params(("fleet" = String, Path, description = "The fleet's name", example = "demo"), ("from" = String, Query, description = "Revision (3 or r3)", example = "1"), ("to" = String, Query, description = "Revision (3 or r3)", example = "2")), security(("bearer" = [])), responses((status = 200, description = "What changed between two revisions", body = super::schemas::Diff), (status = 400, description = "Not a fleet name", body = ErrorBody), (status = 404, description = "No such fleet", body = ErrorBody), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
async fn diff(
    State(state): State<AppState>,
    Path(fleet): Path<String>,
    query: Result<Query<DiffQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "{e}: give ?from=REVISION&to=REVISION (e.g. ?from=1&to=2)"
        ))
    })?;
    blocking(&state, move |store| {
        Ok(Json(diff_view(store, &fleet, &q.from, &q.to)?))
    })
    .await
}

/// What changed between revisions `from` and `to` of a fleet.
pub(super) fn diff_view(
    store: &dyn StateStore,
    fleet: &str,
    from: &str,
    to: &str,
) -> Result<Value, ApiError> {
    let revisions = known_fleet(store, fleet)?;
    let (from, to) = (parse_revision(from)?, parse_revision(to)?);
    let (a, b) = (
        document(find_revision(&revisions, fleet, from)?)?,
        document(find_revision(&revisions, fleet, to)?)?,
    );
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut changed = Vec::new();
    let mut unchanged = 0u64;
    for (instance, spec) in &b.units {
        match a.units.get(instance) {
            None => added
                .push(json!({"instance": instance, "service": spec.service, "site": spec.site})),
            Some(old) if fingerprint(old) != fingerprint(spec) => changed.push(json!({
                "instance": instance, "service": spec.service, "site": spec.site,
                "from_site": old.site,
            })),
            Some(_) => unchanged += 1,
        }
    }
    for (instance, spec) in &a.units {
        if !b.units.contains_key(instance) {
            removed.push(json!({"instance": instance, "service": spec.service, "site": spec.site}));
        }
    }
    let old_files: BTreeMap<&str, &str> = a
        .sources
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let new_files: BTreeMap<&str, &str> = b
        .sources
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let mut files = Vec::new();
    for name in old_files
        .keys()
        .chain(new_files.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (o, n) = (old_files.get(name), new_files.get(name));
        if o != n {
            files.push(json!({"name": name, "from": o, "to": n}));
        }
    }
    Ok(json!({
        "fleet": fleet,
        "from": from.0,
        "to": to.0,
        "instances": {"added": added, "removed": removed, "changed": changed, "unchanged": unchanged},
        "environment": {"from": a.environment, "to": b.environment},
        "files": files,
    }))
}

#[utoipa::path(get, path = "/api/v1/fleets/{fleet}/audit", tag = "read", summary = "The audit chain, its verification, and with --ledger each record's confirmation on the ledger", params(("fleet" = String, Path, description = "The fleet's name", example = "demo")), security(("bearer" = [])), responses((status = 200, description = "The audit chain and its verification", body = super::schemas::Audit), (status = 400, description = "Not a fleet name", body = ErrorBody), (status = 404, description = "No such fleet", body = ErrorBody), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
async fn audit(State(state): State<AppState>, Path(fleet): Path<String>) -> ApiResult {
    let name = fleet.clone();
    let mut view = blocking(&state, move |store| audit_view(store, &name)).await?;
    if let (Some(ledger), Some(obj)) = (
        super::ledger::audit_confirmation(&state, &fleet).await,
        view.as_object_mut(),
    ) {
        obj.insert("ledger".into(), ledger);
    }
    Ok(Json(view))
}

/// The audit chain of a fleet with its verification report.
pub(super) fn audit_view(store: &dyn StateStore, fleet: &str) -> Result<Value, ApiError> {
    check_fleet_name(fleet)?;
    let rows = store.audit_records(fleet)?;
    if rows.is_empty() && store.fleet_generation(fleet)?.is_none() {
        return Err(ApiError::not_found(format!(
            "no fleet {fleet} in the state store"
        )));
    }
    let keys = store.audit_keys(fleet)?;
    let anchor = store
        .audit_anchor(fleet)?
        .map(|a| phoenix_audit::ChainHead {
            seq: a.seq,
            hash: a.head_hash,
        });
    let report = phoenix_audit::verify_chain(fleet, &rows, &keys, anchor.as_ref());
    // Each record as stored; one that does not parse is shown raw (verification names it).
    let records: Vec<Value> = rows
        .iter()
        .map(|r| {
            serde_json::from_str::<Value>(&r.record_json)
                .unwrap_or_else(|_| json!({"seq": r.seq, "unreadable": r.record_json}))
        })
        .collect();
    Ok(json!({
        "fleet": fleet,
        "verified": report.verified(),
        "verification": report,
        "records": records,
    }))
}

#[derive(Deserialize)]
pub(super) struct EventsQuery {
    /// Start after this event id (an audit record's seq); `Last-Event-ID` wins.
    after: Option<String>,
}

impl EventsQuery {
    pub(super) fn after(&self) -> Option<&str> {
        self.after.as_deref()
    }
}

/// Live events of the fleet's operations as server-sent events, tailed from its audit chain
/// (see `serve/events.rs` for why that is the source): each event's id is the record's seq,
/// its type the kind of step (`operation-started`, `unit-started`, `gate-passed`,
/// `gate-failed`, `wave-finished`, `rollback-started`, `instance-restored`,
/// `operation-finished`, ...), its data the record as JSON. Without `?after=` or
/// `Last-Event-ID` the stream starts at the latest operation's start; it never ends by itself.
#[utoipa::path(get, path = "/api/v1/fleets/{fleet}/events", tag = "read", summary = "Live events of the fleet's operations (server-sent events)", params(("fleet" = String, Path, description = "The fleet's name", example = "demo"), ("after" = Option<String>, Query, description = "Start after this event id (an audit record's seq); the Last-Event-ID header wins"), ("Last-Event-ID" = Option<String>, Header, description = "The last event id received, when reconnecting")), security(("bearer" = [])), responses((status = 200, description = "An endless text/event-stream", content_type = "text/event-stream", body = String), (status = 400, description = "Not a fleet name, or a bad event id", body = ErrorBody), (status = 404, description = "No such fleet", body = ErrorBody), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody), (status = 503, description = "Too many streams open, or the store does not answer", body = ErrorBody)))]
async fn events(
    State(state): State<AppState>,
    Path(fleet): Path<String>,
    headers: axum::http::HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return ApiError::bad_request("the only query parameter is ?after=SEQ").into_response();
    };
    match super::events::after_of(&headers, q.after()) {
        Ok(after) => super::events::stream(state, fleet, after).await,
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct RollbackQuery {
    /// The revision to return to (`3` or `r3`); default: the applied revision before the
    /// current one.
    to: Option<String>,
    /// Roll back to `to` even if it was never applied.
    force: Option<bool>,
}

/// `?to=` as a revision number.
pub(super) fn revision_arg(to: Option<&str>) -> Result<Option<u64>, ApiError> {
    to.map(|t| {
        t.trim_start_matches(['r', 'R'])
            .parse::<u64>()
            .map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("`{t}` is not a revision number (e.g. 3 or r3)"),
                )
            })
    })
    .transpose()
}

/// Rolls the fleet back through the same engine as `phoenix rollback`, with the token's name as
/// the actor of the lock and of every audit record. Needs a deployer token.
#[utoipa::path(post, path = "/api/v1/fleets/{fleet}/rollback", tag = "write", summary = "Roll a fleet back (deployer)", params(("fleet" = String, Path, description = "The fleet's name", example = "demo"), ("to" = Option<String>, Query, description = "The revision to return to (3 or r3); default the applied one before the current"), ("force" = Option<bool>, Query, description = "Allow a target that was never applied")), security(("bearer" = [])), responses((status = 200, description = "How the rollback ended: fleet, revision, outcome, failure, restored", body = super::schemas::WriteOutcome), (status = 400, description = "A bad revision number", body = ErrorBody), (status = 403, description = "The token is not a deployer token", body = ErrorBody), (status = 404, description = "No such fleet", body = ErrorBody), (status = 409, description = "Refused (no earlier revision, a held lock, an unreachable site, ...); nothing changed", body = ErrorBody), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
async fn rollback(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(fleet): Path<String>,
    query: Result<Query<RollbackQuery>, QueryRejection>,
) -> ApiResult {
    caller.require(Role::Deployer)?;
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let to = revision_arg(q.to.as_deref())?;
    let name = fleet.clone();
    blocking(&state, move |store| known_fleet(store, &name).map(|_| ())).await?;
    super::run_write(
        &state,
        fleet,
        super::Write::Rollback {
            to,
            force: q.force.unwrap_or(false),
        },
        caller.name,
    )
    .await
    .map(Json)
}

/// Applies a posted spec to the fleet through the same engine as `phoenix apply` (the whole
/// fleet, rolled back on a failed gate), with the token's name as the actor of the lock and of
/// every audit record. Needs a deployer token; the spec must validate and name this fleet.
#[utoipa::path(post, path = "/api/v1/fleets/{fleet}/apply", tag = "write", summary = "Apply a posted spec to a fleet (deployer)", params(("fleet" = String, Path, description = "The fleet's name (the spec's name:)", example = "demo"), ("env" = Option<String>, Query, description = "Environment overlay")), request_body(content = String, content_type = "application/yaml", description = "One fleet spec file"), security(("bearer" = [])), responses((status = 200, description = "How the apply ended: fleet, operation, revision, outcome, failure, restored", body = super::schemas::WriteOutcome), (status = 400, description = "Empty body, bad query, or a spec of another fleet", body = ErrorBody), (status = 403, description = "The token is not a deployer token", body = ErrorBody), (status = 409, description = "Refused (a held lock, an unreachable site, ...); nothing changed", body = ErrorBody), (status = 413, description = "A body over 1 MiB", body = ErrorBody), (status = 422, description = "Not valid, with diagnostics", body = super::schemas::Validation), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
async fn apply(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(fleet): Path<String>,
    query: Result<Query<EnvQuery>, QueryRejection>,
    body: Result<String, StringRejection>,
) -> Response {
    if let Err(e) = caller.require(Role::Deployer) {
        return e.into_response();
    }
    if let Err(e) = check_fleet_name(&fleet) {
        return e.into_response();
    }
    let (sources, env) = match posted(body, query) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    // Validated here, so that a bad spec is a 422 with its diagnostics, never a change.
    let parsed = match phoenix_spec::parse_sources(&sources, env.as_deref()) {
        Ok(f) => f,
        Err(d) => return invalid(&d),
    };
    if parsed.name != fleet {
        return ApiError::bad_request(format!(
            "the posted spec is fleet `{}`, not `{fleet}`: post it to /api/v1/fleets/{}/apply",
            parsed.name, parsed.name
        ))
        .into_response();
    }
    match super::run_write(
        &state,
        fleet,
        super::Write::Apply { sources, env },
        caller.name,
    )
    .await
    {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Destroys the fleet (every unit stopped and removed, with its latest spec) through the same
/// engine as `phoenix destroy`, with the token's name as the actor. Needs a deployer token.
#[utoipa::path(post, path = "/api/v1/fleets/{fleet}/destroy", tag = "write", summary = "Destroy a fleet (deployer)", params(("fleet" = String, Path, description = "The fleet's name", example = "demo")), security(("bearer" = [])), responses((status = 200, description = "How the destroy ended: fleet, operation, revision, outcome, failure", body = super::schemas::WriteOutcome), (status = 400, description = "Not a fleet name", body = ErrorBody), (status = 403, description = "The token is not a deployer token", body = ErrorBody), (status = 404, description = "No such fleet", body = ErrorBody), (status = 409, description = "Refused (a held lock, an unreachable site, ...); nothing changed", body = ErrorBody), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
async fn destroy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(fleet): Path<String>,
) -> ApiResult {
    caller.require(Role::Deployer)?;
    let name = fleet.clone();
    blocking(&state, move |store| known_fleet(store, &name).map(|_| ())).await?;
    super::run_write(&state, fleet, super::Write::Destroy, caller.name)
        .await
        .map(Json)
}

/// A posted spec that does not validate: 422 with the diagnostics.
fn invalid(d: &phoenix_spec::Diagnostics) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({
            "error": format!("the spec is not valid: {} problem(s)", d.items.len()),
            "diagnostics": diagnostics_json(d),
            "rendered": d.render(),
        })),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Posted specs

#[derive(Deserialize)]
struct EnvQuery {
    env: Option<String>,
}

/// A posted spec as `(file name, text)` sources, and the environment overlay asked for.
type Posted = (Vec<(String, String)>, Option<String>);

/// A posted spec: the body is one YAML file.
fn posted(
    body: Result<String, StringRejection>,
    query: Result<Query<EnvQuery>, QueryRejection>,
) -> Result<Posted, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let Query(q) = query.map_err(|e| {
        ApiError::bad_request(format!("{e}: the only query parameter is ?env=NAME"))
    })?;
    if body.trim().is_empty() {
        return Err(ApiError::bad_request(
            "post a fleet spec (YAML) as the request body",
        ));
    }
    Ok((vec![("posted.yaml".to_string(), body)], q.env))
}

fn diagnostics_json(d: &phoenix_spec::Diagnostics) -> Vec<Value> {
    d.items
        .iter()
        .map(|item| {
            let mut v = serde_json::to_value(item).unwrap_or_default();
            if let (Some(loc), Some(obj)) = (&item.location, v.as_object_mut()) {
                obj.insert("position".into(), d.position(loc).into());
            }
            v
        })
        .collect()
}

#[utoipa::path(post, path = "/api/v1/validate", tag = "posted", summary = "Validate a posted spec", params(("env" = Option<String>, Query, description = "Environment overlay")), request_body(content = String, content_type = "application/yaml", description = "One fleet spec file"), security(("bearer" = [])), responses((status = 200, description = "Valid", body = super::schemas::Validation), (status = 400, description = "Empty body or bad query", body = ErrorBody), (status = 422, description = "Not valid, with diagnostics", body = super::schemas::Validation), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
async fn validate(
    query: Result<Query<EnvQuery>, QueryRejection>,
    body: Result<String, StringRejection>,
) -> Response {
    let (sources, env) = match posted(body, query) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    match phoenix_spec::parse_sources(&sources, env.as_deref()) {
        Ok(fleet) => Json(json!({
            "valid": true,
            "fleet": fleet.name,
            "sites": fleet.sites.len(),
            "services": fleet.services.len(),
            "diagnostics": [],
        }))
        .into_response(),
        Err(d) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "valid": false,
                "error": format!("the spec is not valid: {} problem(s)", d.items.len()),
                "diagnostics": diagnostics_json(&d),
                "rendered": d.render(),
            })),
        )
            .into_response(),
    }
}

#[utoipa::path(post, path = "/api/v1/plan", tag = "posted", summary = "Plan a posted spec", params(("env" = Option<String>, Query, description = "Environment overlay")), request_body(content = String, content_type = "application/yaml", description = "One fleet spec file"), security(("bearer" = [])), responses((status = 200, description = "The plan (phoenix plan -o json)", body = super::schemas::Plan), (status = 400, description = "Empty body or bad query", body = ErrorBody), (status = 422, description = "Not valid, with diagnostics", body = super::schemas::Validation), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
async fn plan_posted(
    query: Result<Query<EnvQuery>, QueryRejection>,
    body: Result<String, StringRejection>,
) -> Response {
    let (sources, env) = match posted(body, query) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    match phoenix_spec::parse_sources(&sources, env.as_deref()) {
        Ok(fleet) => match plan_json(&fleet) {
            Ok(v) => Json(v).into_response(),
            Err(e) => e.into_response(),
        },
        Err(d) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": format!("the spec is not valid: {} problem(s)", d.items.len()),
                "diagnostics": diagnostics_json(&d),
                "rendered": d.render(),
            })),
        )
            .into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Monitoring

/// Prometheus HTTP service discovery (`http_sd_configs`): the same targets `phoenix
/// monitoring` writes into prometheus.yml, for every fleet in the store, computed by the same
/// code (`monitoring_cmd::generate`) from each fleet's applied spec and its instance records;
/// and each ledger node of `--ledger` once (labelled as the unit when a fleet runs it).
#[utoipa::path(get, path = "/api/v1/monitoring/targets", tag = "read", summary = "Prometheus HTTP service discovery of every fleet's metrics targets and the ledger nodes", security(("bearer" = [])), responses((status = 200, description = "Prometheus HTTP service discovery: target groups", body = Vec<TargetGroup>), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
async fn monitoring_targets(State(state): State<AppState>) -> Response {
    // URLs `--ledger` took that are no scrape target (a query, say) are left out; the ledger
    // client checked them at start.
    let nodes: Vec<_> = state
        .ledger
        .ledger
        .iter()
        .filter_map(|u| crate::monitoring_cmd::generate::ledger_node(u).ok())
        .collect();
    let groups = blocking(&state, move |store| {
        let mut groups = Vec::new();
        // Ledger targets by (scheme, address, path), first seen first; with a fleet's labels
        // when that fleet runs the node.
        let mut ledger: Vec<(LedgerKey, serde_json::Map<String, Value>)> = Vec::new();
        let mut scraped: Vec<(String, String)> = Vec::new();
        for name in store.list_fleets()? {
            let revisions = store.list_revisions(&name)?;
            let Some(r) = revisions
                .iter()
                .rev()
                .find(|r| r.outcome == phoenix_state::RevisionOutcome::Applied)
            else {
                continue;
            };
            // A revision whose spec no longer parses has no targets to give; skipped.
            let Ok(fleet) = fleet_of(r) else { continue };
            let records: Vec<_> = store
                .list_instances(&name)?
                .into_iter()
                .map(|r| r.state)
                .collect();
            let generated = crate::monitoring_cmd::generate::generate(&fleet, &records, &nodes);
            for job in &generated.jobs {
                for target in &job.targets {
                    let mut labels: serde_json::Map<String, Value> = target
                        .labels
                        .iter()
                        .map(|(k, v)| ((*k).to_string(), Value::from(v.clone())))
                        .collect();
                    labels.insert("__metrics_path__".into(), job.metrics_path().into());
                    if job.is_ledger() {
                        // Once for the whole server, not per fleet; a fleet's own unit's
                        // labels win over the bare node's.
                        let key = (
                            job.scheme(),
                            target.address.clone(),
                            job.metrics_path().to_string(),
                        );
                        let owned = labels.contains_key("unit");
                        match ledger.iter_mut().find(|(k, _)| *k == key) {
                            Some((_, l)) if owned && !l.contains_key("unit") => *l = labels,
                            Some(_) => {}
                            None => ledger.push((key, labels)),
                        }
                        continue;
                    }
                    scraped.push((target.address.clone(), job.metrics_path().to_string()));
                    labels.insert("phoenix_job".into(), job.name.clone().into());
                    groups.push(json!({ "targets": [target.address], "labels": labels }));
                }
            }
        }
        // Without any fleet the nodes are still listed.
        for node in &nodes {
            let (scheme, address, path) = (node.scheme(), node.address(), node.metrics_path());
            let key = (scheme, address.to_string(), path.to_string());
            if !ledger.iter().any(|(k, _)| *k == key) {
                let mut labels = serde_json::Map::new();
                labels.insert("service".into(), "ledger".into());
                labels.insert("instance".into(), address.into());
                labels.insert("__metrics_path__".into(), path.into());
                ledger.push((key, labels));
            }
        }
        for ((scheme, address, path), mut labels) in ledger {
            // A node a fleet's service job scrapes already is not repeated.
            if scraped.iter().any(|(a, p)| *a == address && *p == path) {
                continue;
            }
            // The fleet label of `phoenix monitoring`'s single-fleet file does not apply to a
            // node the server lists once for every fleet, unless a fleet runs it.
            if !labels.contains_key("unit") {
                labels.remove("fleet");
            }
            labels.insert("__scheme__".into(), scheme.into());
            labels.insert("phoenix_job".into(), "ledger".into());
            groups.push(json!({ "targets": [address], "labels": labels }));
        }
        Ok(groups)
    })
    .await;
    match groups {
        Ok(g) => Json(Value::Array(g)).into_response(),
        Err(e) => e.into_response(),
    }
}
