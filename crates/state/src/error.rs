//! The one error type of this crate.

use std::path::PathBuf;

use crate::types::{IntentId, LockHolder, RevisionNumber};

/// Why a state store call failed. Variants are named after the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state directory could not be created.
    #[error("cannot create the state directory {path}")]
    CreateStateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The SQLite database could not be opened or configured.
    #[error("cannot open the SQLite state database {path}")]
    OpenSqlite {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: DbError,
    },
    /// The PostgreSQL server could not be reached or refused the connection.
    #[error("cannot connect to the PostgreSQL state database at {url}")]
    ConnectPostgres {
        /// The URL, password removed.
        url: String,
        /// The cause.
        source: DbError,
    },
    /// `--state-url` has a scheme this crate does not know.
    #[error("unsupported state URL {url}: expected postgres:// or postgresql://")]
    UnsupportedStateUrl {
        /// The URL, password removed.
        url: String,
    },
    /// A schema migration failed; the database is left at the previous version.
    #[error("cannot migrate the state schema to version {to_version}")]
    Migrate {
        /// The version being applied.
        to_version: u32,
        /// The cause.
        source: DbError,
    },
    /// The database was migrated by a newer Phoenix.
    #[error(
        "the state schema is at version {found}, newer than the {supported} this Phoenix supports; upgrade Phoenix"
    )]
    SchemaTooNew {
        /// The version found.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// A reading command found no state where it was told to look (a mistyped `--state-dir`,
    /// say). Reading commands never create a store, so that a typo cannot look like an empty
    /// fleet.
    #[error(
        "no Phoenix state in {} (no {}): check --state-dir, or run `phoenix apply` to create one",
        dir.display(),
        crate::sqlite::DATABASE_FILE
    )]
    NoStateDir {
        /// The state directory looked in.
        dir: PathBuf,
    },
    /// A reading command found no Phoenix schema in the PostgreSQL database at `url`.
    #[error(
        "no Phoenix state in the PostgreSQL database at {url} (no schema_version table): check \
         --state-url, or run `phoenix apply` to create one"
    )]
    NoStateAtUrl {
        /// The URL, password removed.
        url: String,
    },
    /// A read-only open found a schema older than this Phoenix reads, and may not migrate it.
    #[error(
        "the state schema at {location} is at version {found}, older than the {supported} this \
         Phoenix reads; run a changing command (`phoenix apply`, `rollback` or `destroy`) with \
         this Phoenix to migrate it"
    )]
    SchemaTooOld {
        /// Where the store is (URL, password removed).
        location: String,
        /// The version found.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// Another holder has a live lease on the fleet's deploy lock.
    #[error("fleet {fleet} is locked by {holder}")]
    LockHeld {
        /// The fleet.
        fleet: String,
        /// Who holds it (boxed to keep `Result`s small).
        holder: Box<LockHolder>,
    },
    /// The caller's lease was taken over by someone else; it must stop writing.
    #[error("the deploy lock on fleet {fleet} (token {token}) was lost{}", match held_by {
        Some(holder) => format!(" to {holder}"),
        None => String::new(),
    })]
    LockLost {
        /// The fleet.
        fleet: String,
        /// The caller's (stale) token.
        token: u64,
        /// The current holder, if any.
        held_by: Option<Box<LockHolder>>,
    },
    /// A lease duration of zero or too long to represent.
    #[error("invalid lease duration {ttl:?}")]
    InvalidLeaseDuration {
        /// The requested duration.
        ttl: std::time::Duration,
    },
    /// Acquiring the deploy lock failed in the database.
    #[error("cannot acquire the deploy lock on fleet {fleet}")]
    AcquireLock {
        /// The fleet.
        fleet: String,
        /// The cause.
        source: DbError,
    },
    /// Renewing a lease failed in the database.
    #[error("cannot renew the deploy lock on fleet {fleet}")]
    RenewLock {
        /// The fleet.
        fleet: String,
        /// The cause.
        source: DbError,
    },
    /// Releasing a lease failed in the database.
    #[error("cannot release the deploy lock on fleet {fleet}")]
    ReleaseLock {
        /// The fleet.
        fleet: String,
        /// The cause.
        source: DbError,
    },
    /// Reading the lock holder failed.
    #[error("cannot read the deploy lock of fleet {fleet}")]
    ReadLock {
        /// The fleet.
        fleet: String,
        /// The cause.
        source: DbError,
    },
    /// A batch of writes failed in the database and was rolled back as a whole.
    #[error("cannot write the state of fleet {fleet}")]
    WriteBatch {
        /// The fleet.
        fleet: String,
        /// The cause.
        source: DbError,
    },
    /// Reading the list of fleets failed.
    #[error("cannot list fleets")]
    ReadFleets {
        /// The cause.
        source: DbError,
    },
    /// Reading revisions failed.
    #[error("cannot read the revisions of fleet {fleet}")]
    ReadRevisions {
        /// The fleet.
        fleet: String,
        /// The cause.
        source: DbError,
    },
    /// Reading instance records failed.
    #[error("cannot read the instance records of fleet {fleet}")]
    ReadInstances {
        /// The fleet.
        fleet: String,
        /// The cause.
        source: DbError,
    },
    /// Reading intents failed.
    #[error("cannot read the intents of fleet {fleet}")]
    ReadIntents {
        /// The fleet.
        fleet: String,
        /// The cause.
        source: DbError,
    },
    /// Reading or writing a fleet's audit chain, its keys or its anchor failed.
    #[error("cannot {step} the audit chain of fleet {fleet}")]
    Audit {
        /// What was being done, e.g. `append to`.
        step: &'static str,
        /// The fleet (`-` for store-wide reads).
        fleet: String,
        /// The cause.
        source: DbError,
    },
    /// An audit record was appended after a head that is no longer the chain's head (another
    /// appender was first). Build the record again on the new head.
    #[error(
        "the audit chain of fleet {fleet} moved: record {tried} does not follow its head {head}"
    )]
    AuditChainMoved {
        /// The fleet.
        fleet: String,
        /// The seq of the record that was refused.
        tried: u64,
        /// The seq of the chain's head.
        head: u64,
    },
    /// Reading or writing the API tokens of `phoenix serve` failed.
    #[error("cannot {step} the API tokens")]
    ApiTokens {
        /// What was being done, e.g. `create`.
        step: &'static str,
        /// The cause.
        source: DbError,
    },
    /// Reading or writing the runs of one-shot jobs failed.
    #[error("cannot {step} the job runs of fleet {fleet}")]
    JobRuns {
        /// What was being done, e.g. `record`.
        step: &'static str,
        /// The fleet.
        fleet: String,
        /// The cause.
        source: DbError,
    },
    /// Reading or writing the sealed secrets of a fleet failed.
    #[error("cannot {step} the secrets of fleet {fleet}")]
    Secrets {
        /// What was being done, e.g. `write`.
        step: &'static str,
        /// The fleet.
        fleet: String,
        /// The cause.
        source: DbError,
    },
    /// Another command changed a secret since this one read it.
    #[error(
        "secret `{name}` of fleet {fleet} was changed by another command meanwhile; nothing was written: run the command again"
    )]
    SecretChanged {
        /// The fleet.
        fleet: String,
        /// The secret.
        name: String,
    },
    /// A live (neither revoked nor expired) API token already has this name.
    #[error("an API token named {name} exists already: revoke it first, or choose another name")]
    ApiTokenExists {
        /// The name.
        name: String,
    },
    /// A write named a revision that does not exist.
    #[error("fleet {fleet} has no revision {revision}")]
    RevisionNotFound {
        /// The fleet.
        fleet: String,
        /// The revision asked for.
        revision: RevisionNumber,
    },
    /// A revision's outcome may not change that way (e.g. `applied` back to `pending`).
    #[error("revision {revision} of fleet {fleet} cannot go from {from} to {to}")]
    InvalidRevisionTransition {
        /// The fleet.
        fleet: String,
        /// The revision.
        revision: RevisionNumber,
        /// Its current outcome.
        from: &'static str,
        /// The refused outcome.
        to: &'static str,
    },
    /// A write named an intent that does not exist in this fleet.
    #[error("fleet {fleet} has no {id}")]
    IntentNotFound {
        /// The fleet.
        fleet: String,
        /// The intent.
        id: IntentId,
    },
    /// An intent was closed twice: a bug in the caller, since recovery only sees open intents.
    #[error("{id} of fleet {fleet} is already closed")]
    IntentAlreadyClosed {
        /// The fleet.
        fleet: String,
        /// The intent.
        id: IntentId,
    },
    /// A stored row could not be decoded (edited by hand, or written by an incompatible build).
    #[error("corrupt {table} row {key}: {reason}")]
    CorruptRecord {
        /// The table.
        table: &'static str,
        /// The row's key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl StateError {
    /// Whether trying the same call again may succeed: the database was busy, a transaction
    /// was chosen as a deadlock or serialization victim, or the connection dropped (the
    /// PostgreSQL store reconnects on the next call). Every failed call was rolled back, so a
    /// retry never applies a batch twice.
    ///
    /// [`StateError::LockHeld`] is not retryable in this sense: wait for the lease to expire or
    /// ask the holder.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::OpenSqlite { source, .. }
            | Self::ConnectPostgres { source, .. }
            | Self::AcquireLock { source, .. }
            | Self::RenewLock { source, .. }
            | Self::ReleaseLock { source, .. }
            | Self::ReadLock { source, .. }
            | Self::WriteBatch { source, .. }
            | Self::ReadFleets { source }
            | Self::ReadRevisions { source, .. }
            | Self::ReadInstances { source, .. }
            | Self::ReadIntents { source, .. }
            | Self::Audit { source, .. }
            | Self::ApiTokens { source, .. }
            | Self::JobRuns { source, .. }
            | Self::Migrate { source, .. } => source.is_transient(),
            _ => false,
        }
    }
}

