//! Serde for the spec types a [`crate::UnitSpec`] carries. The spec crate only derives
//! `Serialize` (its model is produced by the parser, never deserialized), but unit specs travel
//! over the local agent's socket and are persisted, so they need both directions. These remote
//! definitions mirror the spec types field for field; the compiler checks that they stay in step.

use phoenix_spec::{Health, HealthCheck, RestartPolicy};
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
    Http { url: String, expect_status: u16 },
    Tcp { address: String },
    Command { argv: Vec<String> },
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
            })
            .collect();
        Health {
            checks,
            timeout_ms: h.timeout_ms,
            interval_ms: h.interval_ms,
        }
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
