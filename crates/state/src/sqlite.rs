//! The embedded default: one SQLite file per state directory.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql, TransactionBehavior};

use crate::db::{Backend, Dialect, Fail, Row, Tx, Val, sqlite_placeholders};
use crate::error::{DbError, StateError};
use crate::logic;

/// The file name of the database inside the state directory.
pub const DATABASE_FILE: &str = "state.db";

/// How long a writer waits for another process's transaction before giving up with a
/// retryable error. Transactions here are a few statements long, so waiting this long means
/// something is stuck.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`StateStore`](crate::StateStore) in an SQLite database, `STATE_DIR/state.db`.
///
/// Several processes on one host may share the file (WAL mode; writers are serialised by
/// SQLite's own lock with a busy timeout). Within a process, calls are serialised on one
/// connection. Commits are durable (`synchronous = FULL`): an intent reported as recorded
/// survives a power cut, not only a `kill -9`.
pub struct SqliteStore {
    connection: Mutex<Connection>,
    path: Option<PathBuf>,
    /// The private directory of a snapshot this store reads (see
    /// [`SqliteStore::open_read_only`]), removed on drop.
    snapshot: Option<PathBuf>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some(dir) = self.snapshot.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `state_dir/state.db` and migrates its schema.
    ///
    /// # Errors
    /// [`StateError::CreateStateDir`], [`StateError::OpenSqlite`], [`StateError::Migrate`],
    /// [`StateError::SchemaTooNew`].
    pub fn open(state_dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StateError::CreateStateDir {
            path: state_dir.to_owned(),
            source,
        })?;
        let path = state_dir.join(DATABASE_FILE);
        let open_error = |source: rusqlite::Error| StateError::OpenSqlite {
            path: path.clone(),
            source: source.into(),
        };
        let connection = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_error)?;
        configure(&connection).map_err(open_error)?;
        let store = Self {
            connection: Mutex::new(connection),
            path: Some(path),
            snapshot: None,
        };
        logic::migrate(&store)?;
        Ok(store)
    }

    /// Opens `state_dir/state.db` for reading only: it is never created, migrated or written
    /// (every write fails), and the directory is not created either.
    ///
    /// When the database cannot be read in place — a read-only copy of a state directory in
    /// WAL mode without its `-shm` file, which SQLite cannot create there, or a schema older
    /// than this build reads — it is read from a private snapshot instead: `state.db` and its
    /// `-wal` file are copied to a new directory under the system's temporary directory, the
    /// log is replayed and the schema migrated there, and the copy is opened read-only
    /// (`immutable=1`). The snapshot is what was committed when it was taken, and is removed
    /// when the store is dropped.
    ///
    /// # Errors
    /// [`StateError::NoStateDir`] when there is no `state.db` (or it holds no Phoenix schema),
    /// [`StateError::SchemaTooNew`], [`StateError::OpenSqlite`] when it cannot be read even
    /// from a snapshot (the error of the read in place, which names the cause).
    pub fn open_read_only(state_dir: &Path) -> Result<Self, StateError> {
        let path = state_dir.join(DATABASE_FILE);
        if !path.is_file() {
            return Err(StateError::NoStateDir {
                dir: state_dir.to_owned(),
            });
        }
        let in_place = Self::open_read_only_at(&path, false);
        let Err(first) = in_place else {
            return in_place;
        };
        match first {
            StateError::NoStateDir { .. } | StateError::SchemaTooNew { .. } => Err(first),
            // An older schema, or not readable in place: a snapshot can still be read.
            _ => Self::open_snapshot(state_dir, &path).map_err(|snapshot| match snapshot {
                e @ (StateError::NoStateDir { .. } | StateError::SchemaTooNew { .. }) => e,
                _ => first,
            }),
        }
    }

    /// Opens `path` read-only and checks that its schema is this build's.
    fn open_read_only_at(path: &Path, immutable: bool) -> Result<Self, StateError> {
        let state_dir = path.parent().unwrap_or(Path::new(".")).to_owned();
        let open_error = |source: rusqlite::Error| StateError::OpenSqlite {
            path: path.to_owned(),
            source: source.into(),
        };
        let connection = if immutable {
            // `immutable=1`: no locks, no journal, no `-shm` (the file is a private copy).
            Connection::open_with_flags(
                format!("file:{}?immutable=1", uri_path(path)),
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_URI
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
        } else {
            Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
        }
        .map_err(open_error)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
        let store = Self {
            connection: Mutex::new(connection),
            path: Some(path.to_owned()),
            snapshot: None,
        };
        let version = store.read(crate::recorded_schema_version).map_err(|f| {
            f.at(|source| StateError::OpenSqlite {
                path: path.to_owned(),
                source,
            })
        })?;
        let supported = crate::schema::latest_version();
        match version {
            None | Some(0) => Err(StateError::NoStateDir { dir: state_dir }),
            Some(found) if found > supported => Err(StateError::SchemaTooNew { found, supported }),
            Some(found) if found < supported => Err(StateError::SchemaTooOld {
                location: path.display().to_string(),
                found,
                supported,
            }),
            Some(_) => Ok(store),
        }
    }

    /// Reads `path` (with its `-wal`) from a private, migrated, read-only copy.
    fn open_snapshot(state_dir: &Path, path: &Path) -> Result<Self, StateError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "phoenix-state-snapshot-{}-{nanos}",
            std::process::id()
        ));
        let copy_error = |source: std::io::Error| StateError::CreateStateDir {
            path: dir.clone(),
            source,
        };
        // 0700: the state holds the fleet's spec, environment included.
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&dir)
            .map_err(copy_error)?;
        let result = (|| {
            let wal = path.with_file_name(format!("{DATABASE_FILE}-wal"));
            for (from, name) in [
                (path.to_owned(), DATABASE_FILE.to_string()),
                (wal, format!("{DATABASE_FILE}-wal")),
            ] {
                if from == path || from.is_file() {
                    let to = dir.join(name);
                    std::fs::copy(&from, &to).map_err(copy_error)?;
                    // The copy keeps the original's mode, read-only in a read-only copy of a
                    // state dir; the snapshot is written once (log replay, migration).
                    std::fs::set_permissions(
                        &to,
                        std::os::unix::fs::PermissionsExt::from_mode(0o600),
                    )
                    .map_err(copy_error)?;
                }
            }
            {
                // Replays the log and migrates the copy, then folds the log into the file, so
                // that the read-only open below needs nothing beside it.
                let writable = Self::open(&dir)?;
                let connection = writable
                    .connection
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                connection
                    .execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")
                    .map_err(|source| StateError::OpenSqlite {
                        path: path.to_owned(),
                        source: source.into(),
                    })?;
            }
            let mut store =
                Self::open_read_only_at(&dir.join(DATABASE_FILE), true).map_err(|e| match e {
                    StateError::NoStateDir { .. } => StateError::NoStateDir {
                        dir: state_dir.to_owned(),
                    },
                    other => other,
                })?;
            store.path = Some(path.to_owned());
            Ok(store)
        })();
        match result {
            Ok(mut store) => {
                store.snapshot = Some(dir);
                Ok(store)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// A private in-memory store, gone when dropped: for tests of code that uses a
    /// [`StateStore`](crate::StateStore).
    ///
    /// # Errors
    /// [`StateError::OpenSqlite`], [`StateError::Migrate`].
    pub fn open_in_memory() -> Result<Self, StateError> {
        let open_error = |source: rusqlite::Error| StateError::OpenSqlite {
            path: ":memory:".into(),
            source: source.into(),
        };
        let connection = Connection::open_in_memory().map_err(open_error)?;
        configure(&connection).map_err(open_error)?;
        let store = Self {
            connection: Mutex::new(connection),
            path: None,
            snapshot: None,
        };
        logic::migrate(&store)?;
        Ok(store)
    }

    /// The database file; `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn run<T>(
        &self,
        behavior: TransactionBehavior,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, Fail>,
    ) -> Result<T, Fail> {
        // A panic while the mutex was held cannot have left a transaction half-committed: the
        // transaction was rolled back when it was dropped during unwinding. So the connection
        // is fine to use again.
        let mut connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let transaction = connection.transaction_with_behavior(behavior)?;
        let mut tx = SqliteTx { transaction };
        let value = f(&mut tx)?;
        tx.transaction.commit()?;
        Ok(value)
    }
}

