//! The records a [`StateStore`](crate::StateStore) keeps, and the writes it accepts.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The number of a revision within one fleet: 1, 2, 3, ... Never reused, even for a revision
/// that failed. Displayed as `r3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RevisionNumber(pub u64);

impl fmt::Display for RevisionNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// One process of one instance at one revision, e.g. `web-0@r3`: the key of an instance record
/// and the subject of an intent.
///
/// Keying by revision lets a blue-green or surge rollout keep `web-0@r3` and `web-0@r4` side by
/// side, each with its own record, and lets recovery tell which revision a stray process
/// belongs to from its name alone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnitId(String);

impl UnitId {
    /// The unit of `instance` (e.g. `web-0`) at `revision`: `web-0@r3`.
    pub fn new(instance: &str, revision: RevisionNumber) -> Self {
        Self(format!("{instance}@{revision}"))
    }

    /// A unit id as stored or as a provider reports it, taken verbatim.
    pub fn from_raw(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The instance and revision of an id made by [`UnitId::new`]; `None` for other shapes.
    pub fn parts(&self) -> Option<(&str, RevisionNumber)> {
        let (instance, revision) = self.0.rsplit_once("@r")?;
        Some((instance, RevisionNumber(revision.parse().ok()?)))
    }
}

impl fmt::Display for UnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What to record when an apply starts: the input of [`Write::CreateRevision`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRevision {
    /// The desired fleet spec, as JSON text. Stored byte for byte, never parsed by the store.
    pub spec_json: String,
    /// Where every instance goes, as JSON text. Stored byte for byte.
    pub placement_json: String,
    /// The hash of the plan this revision applies (as the planner prints it).
    pub plan_hash: String,
    /// Who asked for it, e.g. `alice@host-1`.
    pub actor: String,
}

/// One apply of one fleet: what was desired, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// The fleet this revision belongs to.
    pub fleet: String,
    /// Its number within the fleet.
    pub number: RevisionNumber,
    /// The desired fleet spec, as JSON text.
    pub spec_json: String,
    /// The placement, as JSON text.
    pub placement_json: String,
    /// The plan hash.
    pub plan_hash: String,
    /// Who asked for it.
    pub actor: String,
    /// When it was created (store clock).
    pub created_at: Timestamp,
    /// How it ended, or `Pending` while (or if) it has not.
    pub outcome: RevisionOutcome,
    /// When the outcome was last set; `None` while pending.
    pub finished_at: Option<Timestamp>,
}

/// How an apply ended.
///
/// Allowed changes: `Pending` to anything, `Applied` or `Failed` to `RolledBack`, and setting the
/// same outcome again (so a retried step is harmless). Anything else is
/// [`StateError::InvalidRevisionTransition`](crate::StateError::InvalidRevisionTransition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum RevisionOutcome {
    /// Being applied, or interrupted by a crash (recovery decides which).
    Pending,
    /// Every instance came up healthy; this is what should be running.
    Applied,
    /// The apply failed and nothing was restored (e.g. `--no-rollback`).
    Failed {
        /// Why, for people.
        reason: String,
    },
    /// The apply failed and the fleet was restored to revision `to`.
    RolledBack {
        /// The revision that was restored.
        to: RevisionNumber,
    },
}

impl RevisionOutcome {
    /// The name stored in the database and shown to people.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Applied => "applied",
            Self::Failed { .. } => "failed",
            Self::RolledBack { .. } => "rolled-back",
        }
    }

    /// Whether a revision may go from `self` to `next`.
    pub fn may_become(&self, next: &RevisionOutcome) -> bool {
        match (self, next) {
            (a, b) if a == b => true,
            (Self::Pending, _) => true,
            (Self::Applied | Self::Failed { .. }, Self::RolledBack { .. }) => true,
            _ => false,
        }
    }
}

/// What the engine wants a unit to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    /// The unit should run.
    Running,
    /// The unit should not run (being replaced, or the fleet is being destroyed).
    Stopped,
}

/// What the engine last saw a unit to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObservedState {
    /// Not observed yet (e.g. the record was written before the start).
    Unknown,
    /// Started, health gate not passed yet.
    Starting,
    /// Running and past its health gate.
    Running,
    /// A stop was requested and has not finished.
    Stopping,
    /// Stopped on purpose.
    Stopped,
    /// Exited or failed its health gate.
    Failed,
    /// The provider does not know it.
    Missing,
}

