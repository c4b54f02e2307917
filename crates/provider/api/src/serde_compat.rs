//! Serde for the `phoenix-model` types a [`crate::UnitSpec`] carries. They derive only
//! `Serialize`, in the form `phoenix plan -o json` shows (the parser produces them, nothing
//! deserializes them), but unit specs travel over the local agent's socket and are persisted, so
//! they need both directions. These remote definitions mirror the model types field for field;
//! the compiler checks that they stay in step.

use phoenix_model::{Health, HealthCheck, RestartPolicy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Serialize, Deserialize)]
#[serde(remote = "RestartPolicy", rename_all = "kebab-case")]
pub(crate) enum RestartPolicyDef {
    Always,
    OnFailure,
    Never,
}

/// Wire form of [`HealthCheck`].
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum HealthCheckWire {
    Http {
        url: String,
        expect_status: u16,
    },
    Tcp {
        address: String,
    },
    Command {
        argv: Vec<String>,
    },
    Json {
        url: String,
        expect: Vec<(String, String)>,
    },
    Metrics {
        url: String,
        min_families: u32,
    },
    Ledger {
        api: String,
        min_peers: u32,
        max_lag: u64,
        advance_within_ms: u64,
    },
}

/// Wire form of [`Health`].
#[derive(Serialize, Deserialize)]
struct HealthWire {
    checks: Vec<HealthCheckWire>,
    timeout_ms: u64,
    interval_ms: u64,
}

impl From<&Health> for HealthWire {
    fn from(h: &Health) -> Self {
        let checks = h
            .checks
            .iter()
            .map(|c| match c.clone() {
                HealthCheck::Http { url, expect_status } => {
                    HealthCheckWire::Http { url, expect_status }
                }
                HealthCheck::Tcp { address } => HealthCheckWire::Tcp { address },
                HealthCheck::Command { argv } => HealthCheckWire::Command { argv },
                HealthCheck::Json { url, expect } => HealthCheckWire::Json { url, expect },
                HealthCheck::Metrics { url, min_families } => {
                    HealthCheckWire::Metrics { url, min_families }
                }
                HealthCheck::Ledger {
                    api,
                    min_peers,
                    max_lag,
                    advance_within_ms,
                } => HealthCheckWire::Ledger {
                    api,
                    min_peers,
                    max_lag,
                    advance_within_ms,
                },
            })
            .collect();
        HealthWire {
            checks,
            timeout_ms: h.timeout_ms,
            interval_ms: h.interval_ms,
        }
    }
}

impl From<HealthWire> for Health {
    fn from(h: HealthWire) -> Self {
        let checks = h
            .checks
            .into_iter()
            .map(|c| match c {
                HealthCheckWire::Http { url, expect_status } => {
                    HealthCheck::Http { url, expect_status }
                }
                HealthCheckWire::Tcp { address } => HealthCheck::Tcp { address },
                HealthCheckWire::Command { argv } => HealthCheck::Command { argv },
                HealthCheckWire::Json { url, expect } => HealthCheck::Json { url, expect },
                HealthCheckWire::Metrics { url, min_families } => {
                    HealthCheck::Metrics { url, min_families }
                }
                HealthCheckWire::Ledger {
                    api,
                    min_peers,
                    max_lag,
                    advance_within_ms,
                } => HealthCheck::Ledger {
                    api,
                    min_peers,
                    max_lag,
                    advance_within_ms,
                },
            })
            .collect();
        Health {
            checks,
            timeout_ms: h.timeout_ms,
            interval_ms: h.interval_ms,
        }
    }
}

/// `#[serde(with = "phoenix_provider_api::health_serde")]` for a [`Health`]: the one wire form
/// of health gates, shared by the local agent's socket, persisted unit specs and the SSH
/// provider's remote calls.
pub mod health {
    use super::*;

    /// Serializes `v` in the wire form.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(v: &Health, s: S) -> Result<S::Ok, S::Error> {
        HealthWire::from(v).serialize(s)
    }

    /// Reads a [`Health`] in the wire form.
    ///
    /// # Errors
    /// The deserializer's, for a document not in the wire form.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Health, D::Error> {
        Ok(Health::from(HealthWire::deserialize(d)?))
    }
}

/// `#[serde(with = "...")]` for `Option<Health>`.
pub(crate) mod option_health {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &Option<Health>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref().map(HealthWire::from).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Health>, D::Error> {
        Ok(Option::<HealthWire>::deserialize(d)?.map(Health::from))
    }
}