/// `path` for a `file:` URI: `%`, `?` and `#` would otherwise end or escape the path.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.display().to_string().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

fn configure(connection: &Connection) -> Result<(), rusqlite::Error> {
    connection.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers never block the writer, and a commit is one append to the log.
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

impl Backend for SqliteStore {
    fn read<T>(&self, f: impl FnOnce(&mut dyn Tx) -> Result<T, Fail>) -> Result<T, Fail> {
        self.run(TransactionBehavior::Deferred, f)
    }

    fn write<T>(&self, f: impl FnOnce(&mut dyn Tx) -> Result<T, Fail>) -> Result<T, Fail> {
        // IMMEDIATE takes the write lock up front: a deferred transaction that reads first and
        // then writes fails with SQLITE_BUSY (without waiting) if another process wrote between.
        self.run(TransactionBehavior::Immediate, f)
    }
}

logic::impl_state_store!(SqliteStore);

struct SqliteTx<'c> {
    transaction: rusqlite::Transaction<'c>,
}

impl ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Val::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Val::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Val::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
        })
    }
}

fn value_from(column: usize, value: ValueRef<'_>) -> Result<Val, DbError> {
    match value {
        ValueRef::Null => Ok(Val::Null),
        ValueRef::Integer(v) => Ok(Val::Int(v)),
        ValueRef::Text(bytes) => String::from_utf8(bytes.to_vec())
            .map(Val::Text)
            .map_err(|e| DbError::Decode {
                column,
                reason: format!("text is not UTF-8: {e}"),
            }),
        other => Err(DbError::Decode {
            column,
            reason: format!("unexpected {:?}", other.data_type()),
        }),
    }
}

