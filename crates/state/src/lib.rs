//! Phoenix's deploy state: per fleet, the revisions applied (desired spec, placement, outcome),
//! a record of every unit the engine runs, write-ahead intents, and the deploy lock with a
//! lease. One trait, [`StateStore`], with two backends: [`SqliteStore`] (embedded default,
//! `--state-dir`) and [`PostgresStore`] (`--state-url postgres://...`), which pass one
//! conformance suite (`conformance`, behind the `testing` feature).
//!
//! ```
//! use std::time::Duration;
//! use phoenix_state::{LockOwner, LockRequest, NewRevision, RevisionOutcome, StateStore, SqliteStore};
//!
//! let store = SqliteStore::open_in_memory()?;
//! let grant = store.acquire_lock("demo", &LockRequest::new(LockOwner::this_process("apply"), Duration::from_secs(30)))?;
//! let revision = store.create_revision(&grant.lease, NewRevision {
//!     spec_json: "{}".into(), placement_json: "{}".into(), plan_hash: "abc".into(), actor: "alice@host".into(),
//! })?;
//! store.set_revision_outcome(&grant.lease, revision.number, RevisionOutcome::Applied)?;
//! assert_eq!(store.latest_applied_revision("demo")?.map(|r| r.number), Some(revision.number));
//! store.release_lock(&grant.lease)?;
//! # Ok::<(), phoenix_state::StateError>(())
//! ```
//!
//! # How an engine stays crash-safe with this store
//!
//! The rule is *write intent before acting*: whatever happens outside the store (a process
//! started or stopped, a snapshot taken or restored) is announced by an intent committed
//! *before* the action and closed *after* it, so that after a `kill -9` at any instant the open
//! intents list exactly the actions that may or may not have happened.
//!
//! 1. **Lock.** [`StateStore::acquire_lock`] with a short TTL (e.g. 15 s), renewed from a
//!    background thread every third of it. On [`StateError::LockHeld`], if the holder is on
//!    this host ([`LockOwner::host`] equals [`this_host`]) and its pid no longer exists, the
//!    holder was killed: ask again with [`LockRequest::take_over_token`] set to its token
//!    instead of waiting for the lease to expire. Otherwise refuse and show the holder. If a
//!    renewal fails with [`StateError::LockLost`], stop acting at once: someone else owns the
//!    fleet now, and every further write with the old lease is refused anyway (fencing).
//! 2. **Recover** before planning, every time (not only when [`LockGrant::took_over`] says a
//!    previous apply died): for each of [`StateStore::open_intents`], oldest first, look the
//!    unit up in the provider *by its unit id* and resolve the intent:
//!    - `start`: if the process exists, either adopt it (write its handle into the instance
//!      record and close the intent `Done` in one [`StateStore::write_atomically`] batch) or
//!      stop it and close the intent `Failed`; if it does not, close it `Failed`.
//!    - `stop`: stop again (stopping is idempotent), then delete the record and close `Done`.
//!    - `snapshot`: a snapshot may be partial; discard it and close `Failed`.
//!    - `restore`: restore again (idempotent from the same snapshot) or close `Failed` and let
//!      the rollback redo it.
//!
//!    Then mark a `Pending` revision left by the dead apply `Failed { reason: "interrupted" }`,
//!    and stop any provider unit of the fleet that has no instance record (none should exist,
//!    since records are written before starting, but this is what guarantees "no orphans").
//! 3. **Act**, for each unit action of the plan:
//!    - start: one batch `[UpsertInstance { desired: Running, observed: Unknown, handle: null },
//!      RecordIntent(Start)]`; then start the process under the unit id (a provider start of a
//!      unit id that already runs returns the existing process, which is what makes a retried
//!      start never create a duplicate); then one batch `[UpsertInstance { observed: Starting,
//!      handle }, CloseIntent(Done)]`; then the health gate, then `observed: Running`.
//!    - stop: one batch `[UpsertInstance { desired: Stopped }, RecordIntent(Stop)]`; stop; then
//!      `[DeleteInstance, CloseIntent(Done)]`.
//!    - backups: `RecordIntent(Snapshot)` before copying, closed after; the same for restore.
//! 4. **Finish**: [`StateStore::set_revision_outcome`] (`Applied`, `Failed`, or
//!    `RolledBack { to }` after an automatic rollback; a rollback to an older revision asked
//!    for by a person is best a *new* revision carrying the old spec, so that
//!    [`StateStore::latest_applied_revision`] is always what runs), anchor the audit log head
//!    with [`StateStore::anchor_audit_head`], release the lock.
//!
//! Because every step either happened and is recorded, or is announced by an open intent,
//! recovery followed by a fresh plan against the records converges: exactly the declared
//! processes, no orphans, no duplicates.

