//! What the ssh provider and `phoenix provider-remote` say to each other: one [`RemoteCall`]
//! (JSON) on the remote command's stdin, one [`RemoteReply`] (one JSON line) on its stdout,
//! followed, for [`RemoteReply::Logs`], by the log bytes it announces.
//!
//! ```text
//! > {"version":1,"agent_idle_exit_ms":null,"read_only":false,"request":{"op":"list","fleet":"demo"}}
//! < {"reply":"units","units":[...]}
//! > {"version":1,...,"request":{"op":"logs","fleet":"demo","selector":"web","have":{"web-0@r1.log":120},"max_bytes":33554432}}
//! < {"reply":"logs","files":[{"name":"web-0@r1.log","size":180,"offset":120,"len":60,"truncate":false}]}
//! < <60 bytes of web-0@r1.log from offset 120>
//! < {"reply":"error","error":{"kind":"snapshot_not_found","fleet":"demo","instance":"db-0","tag":"x"}}
//! ```
//!
//! Every request is idempotent, as the agent's are: a call whose answer was lost (the link
//! went down) is simply made again.

use phoenix_provider_api::{Health, ProbeOutcome, ProviderError, Snapshot, UnitSpec, UnitStatus};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

/// The version of this protocol. Both ends run the same binary (the provider installs its own
/// on the host first), so a mismatch means the installation did not take.
pub const PROTOCOL_VERSION: u32 = 1;

/// One call: a request and how the remote end should treat its agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteCall {
    /// [`PROTOCOL_VERSION`] of the caller.
    pub version: u32,
    /// `--idle-exit` of an agent this call starts (the agent's default when `None`).
    #[serde(default)]
    pub agent_idle_exit_ms: Option<u64>,
    /// Never start an agent (for reading commands): `list` reports the recorded units as the
    /// local provider's `without_starting_agent` does.
    #[serde(default)]
    pub read_only: bool,
    /// What to do.
    pub request: RemoteRequest,
}

/// What to do on the remote host, through the local provider there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RemoteRequest {
    /// `Provider::start`. Answered by [`RemoteReply::Unit`].
    Start {
        /// The unit.
        spec: Box<UnitSpec>,
    },
    /// `Provider::stop`. Answered by [`RemoteReply::Done`].
    Stop {
        /// Fleet.
        fleet: String,
        /// Unit id.
        unit: String,
        /// Grace period in milliseconds.
        grace_ms: u64,
    },
    /// `Provider::list`. Answered by [`RemoteReply::Units`].
    List {
        /// Fleet.
        fleet: String,
    },
    /// One attempt of a health check, run on the remote host. Answered by
    /// [`RemoteReply::Probe`].
    Probe {
        /// The unit as listed.
        unit: Box<UnitStatus>,
        /// The check.
        #[serde(with = "phoenix_provider_api::health_serde")]
        health: Health,
    },
    /// `Provider::snapshot`. Answered by [`RemoteReply::Snapshot`].
    Snapshot {
        /// Fleet.
        fleet: String,
        /// Instance.
        instance: String,
        /// Path templates.
        paths: Vec<String>,
        /// Tag.
        tag: String,
    },
    /// `Provider::restore`. Answered by [`RemoteReply::Snapshot`].
    Restore {
        /// Fleet.
        fleet: String,
        /// Instance.
        instance: String,
        /// Tag.
        tag: String,
    },
    /// The log files of `selector` in `fleet`, and what the caller lacks of each. Answered by
    /// [`RemoteReply::Logs`].
    Logs {
        /// Fleet.
        fleet: String,
        /// Service or instance; empty for all.
        selector: String,
        /// Bytes the caller already has, by file name.
        have: BTreeMap<String, u64>,
        /// At most this many bytes in all in the answer.
        max_bytes: u64,
    },
    /// Whether an agent runs there. Answered by [`RemoteReply::Agent`].
    Agent,
}

/// The answer to one [`RemoteCall`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum RemoteReply {
    /// One unit's status.
    Unit {
        /// The status (paths are the remote host's).
        status: Box<UnitStatus>,
    },
    /// Units, sorted by unit id.
    Units {
        /// The statuses.
        units: Vec<UnitStatus>,
    },
    /// Done.
    Done,
    /// A probe's outcome.
    Probe {
        /// The outcome.
        outcome: ProbeOutcome,
    },
    /// A snapshot taken or restored.
    Snapshot {
        /// The snapshot (its location is on the remote host).
        snapshot: Snapshot,
    },
    /// Log files, in the order the local provider lists them; their bytes follow the line,
    /// file after file.
    Logs {
        /// One entry per file.
        files: Vec<LogChunk>,
    },
    /// The agent, if one runs.
    Agent {
        /// Its pid, version and unit count.
        agent: Option<AgentState>,
    },
    /// The request failed.
    Error {
        /// How.
        error: WireError,
    },
}

