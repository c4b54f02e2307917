//! The server's own Prometheus metrics (`GET /metrics`, text format 0.0.4).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one server. Requests are counted by route pattern (`/api/v1/fleets/{fleet}`,
/// never the path asked for) and status code, so the series are bounded by the routes.
#[derive(Debug)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    auth_failures: AtomicU64,
    rate_limited: AtomicU64,
    started: jiff::Timestamp,
}

/// The route label of a request that matched no route.
pub(crate) const UNMATCHED: &str = "unmatched";

impl Metrics {
    pub(crate) fn new() -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            auth_failures: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            started: jiff::Timestamp::now(),
        }
    }

    /// Counts one answered request.
    pub(crate) fn request(&self, route: &str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((route.to_string(), status)).or_insert(0) += 1;
    }

    /// Counts a refused token.
    pub(crate) fn auth_failed(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request refused by the failed-attempt limit.
    pub(crate) fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text.
    pub(crate) fn render(&self, tracked_clients: usize) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP phoenix_serve_requests_total HTTP requests answered, by route pattern and status code.\n\
             # TYPE phoenix_serve_requests_total counter\n",
        );
        let map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        for ((route, code), n) in map.iter() {
            out.push_str(&format!(
                "phoenix_serve_requests_total{{route=\"{}\",code=\"{code}\"}} {n}\n",
                escape(route)
            ));
        }
        drop(map);
        out.push_str(&format!(
            "# HELP phoenix_serve_auth_failures_total Requests refused for a missing, unknown, revoked or expired token.\n\
             # TYPE phoenix_serve_auth_failures_total counter\n\
             phoenix_serve_auth_failures_total {}\n\
             # HELP phoenix_serve_rate_limited_total Requests refused because their address failed too often.\n\
             # TYPE phoenix_serve_rate_limited_total counter\n\
             phoenix_serve_rate_limited_total {}\n\
             # HELP phoenix_serve_rate_limit_tracked_clients Client addresses with recent failed attempts.\n\
             # TYPE phoenix_serve_rate_limit_tracked_clients gauge\n\
             phoenix_serve_rate_limit_tracked_clients {tracked_clients}\n\
             # HELP phoenix_serve_start_time_seconds When this server started, Unix seconds.\n\
             # TYPE phoenix_serve_start_time_seconds gauge\n\
             phoenix_serve_start_time_seconds {}\n\
             # HELP phoenix_serve_build_info The version of this phoenix.\n\
             # TYPE phoenix_serve_build_info gauge\n\
             phoenix_serve_build_info{{version=\"{}\"}} 1\n",
            self.auth_failures.load(Ordering::Relaxed),
            self.rate_limited.load(Ordering::Relaxed),
            self.started.as_second(),
            env!("CARGO_PKG_VERSION"),
        ));
        out
    }
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