mod db;
mod error;
mod logic;
mod postgres;
mod schema;
pub mod secrets;
mod sqlite;
mod store;
mod types;

#[cfg(feature = "testing")]
pub mod conformance;

use std::path::Path;

pub use error::{DbError, StateError};
pub use postgres::PostgresStore;
pub use sqlite::{DATABASE_FILE, SqliteStore};
pub use store::StateStore;
pub use types::{
    ApiToken, AuditAnchor, AuditKey, AuditKeyChange, AuditRow, DesiredState, InstanceRecord,
    InstanceState, Intent, IntentId, IntentOp, IntentOutcome, JobOutcome, JobRun, JobRunRecord,
    Lease, LockGrant, LockHolder, LockOwner, LockRequest, MAX_JOB_OUTPUT, NewApiToken, NewIntent,
    NewRevision, ObservedState, Revision, RevisionNumber, RevisionOutcome, UnitId, Write, Written,
    this_host,
};

/// The newest schema version this build of Phoenix reads and writes.
pub fn schema_version() -> u32 {
    schema::latest_version()
}

/// Opens the state store the CLI options name: PostgreSQL for a `postgres://` or
/// `postgresql://` `state_url`, otherwise SQLite in `state_dir` (created if needed). An empty
/// `state_url` counts as none.
///
/// # Errors
/// [`StateError::UnsupportedStateUrl`] for another scheme; otherwise as
/// [`SqliteStore::open`] or [`PostgresStore::connect`].
pub fn open(state_dir: &Path, state_url: Option<&str>) -> Result<Box<dyn StateStore>, StateError> {
    match state_url.map(str::trim).filter(|url| !url.is_empty()) {
        None => Ok(Box::new(SqliteStore::open(state_dir)?)),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Box::new(PostgresStore::connect(url)?))
        }
        Some(url) => Err(StateError::UnsupportedStateUrl {
            url: postgres::redact_password(url),
        }),
    }
}

/// Opens the state store the CLI options name **for reading only**, for the commands that only
/// report (`status`, `history`, `logs`): like [`open`], but it never creates, migrates or
/// writes anything, and every write through the returned store fails.
///
/// - SQLite (`state_url` empty): `state_dir/state.db` must exist. It is opened with
///   `SQLITE_OPEN_READ_ONLY`. A copy of a state directory that cannot be read in place (a
///   read-only directory without the `-shm` file that WAL mode needs, or a schema older than
///   this build reads) is read from a private snapshot: the database and its `-wal` file are
///   copied to a temporary directory, brought up to date there, and opened read-only; the
///   snapshot is deleted when the store is dropped.
/// - PostgreSQL: connects, checks that the schema exists and is current, and runs every
///   transaction read-only.
///
/// # Errors
/// [`StateError::NoStateDir`] when `state_dir` has no `state.db` (the message says to check
/// `--state-dir` or run `phoenix apply`), [`StateError::NoStateAtUrl`] for a database without
/// a Phoenix schema, [`StateError::SchemaTooNew`], [`StateError::SchemaTooOld`] (PostgreSQL
/// only), [`StateError::UnsupportedStateUrl`]; otherwise as [`SqliteStore::open_read_only`]
/// or [`PostgresStore::connect_read_only`].
pub fn open_read_only(
    state_dir: &Path,
    state_url: Option<&str>,
) -> Result<Box<dyn StateStore>, StateError> {
    match state_url.map(str::trim).filter(|url| !url.is_empty()) {
        None => Ok(Box::new(SqliteStore::open_read_only(state_dir)?)),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Box::new(PostgresStore::connect_read_only(url)?))
        }
        Some(url) => Err(StateError::UnsupportedStateUrl {
            url: postgres::redact_password(url),
        }),
    }
}