/// What a [`RemoteReply::Logs`] carries of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    /// File name (`web-0@r3.log`).
    pub name: String,
    /// Its size on the host now.
    pub size: u64,
    /// Where the bytes sent start.
    pub offset: u64,
    /// How many bytes are sent.
    pub len: u64,
    /// The file is shorter than the caller's copy (it was replaced): drop the copy first.
    #[serde(default)]
    pub truncate: bool,
}

/// A remote agent's answer to a ping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// Its pid on that host.
    pub pid: u32,
    /// Its version.
    pub version: String,
    /// Units in its table.
    pub units: usize,
}

/// A [`ProviderError`] as it travels: every variant with its fields, so that the caller gets
/// the same variant back (a missing snapshot stays `SnapshotNotFound`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(missing_docs)] // The fields are those of the `ProviderError` variant of the same name.
pub enum WireError {
    Unavailable {
        provider: String,
        reason: String,
    },
    InvalidSpec {
        unit: String,
        problem: String,
    },
    Spawn {
        unit: String,
        reason: String,
    },
    Stop {
        unit: String,
        reason: String,
    },
    Busy {
        unit: String,
        reason: String,
    },
    PathOutsideDataDir {
        instance: String,
        path: String,
        data_dir: PathBuf,
    },
    SnapshotNotFound {
        fleet: String,
        instance: String,
        tag: String,
    },
    Io {
        step: String,
        path: PathBuf,
        cause: String,
        #[serde(default)]
        os_error: Option<i32>,
    },
    Protocol {
        provider: String,
        detail: String,
    },
}

impl From<&ProviderError> for WireError {
    fn from(e: &ProviderError) -> Self {
        match e {
            ProviderError::Unavailable { provider, reason } => WireError::Unavailable {
                provider: provider.clone(),
                reason: reason.clone(),
            },
            ProviderError::InvalidSpec { unit, problem } => WireError::InvalidSpec {
                unit: unit.clone(),
                problem: problem.clone(),
            },
            ProviderError::Spawn { unit, reason } => WireError::Spawn {
                unit: unit.clone(),
                reason: reason.clone(),
            },
            ProviderError::Stop { unit, reason } => WireError::Stop {
                unit: unit.clone(),
                reason: reason.clone(),
            },
            ProviderError::Busy { unit, reason } => WireError::Busy {
                unit: unit.clone(),
                reason: reason.clone(),
            },
            ProviderError::PathOutsideDataDir {
                instance,
                path,
                data_dir,
            } => WireError::PathOutsideDataDir {
                instance: instance.clone(),
                path: path.clone(),
                data_dir: data_dir.clone(),
            },
            ProviderError::SnapshotNotFound {
                fleet,
                instance,
                tag,
            } => WireError::SnapshotNotFound {
                fleet: fleet.clone(),
                instance: instance.clone(),
                tag: tag.clone(),
            },
            ProviderError::Io { step, path, cause } => WireError::Io {
                step: (*step).to_owned(),
                path: path.clone(),
                cause: cause.to_string(),
                os_error: cause.raw_os_error(),
            },
            ProviderError::Protocol { provider, detail } => WireError::Protocol {
                provider: provider.clone(),
                detail: detail.clone(),
            },
        }
    }
}

impl From<WireError> for ProviderError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Unavailable { provider, reason } => {
                ProviderError::Unavailable { provider, reason }
            }
            WireError::InvalidSpec { unit, problem } => {
                ProviderError::InvalidSpec { unit, problem }
            }
            WireError::Spawn { unit, reason } => ProviderError::Spawn { unit, reason },
            WireError::Stop { unit, reason } => ProviderError::Stop { unit, reason },
            WireError::Busy { unit, reason } => ProviderError::Busy { unit, reason },
            WireError::PathOutsideDataDir {
                instance,
                path,
                data_dir,
            } => ProviderError::PathOutsideDataDir {
                instance,
                path,
                data_dir,
            },
            WireError::SnapshotNotFound {
                fleet,
                instance,
                tag,
            } => ProviderError::SnapshotNotFound {
                fleet,
                instance,
                tag,
            },
            WireError::Io {
                step,
                path,
                cause,
                os_error,
            } => ProviderError::Io {
                step: intern(&step),
                path,
                cause: match os_error {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::other(cause),
                },
            },
            WireError::Protocol { provider, detail } => {
                ProviderError::Protocol { provider, detail }
            }
        }
    }
}