/// An error from a database driver.
///
/// The drivers' messages already include their cause (rusqlite prints the SQLite message that
/// its `source()` repeats as "Error code 1544: ..."; postgres prints "db error: ERROR: ..."
/// and returns the same database error as its source), so this type shows the driver's
/// message and does not chain the driver error as a `source()`: a printed chain then states
/// the cause once.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// From SQLite.
    #[error("{0}")]
    Sqlite(rusqlite::Error),
    /// From PostgreSQL.
    #[error("{0}")]
    Postgres(postgres::Error),
    /// A value of an unexpected type came back from a query.
    #[error("unexpected value in column {column}: {reason}")]
    Decode {
        /// The column index.
        column: usize,
        /// What was found.
        reason: String,
    },
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sqlite(e)
    }
}

impl From<postgres::Error> for DbError {
    fn from(e: postgres::Error) -> Self {
        DbError::Postgres(e)
    }
}

impl DbError {
    /// Whether the failure is a transient condition of the database (busy, deadlock,
    /// serialization failure, lost connection) rather than a bug or bad data.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            Self::Sqlite(_) | Self::Decode { .. } => false,
            Self::Postgres(e) => {
                if e.is_closed() {
                    return true;
                }
                match e.code() {
                    // Class 08: connection exceptions; 40001 serialization failure; 40P01
                    // deadlock; 57P01-57P03: the server is shutting down or starting up.
                    Some(code) => {
                        let code = code.code();
                        code.starts_with("08")
                            || matches!(code, "40001" | "40P01" | "57P01" | "57P02" | "57P03")
                    }
                    // No SQLSTATE: transient only if it happened on the wire (an I/O error), not
                    // in encoding or decoding values.
                    None => std::error::Error::source(e)
                        .is_some_and(|cause| cause.downcast_ref::<std::io::Error>().is_some()),
                }
            }
        }
    }
}