/// The schema version recorded in the store; `None` when there is no `schema_version` table
/// (not a Phoenix store, or an empty one).
fn recorded_schema_version(tx: &mut dyn db::Tx) -> Result<Option<u32>, db::Fail> {
    let exists = match tx.dialect() {
        db::Dialect::Sqlite => {
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        }
        db::Dialect::Postgres => {
            "SELECT count(*)::bigint FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = 'schema_version'"
        }
    };
    if tx
        .query(exists, &[])?
        .first()
        .map(|r| r.int(0))
        .transpose()?
        != Some(1)
    {
        return Ok(None);
    }
    let rows = tx.query("SELECT max(version) FROM schema_version", &[])?;
    let version = rows.first().map(|r| r.opt_int(0)).transpose()?.flatten();
    Ok(Some(
        version.map_or(0, |v| u32::try_from(v).unwrap_or(u32::MAX)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_without_url_creates_sqlite_in_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("nested/.phoenix");
        let store = open(&state_dir, None).unwrap();
        assert!(store.list_fleets().unwrap().is_empty());
        assert!(state_dir.join(DATABASE_FILE).exists());
        let store = open(&state_dir, Some("")).unwrap();
        assert!(store.list_fleets().unwrap().is_empty());
    }

    #[test]
    fn open_refuses_unknown_url_schemes() {
        let dir = tempfile::tempdir().unwrap();
        let err = open(dir.path(), Some("mysql://u:pw@h/db"))
            .err()
            .expect("must refuse");
        assert!(
            matches!(err, StateError::UnsupportedStateUrl { ref url } if url == "mysql://u:***@h/db"),
            "{err}"
        );
    }

    #[test]
    fn this_process_names_user_host_and_pid() {
        let owner = LockOwner::this_process("apply");
        assert_eq!(owner.pid, std::process::id());
        assert_eq!(owner.host(), this_host());
        assert!(
            owner.who.ends_with(&format!("@{}", this_host())),
            "{}",
            owner.who
        );
        assert!(!owner.who.starts_with('@'), "{}", owner.who);
        // Without $USER (as in CI) the uid's name is looked up instead.
        if let Some(name) = super::types::user_from_passwd() {
            assert!(!name.is_empty() && !name.contains(':'), "{name}");
        }
    }

    #[test]
    fn unit_ids_name_instance_and_revision() {
        let unit = UnitId::new("web-0", RevisionNumber(3));
        assert_eq!(unit.as_str(), "web-0@r3");
        assert_eq!(unit.parts(), Some(("web-0", RevisionNumber(3))));
        assert_eq!(UnitId::from_raw("odd").parts(), None);
    }

    #[test]
    fn revision_outcome_transitions() {
        use RevisionOutcome::*;
        let failed = Failed { reason: "x".into() };
        let rolled = RolledBack {
            to: RevisionNumber(1),
        };
        assert!(Pending.may_become(&Applied));
        assert!(Pending.may_become(&failed));
        assert!(Applied.may_become(&rolled));
        assert!(failed.may_become(&rolled));
        assert!(Applied.may_become(&Applied));
        assert!(!Applied.may_become(&Pending));
        assert!(!Applied.may_become(&failed));
        assert!(!rolled.may_become(&Applied));
    }

    #[test]
    fn a_schema_newer_than_this_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        let connection = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        connection
            .execute(
                "INSERT INTO schema_version (version, applied_at_ms) VALUES (?1, 0)",
                [i64::from(schema_version()) + 1],
            )
            .unwrap();
        drop(connection);
        let err = SqliteStore::open(dir.path()).expect_err("must refuse");
        assert!(
            matches!(err, StateError::SchemaTooNew { found, .. } if found == schema_version() + 1),
            "{err}"
        );
    }

    #[test]
    fn reopening_does_not_migrate_twice() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        drop(SqliteStore::open(dir.path()).unwrap());
        let connection = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        let versions: i64 = connection
            .query_row("SELECT count(*) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(versions, i64::from(schema_version()));
    }

    /// A SQLite state dir migrated only up to `version`, as an older Phoenix left it, with one
    /// fleet, `old-fleet`.
    fn store_at_version(version: u32) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let connection = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        connection
            .execute_batch(
                "CREATE TABLE schema_version (version BIGINT PRIMARY KEY, applied_at_ms BIGINT NOT NULL)",
            )
            .unwrap();
        for m in schema::MIGRATIONS.iter().filter(|m| m.version <= version) {
            connection
                .execute_batch(&m.ddl_for(db::Dialect::Sqlite))
                .unwrap();
            connection
                .execute(
                    "INSERT INTO schema_version VALUES (?1, 0)",
                    [i64::from(m.version)],
                )
                .unwrap();
        }
        connection
            .execute("INSERT INTO fleets (name) VALUES ('old-fleet')", [])
            .unwrap();
        dir
    }

    /// A store last migrated by a Phoenix without fleet generations (schema version 6) opens
    /// read-only and read-write, keeps its fleets, and starts their generations at 0.
    #[test]
    fn a_version_6_store_migrates_to_fleet_generations() {
        let dir = store_at_version(6);
        let read = open_read_only(dir.path(), None).unwrap();
        assert_eq!(read.fleet_generation("old-fleet").unwrap(), Some(0));
        drop(read);
        let store = open(dir.path(), None).unwrap();
        assert_eq!(store.fleet_generation("old-fleet").unwrap(), Some(0));
        assert_eq!(store.fleet_generation("no-such-fleet").unwrap(), None);
        assert_eq!(schema_version(), 7);
    }

    /// A store last migrated by a Phoenix without job runs (schema version 3) opens read-only
    /// and read-write, keeps its rows, and gains the `job_runs` table.
    #[test]
    fn a_version_3_store_migrates_to_job_runs_and_keeps_its_rows() {
        let dir = store_at_version(3);
        let read = open_read_only(dir.path(), None).unwrap();
        assert_eq!(read.list_fleets().unwrap(), ["old-fleet"]);
        assert!(read.job_runs("old-fleet").unwrap().is_empty());
        drop(read);
        let store = open(dir.path(), None).unwrap();
        assert_eq!(store.list_fleets().unwrap(), ["old-fleet"]);
        assert!(store.job_runs("old-fleet").unwrap().is_empty());
        assert!(schema_version() >= 4);
    }

    /// A store last migrated by a Phoenix without secrets (schema version 4) opens read-only
    /// and read-write, keeps its rows, and gains the `secrets` and `secret_versions` tables.
    #[test]
    fn a_version_4_store_migrates_to_secrets_and_keeps_its_rows() {
        let dir = store_at_version(4);
        let read = open_read_only(dir.path(), None).unwrap();
        assert_eq!(read.list_fleets().unwrap(), ["old-fleet"]);
        assert!(read.secrets("old-fleet").unwrap().is_empty());
        drop(read);
        let store = open(dir.path(), None).unwrap();
        assert!(store.secrets("old-fleet").unwrap().is_empty());
        assert!(store.secret_history("old-fleet").unwrap().is_empty());
        assert!(schema_version() >= 6);
    }

    /// A store last migrated by a Phoenix without API tokens (schema version 2) opens, keeps
    /// its rows, and gains the token table.
    #[test]
    fn a_version_2_store_migrates_to_api_tokens_and_keeps_its_rows() {
        let dir = store_at_version(2);
        // Reading commands see it through a migrated snapshot, before anything migrated it.
        let read = open_read_only(dir.path(), None).unwrap();
        assert_eq!(read.list_fleets().unwrap(), ["old-fleet"]);
        assert!(read.list_api_tokens().unwrap().is_empty());
        drop(read);
        let store = open(dir.path(), None).unwrap();
        assert_eq!(store.list_fleets().unwrap(), ["old-fleet"]);
        let token = store
            .create_api_token(&NewApiToken {
                name: "ci".into(),
                role: "viewer".into(),
                secret_sha256: "ab".repeat(32),
                valid_for: None,
            })
            .unwrap();
        assert_eq!(
            store.api_token_by_secret(&"ab".repeat(32)).unwrap(),
            Some(token)
        );
        drop(store);
        let connection = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        let version: i64 = connection
            .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, i64::from(schema_version()));
        assert!(schema_version() >= 3);
    }
}