macro_rules! text_enum {
    ($ty:ty { $($variant:ident = $text:literal),+ $(,)? }) => {
        impl $ty {
            /// The name stored in the database.
            pub fn as_str(&self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            /// Parses a stored name.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(DesiredState { Running = "running", Stopped = "stopped" });
text_enum!(ObservedState {
    Unknown = "unknown",
    Starting = "starting",
    Running = "running",
    Stopping = "stopping",
    Stopped = "stopped",
    Failed = "failed",
    Missing = "missing",
});
text_enum!(IntentOp { Start = "start", Stop = "stop", Snapshot = "snapshot", Restore = "restore" });

/// Everything the engine keeps about one unit; the input of [`Write::UpsertInstance`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceState {
    /// The key, e.g. `web-0@r3`.
    pub unit: UnitId,
    /// The service, e.g. `web`.
    pub service: String,
    /// The instance, e.g. `web-0`.
    pub instance: String,
    /// The revision this unit runs.
    pub revision: RevisionNumber,
    /// The site it is placed on.
    pub site: String,
    /// The host within the site.
    pub host: String,
    /// The provider endpoint that runs it (`local://HOST/STATE_DIR`, a Docker engine, an SSH
    /// host): where it can be observed. Empty in records written before schema version 2.
    #[serde(default)]
    pub endpoint: String,
    /// What the engine wants it to be.
    pub desired: DesiredState,
    /// What the engine last saw.
    pub observed: ObservedState,
    /// How the provider finds it again (pid, container id, ...); `null` before it exists.
    pub handle: serde_json::Value,
    /// Its allocated ports, e.g. `{"port": 8080}`.
    pub ports: serde_json::Value,
}

/// An instance record as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// The fleet it belongs to.
    pub fleet: String,
    /// The stored state.
    pub state: InstanceState,
    /// When it was last written (store clock).
    pub updated_at: Timestamp,
}

/// Identifies an intent within a store (unique across fleets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IntentId(pub u64);

impl fmt::Display for IntentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "intent {}", self.0)
    }
}

/// The action an intent announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntentOp {
    /// Start a unit.
    Start,
    /// Stop a unit.
    Stop,
    /// Snapshot a unit's declared backup paths.
    Snapshot,
    /// Restore a unit's backup.
    Restore,
}

/// An action the engine is about to take; the input of [`Write::RecordIntent`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewIntent {
    /// What will be done.
    pub op: IntentOp,
    /// To which unit.
    pub unit: UnitId,
    /// For which revision's apply (or rollback).
    pub revision: RevisionNumber,
    /// Whatever recovery needs to finish or undo it (command, snapshot path, ...).
    pub detail: serde_json::Value,
}

/// How an intent ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum IntentOutcome {
    /// The action happened and its effects are recorded.
    Done,
    /// The action did not happen, or was undone.
    Failed {
        /// Why, for people.
        reason: String,
    },
}

/// A recorded intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// Its id.
    pub id: IntentId,
    /// The fleet.
    pub fleet: String,
    /// What was to be done.
    pub op: IntentOp,
    /// To which unit.
    pub unit: UnitId,
    /// For which revision.
    pub revision: RevisionNumber,
    /// The caller's detail.
    pub detail: serde_json::Value,
    /// The lock token of the lease under which it was recorded: an open intent whose token is
    /// not the current lease's was left by an apply that died.
    pub lease_token: u64,
    /// When it was recorded (store clock).
    pub created_at: Timestamp,
    /// `None` while open.
    pub outcome: Option<IntentOutcome>,
    /// When it was closed.
    pub closed_at: Option<Timestamp>,
}

impl Intent {
    /// Whether the intent is still open (recovery must resolve it).
    pub fn is_open(&self) -> bool {
        self.outcome.is_none()
    }
}

/// Who holds (or asks for) a deploy lock.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LockOwner {
    /// `user@host`.
    pub who: String,
    /// The process id on that host.
    pub pid: u32,
    /// What it is doing: `apply`, `rollback`, `destroy`, ...
    pub operation: String,
}

impl LockOwner {
    /// This process, as `user@hostname` with its own pid.
    pub fn this_process(operation: &str) -> Self {
        Self {
            who: format!("{}@{}", this_user(), this_host()),
            pid: std::process::id(),
            operation: operation.to_owned(),
        }
    }

