//! Phoenix's operation log: every control-plane step (an apply starting, a unit started, a gate
//! passed, a rollback) with its outcome, through one trait, [`Recorder`].
//!
//! - [`LocalLog`]: the embedded default, a hash-chained append-only JSON-lines file
//!   (`STATE_DIR/audit.jsonl`) whose [`LocalLog::verify`] detects any edited, removed,
//!   reordered or inserted record.
//! - [`MultiRecorder`]: fans one entry out to several recorders (the local log and, once it
//!   exists, the ledger's `audit` module).
//! - [`MemoryRecorder`]: an in-memory recorder for tests of code that records.
//!
//! ```
//! use phoenix_audit::{AuditEntry, AuditOutcome, LocalLog, Recorder};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let log = LocalLog::open_in(dir.path())?;
//! let entry = AuditEntry::new("2026-05-01T12:00:00Z".parse().unwrap(), "alice@host", "demo", "apply.start", AuditOutcome::Ok);
//! let record = log.record(entry)?;
//! assert_eq!(record.seq, 1);
//! let report = log.verify().expect("untouched log verifies");
//! assert_eq!(report.head.unwrap().hash, record.hash);
//! # Ok::<(), phoenix_audit::AuditError>(())
//! ```
//!
//! # What the chain proves, and what it cannot
//!
//! Each record carries its predecessor's hash and its own, so changing, removing, reordering or
//! inserting any record breaks the chain at that point. Two things a chain alone cannot show:
//! a log cut short at the end (the shorter log is a valid chain), and a log rewritten from some
//! point on with freshly computed hashes. Both are caught by comparing against an *anchor*
//! kept elsewhere: [`VerifyReport::head`] (sequence number and hash of the last record), stored
//! for example in the state database after each apply (`phoenix-state`'s `anchor_audit_head`)
//! or on the ledger, and checked with [`LocalLog::verify_against`].

mod chain;
mod key;
mod local;
mod store_chain;
mod verify;

use std::sync::{Mutex, PoisonError};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use chain::{GENESIS_HASH, canonical_json, record_hash};
pub use key::{KEY_ENV, OperatorKey, is_public_key, signature_verifies};
pub use local::{
    ChainHead, ChainProblem, LocalLog, ProblemKind, VerifyError, VerifyReport, verify_file,
};
pub use store_chain::{
    ImportReport, Standing, StoreChain, import_legacy_log, legacy_log_path, read_chain,
};
pub use verify::{ChainReport, RecordProblem, STEP_KEY_ALLOW, STEP_KEY_REVOKE, verify_chain};

/// Records control-plane operations. Implementations: [`LocalLog`], [`MultiRecorder`],
/// [`MemoryRecorder`], and the ledger's audit module.
pub trait Recorder: Send + Sync {
    /// Appends `entry` and returns it as recorded (with its sequence number and hashes).
    ///
    /// # Guarantees
    /// When this returns `Ok`, the record is durable (for [`LocalLog`]: written and fsync'd).
    ///
    /// # Errors
    /// Whatever kept the entry from being recorded; see [`AuditError::is_retryable`].
    fn record(&self, entry: AuditEntry) -> Result<AuditRecord, AuditError>;
}

impl<R: Recorder + ?Sized> Recorder for Box<R> {
    fn record(&self, entry: AuditEntry) -> Result<AuditRecord, AuditError> {
        (**self).record(entry)
    }
}

impl<R: Recorder + ?Sized> Recorder for std::sync::Arc<R> {
    fn record(&self, entry: AuditEntry) -> Result<AuditRecord, AuditError> {
        (**self).record(entry)
    }
}

/// One control-plane operation, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When it happened. Given by the caller (the engine passes the wall clock), which keeps
    /// recorders deterministic in tests.
    pub at: Timestamp,
    /// Who did it, e.g. `alice@host-1`.
    pub actor: String,
    /// The fleet.
    pub fleet: String,
    /// The revision being applied or rolled back, if any.
    pub revision: Option<u64>,
    /// The plan hash, if any.
    pub plan_hash: Option<String>,
    /// The step, e.g. `apply.start`, `unit.start web-0@r3`, `gate.pass web-0@r3`, `rollback`.
    pub step: String,
    /// How it went.
    pub outcome: AuditOutcome,
    /// Anything else worth keeping (ports, pids, durations, the diff); `null` if nothing.
    pub detail: serde_json::Value,
}

impl AuditEntry {
    /// An entry without revision, plan hash or detail; set those fields directly as needed.
    pub fn new(at: Timestamp, actor: &str, fleet: &str, step: &str, outcome: AuditOutcome) -> Self {
        Self {
            at,
            actor: actor.to_owned(),
            fleet: fleet.to_owned(),
            revision: None,
            plan_hash: None,
            step: step.to_owned(),
            outcome,
            detail: serde_json::Value::Null,
        }
    }
}

/// How a step went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum AuditOutcome {
    /// It succeeded (or, for a `*.start` step, it began).
    Ok,
    /// It failed.
    Failed {
        /// Why, for people.
        reason: String,
    },
    /// It was not attempted (e.g. a later wave after a failed gate).
    Skipped {
        /// Why.
        reason: String,
    },
    /// It was interrupted (Ctrl-C, lost lock).
    Cancelled {
        /// Why.
        reason: String,
    },
}

