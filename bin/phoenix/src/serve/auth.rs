//! API tokens and who may do what: roles, token secrets and their hashes, the `Authorization:
//! Bearer` check, and a bounded rate limit on failed attempts.

use super::api::ApiError;
use super::{AppState, blocking};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a token may do. Ordered: a deployer may do everything a viewer may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Role {
    /// Reads: fleets, specs, plans, revisions, instances, the audit log, monitoring targets;
    /// validate and plan of a posted spec (they change nothing).
    Viewer,
    /// Reads and writes (rollback, apply, destroy).
    Deployer,
}

impl Role {
    /// The name stored with the token.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
        }
    }

    /// A stored role; `None` for a name this build does not know (such a token is refused).
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Role::Viewer),
            "deployer" => Some(Role::Deployer),
            _ => None,
        }
    }
}

/// Every token starts with this, so that a leaked one is recognisable (secret scanners, logs).
pub(crate) const TOKEN_PREFIX: &str = "phx_";

/// The longest `Authorization` value looked at; longer ones are refused unread.
const MAX_TOKEN_LEN: usize = 128;

/// A new token: the prefix and 32 random bytes in hex.
///
/// # Errors
/// The system's random source failed.
pub(crate) fn new_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot read the system's random source: {e}"))?;
    Ok(format!("{TOKEN_PREFIX}{}", hex::encode(bytes)))
}

/// What the store keeps of a token: the SHA-256 of the whole token text, hex.
pub(crate) fn secret_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The caller of an authenticated request: the token's name (the actor of what it does) and
/// role. Put into the request's extensions by [`require_token`].
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    /// The token's name.
    pub(crate) name: String,
    /// Its role.
    pub(crate) role: Role,
}

impl Caller {
    /// `Ok` when the caller's role is at least `needed`, else a 403 naming both.
    pub(crate) fn require(&self, needed: Role) -> Result<(), ApiError> {
        if self.role >= needed {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "token {} has the {} role; this needs a {} token",
                    self.name,
                    self.role.as_str(),
                    needed.as_str()
                ),
            ))
        }
    }
}

/// Failed attempts allowed per client address within [`WINDOW`].
pub(crate) const MAX_FAILURES: u32 = 10;
/// The window of [`MAX_FAILURES`].
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Client addresses tracked at once. Past this, addresses are forgotten once their window
/// is over, and while the table is still full every new address shares one slot: memory stays
/// bounded whatever a client sends, at the price of new clients being limited together
/// during a flood.
const MAX_TRACKED: usize = 4096;

/// Failed authentication attempts per client address, in fixed windows.
#[derive(Debug, Default)]
pub(crate) struct FailureLimiter {
    table: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureLimiter {
    fn key(&self, table: &mut HashMap<IpAddr, (Instant, u32)>, ip: IpAddr, now: Instant) -> IpAddr {
        if table.contains_key(&ip) || table.len() < MAX_TRACKED {
            return ip;
        }
        table.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        if table.len() < MAX_TRACKED {
            ip
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }
    }

    /// Whether `ip` has used up its failed attempts; `Some(seconds until it may try again)`.
    pub(crate) fn blocked(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let key = self.key(&mut table, ip, now);
        let (start, count) = table.get(&key).copied()?;
        let elapsed = now.duration_since(start);
        if elapsed >= WINDOW {
            table.remove(&key);
            return None;
        }
        (count >= MAX_FAILURES).then(|| (WINDOW - elapsed).as_secs().max(1))
    }

    /// Counts one failed attempt of `ip`.
    pub(crate) fn failed(&self, ip: IpAddr, now: Instant) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let key = self.key(&mut table, ip, now);
        let entry = table.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// Addresses tracked now (for tests and `/metrics`).
    pub(crate) fn tracked(&self) -> usize {
        self.table.lock().map_or(0, |t| t.len())
    }
}

/// The bearer token of a request; `Err` with what is wrong with the header.
fn bearer(request: &Request) -> Result<Option<String>, &'static str> {
    let Some(value) = request.headers().get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    if value.len() > MAX_TOKEN_LEN + "Bearer ".len() {
        return Err("the Authorization header is too long to hold a Phoenix token");
    }
    let value = value
        .to_str()
        .map_err(|_| "the Authorization header is not text")?;
    let Some((scheme, token)) = value.split_once(' ') else {
        return Err("the Authorization header must be `Bearer TOKEN`");
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("the Authorization header must be `Bearer TOKEN`");
    }
    Ok(Some(token.trim().to_string()))
}