    /// The host part of `who` (everything after the last `@`).
    pub fn host(&self) -> &str {
        self.who
            .rsplit_once('@')
            .map_or(self.who.as_str(), |(_, host)| host)
    }
}

/// The user running this process: `$USER`, `$LOGNAME`, or the name of the process's uid in
/// `/etc/passwd` (CI runs often have no `USER`); `unknown` if none says.
fn this_user() -> String {
    let from_env = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty());
    from_env
        .or_else(user_from_passwd)
        .unwrap_or_else(|| "unknown".to_owned())
}

pub(crate) fn user_from_passwd() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_owned();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)? == uid).then(|| name.to_owned())
    })
}

/// The name of this host, for [`LockOwner::this_process`]; `localhost` when it cannot be read.
pub fn this_host() -> String {
    // /proc avoids a libc call (and `unsafe`) for a name that is only shown to people and compared
    // to decide whether a holder's pid can be checked locally.
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The current holder of a fleet's deploy lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// Who holds it.
    pub owner: LockOwner,
    /// The fencing token of this lease: strictly increasing per fleet, so a later lease always
    /// has a larger token than any earlier one.
    pub token: u64,
    /// When this lease was granted (store clock).
    pub acquired_at: Timestamp,
    /// When it runs out unless renewed (store clock).
    pub expires_at: Timestamp,
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (pid {}, {}) since {}, lease until {}",
            self.owner.who, self.owner.pid, self.owner.operation, self.acquired_at, self.expires_at
        )
    }
}

/// A held deploy lock: the proof that the caller may write a fleet's state.
///
/// Every write ([`StateStore::write_atomically`](crate::StateStore::write_atomically)) is
/// checked against it: once another holder has taken the lock over, writes with this lease fail
/// with [`StateError::LockLost`](crate::StateError::LockLost).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The fleet.
    pub fleet: String,
    /// The holder as stored (that is, this caller).
    pub holder: LockHolder,
}

impl Lease {
    /// The fencing token.
    pub fn token(&self) -> u64 {
        self.holder.token
    }
}

/// A request for a fleet's deploy lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRequest {
    /// Who asks.
    pub owner: LockOwner,
    /// How long the lease lasts without renewal. Renew well within it (e.g. every third).
    pub ttl: Duration,
    /// Take over the lease with this token even if it has not expired, because the caller has
    /// established that its holder is gone (e.g. same host and its pid no longer exists, after a
    /// `kill -9`). Refused if the lock has meanwhile changed hands.
    pub take_over_token: Option<u64>,
}

impl LockRequest {
    /// A request by `owner` for a lease of `ttl`, taking over only an expired lease.
    pub fn new(owner: LockOwner, ttl: Duration) -> Self {
        Self {
            owner,
            ttl,
            take_over_token: None,
        }
    }
}

/// The result of acquiring a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockGrant {
    /// The new lease.
    pub lease: Lease,
    /// The previous holder whose lease was taken over (expired, or named by
    /// [`LockRequest::take_over_token`]). When `Some`, an apply died or stalled: run recovery
    /// over its open intents before planning anything new.
    pub took_over: Option<LockHolder>,
}

/// The head of the audit log as last anchored in the state store, so that removing records from
/// the end of the log can be detected (a hash chain alone cannot see a shortened tail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAnchor {
    /// The sequence number of the head record.
    pub seq: u64,
    /// Its hash (hex).
    pub head_hash: String,
    /// When it was anchored (store clock).
    pub updated_at: Timestamp,
}

/// One record of a fleet's audit chain, as stored by
/// [`StateStore::append_audit_record`](crate::StateStore::append_audit_record). The store keeps
/// `record_json` as given; what the record means (and whether it verifies) is `phoenix-audit`'s
/// business.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRow {
    /// Its place in the fleet's chain, from 1.
    pub seq: u64,
    /// The previous record's hash.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
    /// The public key (hex) that signed it; `None` for unsigned (imported) records.
    pub signer: Option<String>,
    /// The whole record.
    pub record_json: String,
}

/// A public key allowed to sign a fleet's audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditKey {
    /// The ed25519 public key, hex.
    pub public_key: String,
    /// Whose it is, for people.
    pub name: String,
    /// The chain record that allowed it.
    pub allowed_seq: u64,
    /// The chain record that revoked it, if any.
    pub revoked_seq: Option<u64>,
}