/// An entry as recorded: its place in the chain and its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// 1 for the first record, then +1 per record.
    pub seq: u64,
    /// The hash of the previous record ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// The entry.
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// The public key (hex) of the operator who signed it; covered by the hash. `None` for
    /// records of the old file log and records imported from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// Where an imported record came from (the old file, its seq and hash there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<serde_json::Value>,
    /// This record's hash ([`record_hash`] of the other fields).
    pub hash: String,
    /// The signer's ed25519 signature over the hash (hex); not covered by the hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl AuditRecord {
    /// Chains `entry` after the record `prev` (or as the first record when `None`), unsigned.
    ///
    /// # Errors
    /// [`AuditError::Encode`] if the entry cannot be encoded as JSON.
    pub fn chain(prev: Option<&ChainHead>, entry: AuditEntry) -> Result<Self, AuditError> {
        let mut record = Self::unsigned(prev, entry);
        record.seal()?;
        Ok(record)
    }

    /// `entry` placed after `prev`, not yet hashed: set [`AuditRecord::signer`] or
    /// [`AuditRecord::imported`], then [`AuditRecord::seal`].
    pub fn unsigned(prev: Option<&ChainHead>, entry: AuditEntry) -> Self {
        AuditRecord {
            seq: prev.map_or(1, |p| p.seq + 1),
            prev_hash: prev.map_or_else(|| GENESIS_HASH.to_owned(), |p| p.hash.clone()),
            entry,
            signer: None,
            imported: None,
            hash: String::new(),
            signature: None,
        }
    }

    /// Computes the hash over every other field (which must not change afterwards).
    ///
    /// # Errors
    /// [`AuditError::Encode`] if the entry cannot be encoded as JSON.
    pub fn seal(&mut self) -> Result<(), AuditError> {
        self.hash = record_hash(&self.to_json()?);
        Ok(())
    }

    /// The record as a JSON value (the form that is hashed and written).
    ///
    /// # Errors
    /// [`AuditError::Encode`].
    pub fn to_json(&self) -> Result<serde_json::Value, AuditError> {
        serde_json::to_value(self).map_err(|source| AuditError::Encode { source })
    }

    /// This record as a chain head.
    pub fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }
}

