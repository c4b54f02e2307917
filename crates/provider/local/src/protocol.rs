//! The agent protocol: JSON lines over the Unix socket `DIR/agent.sock`. A client writes one
//! [`Request`] per line and reads one [`Reply`] per line, in order; a connection may carry any
//! number of requests. Every request is idempotent, so a client that lost its connection
//! mid-request simply sends it again.
//!
//! ```text
//! > {"op":"ping"}
//! < {"reply":"pong","pid":4242,"version":"0.1.0","units":1}
//! > {"op":"start","spec":{"fleet":"demo","service":"web","instance":"web-0","revision":3,"command":["python3","-m","http.server","${port}"],"ports":["port"]}}
//! < {"reply":"unit","status":{"unit_id":"web-0@r3","state":"running","pid":4250,"ports":{"port":41234},...}}
//! > {"op":"list","fleet":"demo"}
//! < {"reply":"units","units":[...]}
//! > {"op":"stop","fleet":"demo","unit":"web-0@r3","grace_ms":10000}
//! < {"reply":"done"}
//! > {"op":"shutdown","stop_units":true}
//! < {"reply":"done"}
//! < {"reply":"error","kind":"spawn","unit":"web-0@r3","message":"..."}   (any request)
//! ```

use phoenix_provider_api::{ProviderError, UnitSpec, UnitStatus};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Secret values on the socket: by name, shown by `Debug` as names only, so that a logged
/// request never carries a value.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WireSecrets(pub std::collections::BTreeMap<String, String>);

impl WireSecrets {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// From the values a provider was given.
    pub fn from_values(values: &phoenix_provider_api::secret::SecretValues) -> Self {
        WireSecrets(
            values
                .iter()
                .map(|(k, v)| (k.to_string(), v.expose().to_string()))
                .collect(),
        )
    }

    /// Back to values.
    pub fn to_values(&self) -> phoenix_provider_api::secret::SecretValues {
        let mut out = phoenix_provider_api::secret::SecretValues::default();
        for (k, v) in &self.0 {
            out.insert(k, phoenix_provider_api::secret::SecretValue::new(v.clone()));
        }
        out
    }
}

impl std::fmt::Debug for WireSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// A request to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Is the agent there? Answered by [`Reply::Pong`].
    Ping,
    /// Start a unit (or return it if running). Answered by [`Reply::Unit`].
    Start {
        /// The unit (boxed: a spec is much larger than the other requests; the wire format is
        /// the same).
        spec: Box<UnitSpec>,
        /// The values of the secrets the unit uses, written to its data dir before the
        /// start; never part of the agent's unit table.
        #[serde(default, skip_serializing_if = "WireSecrets::is_empty")]
        secrets: WireSecrets,
    },
    /// Stop a unit: SIGTERM, SIGKILL after `grace_ms`. Answered by [`Reply::Done`].
    Stop {
        /// Fleet.
        fleet: String,
        /// Unit id.
        unit: String,
        /// Grace period in milliseconds.
        grace_ms: u64,
    },
    /// List units of a fleet, or of every fleet. Answered by [`Reply::Units`].
    List {
        /// Fleet; `None` for all.
        #[serde(default)]
        fleet: Option<String>,
    },
    /// Exit the agent, first stopping every unit if `stop_units` (otherwise they keep running
    /// and the next agent adopts them). Answered by [`Reply::Done`].
    Shutdown {
        /// Stop every unit (each with its own stop grace) first.
        stop_units: bool,
    },
}

/// A reply from the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// Answer to [`Request::Ping`].
    Pong {
        /// The agent's pid.
        pid: u32,
        /// The agent's version.
        version: String,
        /// Units in its table.
        units: usize,
    },
    /// One unit's status.
    Unit {
        /// The status.
        status: Box<UnitStatus>,
    },
    /// Units' statuses, sorted by fleet and unit id.
    Units {
        /// The statuses.
        units: Vec<UnitStatus>,
    },
    /// The request was carried out.
    Done,
    /// The request failed.
    Error {
        /// What kind of failure.
        kind: ErrorKind,
        /// The unit concerned, if any.
        #[serde(default)]
        unit: String,
        /// Human-readable message.
        message: String,
    },
}

/// Kinds of [`Reply::Error`], mirroring [`ProviderError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The spec cannot run.
    InvalidSpec,
    /// The process could not be created.
    Spawn,
    /// The process could not be stopped.
    Stop,
    /// The unit is being stopped; try again.
    Busy,
    /// The agent is exiting; connect again (a new agent will answer).
    ShuttingDown,
    /// The request could not be parsed.
    BadRequest,
    /// A file-system step failed in the agent.
    Io,
}