/// Middleware of every route that needs a token: checks `Authorization: Bearer TOKEN` against
/// the store (hash, not revoked, not expired, a known role), rate-limits failures per client
/// address, and puts the [`Caller`] into the request's extensions. The role a route needs
/// beyond viewer is checked by the route ([`Caller::require`]).
pub(crate) async fn require_token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    use axum::response::IntoResponse as _;
    let ip = peer.ip();
    if let Some(retry) = state.limiter.blocked(ip, Instant::now()) {
        state.metrics.rate_limited();
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed sign-in attempts from {ip}; try again in {retry} s"),
        )
        .into_response();
        if let Ok(v) = retry.to_string().parse() {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, v);
        }
        return response;
    }
    let refuse = |message: String| {
        state.limiter.failed(ip, Instant::now());
        state.metrics.auth_failed();
        let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
        response.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"phoenix\""),
        );
        response
    };
    let token = match bearer(&request) {
        Ok(Some(t)) => t,
        Ok(None) => {
            // No credentials at all is not an attempt to guess one: not counted.
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this needs a token: send `Authorization: Bearer TOKEN` (create one with \
                 `phoenix serve token create NAME --role viewer`)",
            )
            .into_response();
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"phoenix\""),
            );
            return response;
        }
        Err(why) => return refuse(why.to_string()),
    };
    if token.len() > MAX_TOKEN_LEN || !token.starts_with(TOKEN_PREFIX) {
        return refuse("not a Phoenix token".to_string());
    }
    let hash = secret_hash(&token);
    let found = blocking(&state, move |store| Ok(store.api_token_by_secret(&hash)?)).await;
    let found = match found {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let now = jiff::Timestamp::now();
    let caller = match found {
        None => return refuse("unknown token".to_string()),
        Some(t) if t.revoked_at.is_some() => {
            return refuse(format!("token {} was revoked", t.name));
        }
        Some(t) if !t.is_live(now) => return refuse(format!("token {} has expired", t.name)),
        Some(t) => match Role::parse(&t.role) {
            Some(role) => Caller { name: t.name, role },
            None => {
                return refuse(format!(
                    "token {} has the role `{}`, which this Phoenix does not know",
                    t.name, t.role
                ));
            }
        },
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// `30d`, `12h`, `90m`, `2w`: how long a token is valid. At most ten years.
///
/// # Errors
/// Anything else, with the forms accepted.
pub(crate) fn parse_validity(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| {
        anyhow::anyhow!(
            "`{s}` is not a duration: write a whole number and a unit (90m, 12h, 30d, 2w)"
        )
    })?;
    let unit_secs = match unit {
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => anyhow::bail!("`{s}`: the unit must be m, h, d or w (90m, 12h, 30d, 2w)"),
    };
    let secs = n.saturating_mul(unit_secs);
    if n == 0 || secs > 3650 * 86_400 {
        anyhow::bail!("`{s}`: a token is valid for at least a minute and at most ten years");
    }
    Ok(Duration::from_secs(secs))
}

/// Token names: what `token revoke` and the audit log name. A letter or digit, then letters,
/// digits, `.`, `_`, `-` or `@`; at most 64.
pub(crate) fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if !ok {
        anyhow::bail!(
            "`{name}` is not a token name: a letter or digit, then letters, digits, `.`, `_`, \
             `-` or `@`, at most 64"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_prefixed_and_hashed() {
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        assert!(a.len() <= MAX_TOKEN_LEN);
        assert_eq!(secret_hash(&a).len(), 64);
        assert_ne!(secret_hash(&a), secret_hash(&b));
    }

    #[test]
    fn failures_are_limited_per_address_within_a_window() {
        let limiter = FailureLimiter::default();
        let (ip, other) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert_eq!(limiter.blocked(ip, t0), None);
            limiter.failed(ip, t0);
        }
        assert!(limiter.blocked(ip, t0).is_some());
        assert_eq!(limiter.blocked(other, t0), None);
        assert_eq!(limiter.blocked(ip, t0 + WINDOW), None, "a new window");
    }

    #[test]
    fn the_table_stays_bounded_under_a_flood_of_addresses() {
        let limiter = FailureLimiter::default();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 500) {
            limiter.failed(IpAddr::V4(Ipv4Addr::from(i)), t0);
        }
        assert!(limiter.tracked() <= MAX_TRACKED);
        // Once the old windows are over, new addresses get their own slot again.
        let later = t0 + WINDOW;
        limiter.failed("192.0.2.1".parse().unwrap(), later);
        assert!(limiter.tracked() <= MAX_TRACKED);
    }

    #[test]
    fn validity_and_names() {
        assert_eq!(
            parse_validity("30d").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(parse_validity("90m").unwrap(), Duration::from_secs(5400));
        for bad in [
            "",
            "d",
            "30",
            "30s",
            "0d",
            "-1d",
            "99999999999999999999w",
            "4000w",
        ] {
            assert!(parse_validity(bad).is_err(), "{bad}");
        }
        check_name("ci-bot@build.1").unwrap();
        for bad in ["", "-x", "a b", "é", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
