//! Readiness gates and the restart policy of a unit.

use serde::Serialize;

/// A readiness gate: every check must pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The checks (at least one); the instance is healthy when all pass.
    pub checks: Vec<HealthCheck>,
    /// Give up (and fail the step) after this many milliseconds (default 30 s).
    pub timeout_ms: u64,
    /// How often to probe, in milliseconds (default 500 ms; an extension).
    pub interval_ms: u64,
}

/// The kinds of health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthCheck {
    /// HTTP GET, healthy when the status matches.
    Http {
        /// URL, with substitutions still in place.
        url: String,
        /// Expected status (default 200).
        expect_status: u16,
    },
    /// TCP connect to `host:port`.
    Tcp {
        /// Address, with substitutions still in place.
        address: String,
    },
    /// A command; exit status 0 is healthy.
    Command {
        /// Argv, with substitutions still in place.
        argv: Vec<String>,
    },
    /// HTTP GET answering 200 with a JSON document that holds the expected values (an
    /// extension: `health.json`), e.g. `{status: Healthy}` or the version being rolled out.
    Json {
        /// URL, with substitutions still in place.
        url: String,
        /// What the document must hold: a dotted path into it (`status`, `build.version`) and
        /// the expected value as text (substitutions still in place). A JSON string must equal
        /// it; a number or a boolean must print as it.
        expect: Vec<(String, String)>,
    },
    /// HTTP GET of a Prometheus text exposition answering 200 with at least `min_families`
    /// metric families (an extension: `health.metrics`).
    Metrics {
        /// URL, with substitutions still in place.
        url: String,
        /// The fewest metric families (distinct `# TYPE` or `# HELP` names) that count as ready.
        min_families: u32,
    },
    /// A ledger node (an extension: `health.ledger`): its finalized height advances, it sees
    /// enough peers, and it is not far behind the network, so that a node is ready only once
    /// it is synced and taking part.
    Ledger {
        /// The node's API base URL (`/v1/status` is read from it), substitutions in place.
        api: String,
        /// The fewest live peers the node must see.
        min_peers: u32,
        /// The most blocks the node's finalized height may trail the network's.
        max_lag: u64,
        /// How long one probe watches for the finalized height to advance, in milliseconds.
        advance_within_ms: u64,
    },
}

impl HealthCheck {
    /// The texts of this check that take substitutions (URL, address, argv, expected values).
    pub fn templates(&self) -> Vec<&str> {
        match self {
            HealthCheck::Http { url, .. } | HealthCheck::Metrics { url, .. } => vec![url],
            HealthCheck::Tcp { address } => vec![address],
            HealthCheck::Command { argv } => argv.iter().map(String::as_str).collect(),
            HealthCheck::Json { url, expect } => std::iter::once(url.as_str())
                .chain(expect.iter().map(|(_, v)| v.as_str()))
                .collect(),
            HealthCheck::Ledger { api, .. } => vec![api],
        }
    }

    /// The longest one attempt of this check needs beyond a plain request: a ledger check
    /// watches its node for `advance_within`.
    pub fn watch_ms(&self) -> u64 {
        match self {
            HealthCheck::Ledger {
                advance_within_ms, ..
            } => *advance_within_ms,
            _ => 0,
        }
    }
}

/// When the supervisor restarts an instance's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Always restart when it exits.
    Always,
    /// Restart when it exits non-zero (default).
    #[default]
    OnFailure,
    /// Never restart.
    Never,
}