/// Why recording failed. Variants are named after the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log file could not be created or opened.
    #[error("cannot open the audit log {path}")]
    OpenLog {
        /// The log file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file lock that serialises appenders across processes could not be taken.
    #[error("cannot lock the audit log {path}")]
    LockLog {
        /// The log file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Reading the log failed.
    #[error("cannot read the audit log {path}")]
    ReadLog {
        /// The log file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A complete line of the log is not a record; appending after it would hide the damage.
    /// Run `verify` to see every problem.
    #[error("the audit log {path} is corrupt at line {line}: {reason}")]
    CorruptLog {
        /// The log file.
        path: std::path::PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Setting aside a torn last line (a write that never completed) failed.
    #[error("cannot set aside the torn tail of the audit log {path}")]
    RepairTornTail {
        /// The log file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing the record failed.
    #[error("cannot append to the audit log {path}")]
    AppendLog {
        /// The log file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Flushing the record to disk failed; it may or may not survive a crash.
    #[error("cannot sync the audit log {path} to disk")]
    SyncLog {
        /// The log file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The entry could not be encoded.
    #[error("cannot encode the audit record")]
    Encode {
        /// The cause.
        source: serde_json::Error,
    },
    /// The operator key file cannot be used.
    #[error("operator key {path}: {reason}")]
    Key {
        /// The key file.
        path: std::path::PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// The operator's key is not allowed to sign the fleet's audit chain.
    #[error(
        "your operator key {} ({}) is not allowed to sign the audit chain of fleet {fleet}; \
         it allows {}. Ask one of them to run `phoenix audit allow-key FILE --public-key {public_key} --name YOU`, \
         or use an allowed key with --operator-key or PHOENIX_OPERATOR_KEY",
        &public_key[..public_key.len().min(16)], key_path.display(), allowed.join(", ")
    )]
    KeyNotAllowed {
        /// The fleet.
        fleet: String,
        /// This operator's public key.
        public_key: String,
        /// Where it was read from.
        key_path: std::path::PathBuf,
        /// The keys that are allowed.
        allowed: Vec<String>,
    },
    /// The state store failed.
    #[error("audit chain in the state store")]
    Store {
        /// The cause.
        source: phoenix_state::StateError,
    },
    /// Other writers kept appending to the chain while this one tried.
    #[error("the audit chain of fleet {fleet} kept moving: gave up after {attempts} attempts")]
    Contended {
        /// The fleet.
        fleet: String,
        /// How many times it tried.
        attempts: usize,
    },
    /// A stored record is not a record.
    #[error("audit record {seq} of fleet {fleet} is corrupt: {reason}")]
    CorruptRecord {
        /// The fleet.
        fleet: String,
        /// Its seq.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// The old `audit.jsonl` does not verify, so it was not imported.
    #[error(
        "the old audit log {path} does not verify, so it was not imported into the state store: {reason}. \
         Keep it as evidence and move it aside (`mv {path} {path}.broken`) to start a new chain",
        path = path.display()
    )]
    LegacyLogDoesNotVerify {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// A [`MultiRecorder`] with no recorders was asked to record.
    #[error("no audit recorder is configured")]
    NoRecorders,
    /// Some recorders of a [`MultiRecorder`] failed (the others recorded the entry).
    #[error("{} audit recorder(s) failed: {}", failures.len(), failures.iter().map(|f| format!("{}: {}", f.recorder, f.error)).collect::<Vec<_>>().join("; "))]
    Recorders {
        /// Which failed, and why.
        failures: Vec<RecorderFailure>,
    },
    /// A recorder outside this crate (e.g. the ledger's) failed.
    #[error("audit recorder {recorder} failed")]
    External {
        /// Its name.
        recorder: String,
        /// Whether trying again may succeed (e.g. the ledger was unreachable).
        retryable: bool,
        /// The cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// One failed recorder of a [`MultiRecorder`].
#[derive(Debug)]
pub struct RecorderFailure {
    /// The name it was added under.
    pub recorder: String,
    /// Its error.
    pub error: AuditError,
}

impl AuditError {
    /// Whether recording the same entry again may succeed (an interrupted or timed-out I/O, an
    /// unreachable external recorder).
    pub fn is_retryable(&self) -> bool {
        use std::io::ErrorKind;
        match self {
            Self::LockLog { source, .. }
            | Self::ReadLog { source, .. }
            | Self::AppendLog { source, .. }
            | Self::SyncLog { source, .. } => {
                matches!(
                    source.kind(),
                    ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut
                )
            }
            Self::Recorders { failures } => failures.iter().all(|f| f.error.is_retryable()),
            Self::Store { source } => source.is_retryable(),
            Self::Contended { .. } => true,
            Self::External { retryable, .. } => *retryable,
            _ => false,
        }
    }
}

/// Fans each entry out to several recorders, in the order they were added.
///
/// Every recorder is tried even when an earlier one fails, so the local log keeps its record
/// while the ledger is unreachable. [`Recorder::record`] returns the first recorder's record if
/// all succeeded, and [`AuditError::Recorders`] listing the failures otherwise; use
/// [`MultiRecorder::record_each`] to see every result.
#[derive(Default)]
pub struct MultiRecorder {
    recorders: Vec<(String, Box<dyn Recorder>)>,
}

impl std::fmt::Debug for MultiRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.recorders.iter().map(|(name, _)| name))
            .finish()
    }
}

impl MultiRecorder {
    /// No recorders yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a recorder under `name` (used in error messages).
    #[must_use]
    pub fn with(mut self, name: &str, recorder: impl Recorder + 'static) -> Self {
        self.push(name, Box::new(recorder));
        self
    }

    /// Adds a recorder under `name`.
    pub fn push(&mut self, name: &str, recorder: Box<dyn Recorder>) {
        self.recorders.push((name.to_owned(), recorder));
    }

    /// The number of recorders.
    pub fn len(&self) -> usize {
        self.recorders.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.recorders.is_empty()
    }

    /// Records `entry` with every recorder and returns each result with its recorder's name.
    pub fn record_each(&self, entry: &AuditEntry) -> Vec<(&str, Result<AuditRecord, AuditError>)> {
        self.recorders
            .iter()
            .map(|(name, recorder)| (name.as_str(), recorder.record(entry.clone())))
            .collect()
    }
}

impl Recorder for MultiRecorder {
    fn record(&self, entry: AuditEntry) -> Result<AuditRecord, AuditError> {
        let mut first = None;
        let mut failures = Vec::new();
        for (name, result) in self.record_each(&entry) {
            match result {
                Ok(record) => {
                    first.get_or_insert(record);
                }
                Err(error) => failures.push(RecorderFailure {
                    recorder: name.to_owned(),
                    error,
                }),
            }
        }
        if !failures.is_empty() {
            return Err(AuditError::Recorders { failures });
        }
        first.ok_or(AuditError::NoRecorders)
    }
}

/// Keeps records in memory, chained exactly like [`LocalLog`]: for tests of code that records.
#[derive(Debug, Default)]
pub struct MemoryRecorder {
    records: Mutex<Vec<AuditRecord>>,
}

impl MemoryRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything recorded so far, in order.
    pub fn records(&self) -> Vec<AuditRecord> {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The steps recorded so far, in order (handy in assertions).
    pub fn steps(&self) -> Vec<String> {
        self.records().into_iter().map(|r| r.entry.step).collect()
    }
}

impl Recorder for MemoryRecorder {
    fn record(&self, entry: AuditEntry) -> Result<AuditRecord, AuditError> {
        // A panic elsewhere cannot leave the vector half-pushed, so a poisoned lock is usable.
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        let record = AuditRecord::chain(records.last().map(AuditRecord::head).as_ref(), entry)?;
        records.push(record.clone());
        Ok(record)
    }
}