/// A change to a fleet's allowed keys, made together with the chain record that states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditKeyChange {
    /// Allow `public_key` (again, if it was revoked).
    Allow {
        /// The key, hex.
        public_key: String,
        /// Whose it is.
        name: String,
    },
    /// Revoke `public_key`.
    Revoke {
        /// The key, hex.
        public_key: String,
    },
}

/// How a run of a one-shot job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobOutcome {
    /// Its last attempt exited 0.
    Succeeded,
    /// Every attempt failed (a non-zero exit, a signal, a start that failed).
    Failed,
    /// Its last attempt ran past the job's timeout and was stopped.
    TimedOut,
}

text_enum!(JobOutcome { Succeeded = "succeeded", Failed = "failed", TimedOut = "timed-out" });

/// The most output of one job run the store keeps: its tail.
pub const MAX_JOB_OUTPUT: usize = 16 * 1024;

/// One run of a one-shot job at one revision: the input of
/// [`StateStore::record_job_run`](crate::StateStore::record_job_run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRun {
    /// The job, e.g. `migrate`.
    pub job: String,
    /// Its instance, e.g. `migrate-0`.
    pub instance: String,
    /// The revision it ran for.
    pub revision: RevisionNumber,
    /// The fingerprint of what ran.
    pub fingerprint: String,
    /// How it ended.
    pub outcome: JobOutcome,
    /// The exit code of the last attempt, when it exited.
    pub exit_code: Option<i64>,
    /// Attempts made (1 + retries used).
    pub attempts: u32,
    /// How long all attempts took, backoff included, in milliseconds.
    pub duration_ms: u64,
    /// Why it failed, or `exited with code 0`.
    pub detail: String,
    /// The tail of its output (stdout and stderr), at most [`MAX_JOB_OUTPUT`] bytes; the store
    /// cuts a longer one at a character boundary, keeping the end.
    pub output: String,
}

/// A job run as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRunRecord {
    /// The fleet.
    pub fleet: String,
    /// The run.
    pub run: JobRun,
    /// When it was recorded (store clock).
    pub recorded_at: Timestamp,
}

/// One change to a fleet's state; a batch of them is applied atomically by
/// [`StateStore::write_atomically`](crate::StateStore::write_atomically).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Create the fleet's next revision, outcome `Pending`.
    CreateRevision(NewRevision),
    /// Set a revision's outcome.
    SetRevisionOutcome {
        /// Which revision.
        revision: RevisionNumber,
        /// The new outcome.
        outcome: RevisionOutcome,
    },
    /// Insert or replace an instance record (keyed by fleet and unit).
    UpsertInstance(InstanceState),
    /// Delete an instance record; deleting a missing one is not an error.
    DeleteInstance(UnitId),
    /// Record an open intent.
    RecordIntent(NewIntent),
    /// Close an open intent.
    CloseIntent {
        /// Which intent.
        id: IntentId,
        /// How it ended.
        outcome: IntentOutcome,
    },
}

/// The result of one [`Write`], in the same position of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// A revision was created or its outcome set.
    Revision(Revision),
    /// An instance record was written.
    Instance(InstanceRecord),
    /// An instance record was deleted (`existed` says whether there was one).
    InstanceDeleted {
        /// The unit.
        unit: UnitId,
        /// Whether a record existed.
        existed: bool,
    },
    /// An intent was recorded or closed.
    Intent(Intent),
}

/// An API token of `phoenix serve` to create: the input of
/// [`StateStore::create_api_token`](crate::StateStore::create_api_token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiToken {
    /// Its name, unique among live tokens; the actor of what is done with it.
    pub name: String,
    /// Its role (`viewer`, `deployer`), as the server defines them; the store does not
    /// interpret it.
    pub role: String,
    /// The SHA-256 of the token's secret, hex. The secret itself is never stored.
    pub secret_sha256: String,
    /// How long it is valid from its creation (store clock); `None`: until revoked.
    pub valid_for: Option<Duration>,
}

/// An API token as stored (without its secret, which is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// The SHA-256 of its secret, hex.
    pub secret_sha256: String,
    /// When it was created (store clock).
    pub created_at: Timestamp,
    /// When it stops being valid; `None`: never, unless revoked.
    pub expires_at: Option<Timestamp>,
    /// When it was revoked; `None` while it is not.
    pub revoked_at: Option<Timestamp>,
}

impl ApiToken {
    /// Whether the token may be used at `now`: neither revoked nor expired.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}