/// A `&'static str` for an I/O step's name (`ProviderError::Io` holds the step as one). The
/// names come from the same binary on both ends, a few dozen at most, so each distinct one is
/// leaked once.
fn intern(step: &str) -> &'static str {
    static STEPS: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut steps = STEPS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(s) = steps.get(step) {
        return s;
    }
    let s: &'static str = Box::leak(step.to_owned().into_boxed_str());
    steps.insert(s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use phoenix_provider_api::{HealthCheck, UnitState};

    fn round_trip(e: ProviderError) -> ProviderError {
        let json = serde_json::to_string(&WireError::from(&e)).unwrap();
        serde_json::from_str::<WireError>(&json).unwrap().into()
    }

    #[test]
    fn every_error_variant_survives_the_wire() {
        let cases = vec![
            ProviderError::Unavailable {
                provider: "local".into(),
                reason: "no agent".into(),
            },
            ProviderError::InvalidSpec {
                unit: "x-0@r1".into(),
                problem: "empty command".into(),
            },
            ProviderError::Spawn {
                unit: "x-0@r1".into(),
                reason: "No such file".into(),
            },
            ProviderError::Stop {
                unit: "x-0@r1".into(),
                reason: "survived".into(),
            },
            ProviderError::Busy {
                unit: "x-0@r1".into(),
                reason: "stopping".into(),
            },
            ProviderError::PathOutsideDataDir {
                instance: "db-0".into(),
                path: "/etc".into(),
                data_dir: "/d".into(),
            },
            ProviderError::SnapshotNotFound {
                fleet: "f".into(),
                instance: "db-0".into(),
                tag: "t".into(),
            },
            ProviderError::io(
                "create data dir",
                "/d",
                std::io::Error::from_raw_os_error(13),
            ),
            ProviderError::io("read", "/d", std::io::Error::other("odd")),
            ProviderError::Protocol {
                provider: "local".into(),
                detail: "garbled".into(),
            },
        ];
        for e in cases {
            let text = e.to_string();
            let back = round_trip(e);
            assert_eq!(back.to_string(), text);
        }
        assert!(matches!(
            round_trip(ProviderError::SnapshotNotFound {
                fleet: "f".into(),
                instance: "i".into(),
                tag: "t".into()
            }),
            ProviderError::SnapshotNotFound { .. }
        ));
    }

    #[test]
    fn probe_requests_carry_health_checks() {
        let unit = UnitStatus {
            unit_id: "web-0@r1".into(),
            fleet: "f".into(),
            service: "web".into(),
            instance: "web-0".into(),
            revision: 1,
            site: "edge".into(),
            state: UnitState::Running,
            pid: Some(7),
            handle: None,
            ports: BTreeMap::from([("port".to_string(), 8080u16)]),
            data_dir: "/home/u/.phoenix/units/f/web-0/data".into(),
            restarts: 0,
            logs: vec![],
            detail: None,
        };
        let health = Health {
            checks: vec![
                HealthCheck::Http {
                    url: "http://127.0.0.1:${port}/".into(),
                    expect_status: 200,
                },
                HealthCheck::Tcp {
                    address: "127.0.0.1:${port}".into(),
                },
                HealthCheck::Command {
                    argv: vec!["true".into()],
                },
                HealthCheck::Json {
                    url: "http://127.0.0.1:${port}/health".into(),
                    expect: vec![("status".into(), "Healthy".into())],
                },
                HealthCheck::Metrics {
                    url: "http://127.0.0.1:${port}/metrics".into(),
                    min_families: 10,
                },
                HealthCheck::Ledger {
                    api: "http://127.0.0.1:${port}".into(),
                    min_peers: 2,
                    max_lag: 3,
                    advance_within_ms: 2500,
                },
            ],
            timeout_ms: 1000,
            interval_ms: 50,
        };
        let call = RemoteCall {
            version: PROTOCOL_VERSION,
            agent_idle_exit_ms: Some(2000),
            read_only: false,
            request: RemoteRequest::Probe {
                unit: Box::new(unit),
                health,
            },
        };
        let json = serde_json::to_string(&call).unwrap();
        assert_eq!(serde_json::from_str::<RemoteCall>(&json).unwrap(), call);
    }
}