impl Tx for SqliteTx<'_> {
    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>, DbError> {
        let mut statement = self.transaction.prepare_cached(&sqlite_placeholders(sql))?;
        let columns = statement.column_count();
        let mut rows = statement.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let values = (0..columns)
                .map(|i| value_from(i, row.get_ref(i)?))
                .collect::<Result<_, DbError>>()?;
            out.push(Row(values));
        }
        Ok(out)
    }

    fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64, DbError> {
        let mut statement = self.transaction.prepare_cached(&sqlite_placeholders(sql))?;
        let changed = statement.execute(rusqlite::params_from_iter(params))?;
        Ok(u64::try_from(changed).unwrap_or(u64::MAX))
    }

    fn execute_batch(&mut self, sql: &str) -> Result<(), DbError> {
        Ok(self.transaction.execute_batch(sql)?)
    }

    fn now_ms(&mut self) -> Result<i64, DbError> {
        Ok(jiff::Timestamp::now().as_millisecond())
    }

    fn lock_fleet_row(&mut self, _fleet: &str) -> Result<(), DbError> {
        // Write transactions are IMMEDIATE: they already exclude every other writer.
        Ok(())
    }

    fn lock_for_migration(&mut self) -> Result<(), DbError> {
        Ok(())
    }

    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }
}

#[cfg(test)]
mod read_only_tests {
    use super::*;
    use crate::StateStore;

    /// A database at schema version 1, as an older Phoenix left it.
    fn version_1_database(dir: &Path) {
        let connection = Connection::open(dir.join(DATABASE_FILE)).unwrap();
        connection
            .execute_batch(
                "CREATE TABLE schema_version (version BIGINT PRIMARY KEY, applied_at_ms BIGINT NOT NULL)",
            )
            .unwrap();
        connection
            .execute_batch(&crate::schema::MIGRATIONS[0].ddl_for(Dialect::Sqlite))
            .unwrap();
        connection
            .execute("INSERT INTO schema_version VALUES (1, 0)", [])
            .unwrap();
    }

    /// Regression (a wrong or read-only state dir misleads): a store of an older schema is
    /// read through a migrated snapshot; the original is left exactly as it was.
    #[test]
    fn an_older_schema_is_read_from_a_snapshot_and_left_untouched() {
        if crate::schema::latest_version() < 2 {
            return; // Nothing older than version 1 exists.
        }
        let dir = tempfile::tempdir().unwrap();
        version_1_database(dir.path());
        let before = std::fs::read(dir.path().join(DATABASE_FILE)).unwrap();
        let store = SqliteStore::open_read_only(dir.path()).unwrap();
        assert!(store.snapshot.is_some(), "not read from a snapshot");
        assert!(store.list_fleets().unwrap().is_empty());
        let snapshot = store.snapshot.clone().unwrap();
        drop(store);
        assert!(!snapshot.exists(), "the snapshot was left behind");
        assert_eq!(
            std::fs::read(dir.path().join(DATABASE_FILE)).unwrap(),
            before
        );
    }

    /// Same defect: the snapshot sees commits that are still only in the `-wal` file.
    #[test]
    fn a_snapshot_replays_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let writer = SqliteStore::open(dir.path()).unwrap();
        let lease = writer
            .acquire_lock(
                "demo",
                &crate::LockRequest::new(
                    crate::LockOwner::this_process("apply"),
                    Duration::from_secs(30),
                ),
            )
            .unwrap()
            .lease;
        writer.release_lock(&lease).unwrap();
        let copy = tempfile::tempdir().unwrap();
        std::fs::copy(
            dir.path().join(DATABASE_FILE),
            copy.path().join(DATABASE_FILE),
        )
        .unwrap();
        std::fs::copy(
            dir.path().join(format!("{DATABASE_FILE}-wal")),
            copy.path().join(format!("{DATABASE_FILE}-wal")),
        )
        .unwrap();
        let store =
            SqliteStore::open_snapshot(copy.path(), &copy.path().join(DATABASE_FILE)).unwrap();
        assert_eq!(store.list_fleets().unwrap(), ["demo"]);
        assert!(
            !copy.path().join(format!("{DATABASE_FILE}-shm")).exists(),
            "the copy was written to"
        );
    }
}
