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
        };
        logic::migrate(&store)?;
        Ok(store)
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