impl Reply {
    /// The error reply for `e`. For kinds that [`Reply::into_error`] turns back into the same
    /// variant, `message` is the variant's own text (its reason), not the whole message:
    /// otherwise the client wraps the message again and the user reads "cannot start unit
    /// `c-0@r3`: cannot start unit `c-0@r3`: ...".
    pub fn from_error(e: &ProviderError) -> Self {
        let (kind, unit, message) = match e {
            ProviderError::InvalidSpec { unit, problem } => {
                (ErrorKind::InvalidSpec, unit.clone(), problem.clone())
            }
            ProviderError::Spawn { unit, reason } => {
                (ErrorKind::Spawn, unit.clone(), reason.clone())
            }
            ProviderError::Stop { unit, reason } => (ErrorKind::Stop, unit.clone(), reason.clone()),
            ProviderError::Busy { unit, reason } => (ErrorKind::Busy, unit.clone(), reason.clone()),
            ProviderError::Protocol { detail, .. } => {
                (ErrorKind::BadRequest, String::new(), detail.clone())
            }
            other => (ErrorKind::Io, String::new(), other.to_string()),
        };
        Reply::Error {
            kind,
            unit,
            message,
        }
    }

    /// The [`ProviderError`] an error reply stands for (`None` for other replies). `state_dir`
    /// gives context to I/O errors.
    pub fn into_error(self, state_dir: &Path) -> Option<ProviderError> {
        let Reply::Error {
            kind,
            unit,
            message,
        } = self
        else {
            return None;
        };
        let provider = "local".to_string();
        Some(match kind {
            ErrorKind::InvalidSpec => ProviderError::InvalidSpec {
                unit,
                problem: message,
            },
            ErrorKind::Spawn => ProviderError::Spawn {
                unit,
                reason: message,
            },
            ErrorKind::Stop => ProviderError::Stop {
                unit,
                reason: message,
            },
            ErrorKind::Busy => ProviderError::Busy {
                unit,
                reason: message,
            },
            ErrorKind::ShuttingDown => ProviderError::Unavailable {
                provider,
                reason: message,
            },
            ErrorKind::BadRequest => ProviderError::Protocol {
                provider,
                detail: message,
            },
            ErrorKind::Io => {
                ProviderError::io("the agent of", state_dir, std::io::Error::other(message))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_stable() {
        let r: Request = serde_json::from_str(r#"{"op":"list"}"#).unwrap();
        assert_eq!(r, Request::List { fleet: None });
        let r: Request =
            serde_json::from_str(r#"{"op":"stop","fleet":"f","unit":"a-0@r1","grace_ms":5}"#)
                .unwrap();
        assert_eq!(
            r,
            Request::Stop {
                fleet: "f".into(),
                unit: "a-0@r1".into(),
                grace_ms: 5
            }
        );
        let spec = r#"{"op":"start","spec":{"fleet":"f","service":"a","instance":"a-0","revision":1,"command":["true"]}}"#;
        let Request::Start { spec, .. } = serde_json::from_str(spec).unwrap() else {
            panic!()
        };
        assert_eq!(spec.stop_grace_ms, 10_000);
        assert_eq!(
            serde_json::to_string(&Reply::Done).unwrap(),
            r#"{"reply":"done"}"#
        );
    }

    #[test]
    fn errors_round_trip_through_replies() {
        let e = ProviderError::Busy {
            unit: "u".into(),
            reason: "stopping".into(),
        };
        let back = Reply::from_error(&e).into_error(Path::new("/s")).unwrap();
        assert!(back.is_retryable());
        assert!(matches!(back, ProviderError::Busy { unit, .. } if unit == "u"));
    }

    /// Regression: a failed start read "cannot start unit `c-0@r3`: cannot start unit
    /// `c-0@r3`: ..." because the agent sent the whole message and the client wrapped it again.
    #[test]
    fn errors_read_the_same_after_the_round_trip() {
        let unit = "c-0@r3".to_string();
        let cases = [
            ProviderError::Spawn {
                unit: unit.clone(),
                reason: "`nope`: No such file or directory".into(),
            },
            ProviderError::Stop {
                unit: unit.clone(),
                reason: "still alive".into(),
            },
            ProviderError::Busy {
                unit: unit.clone(),
                reason: "being stopped".into(),
            },
            ProviderError::InvalidSpec {
                unit: unit.clone(),
                problem: "empty command".into(),
            },
        ];
        for e in cases {
            let back = Reply::from_error(&e).into_error(Path::new("/s")).unwrap();
            assert_eq!(back.to_string(), e.to_string());
            assert_eq!(back.to_string().matches("c-0@r3").count(), 1, "{back}");
        }
        let io = ProviderError::io("create data dir", "/d", std::io::Error::other("EACCES"));
        let back = Reply::from_error(&io).into_error(Path::new("/s")).unwrap();
        assert_eq!(
            back.to_string(),
            "the agent of `/s`: create data dir `/d`: EACCES"
        );
    }
}
