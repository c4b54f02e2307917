//! The shared backend: a PostgreSQL database, for control planes on several hosts.

use std::error::Error as StdError;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, Config, IsolationLevel, NoTls};

use crate::db::{Backend, Dialect, Fail, Row, Tx, Val};
use crate::error::{DbError, StateError};
use crate::logic;

/// Any constant will do, as long as nothing else in the database uses it: it names the
/// advisory lock that serialises schema migrations of concurrent first connections.
const MIGRATION_LOCK_KEY: i64 = 0x0070_686f_656e_6978; // "phoenix"

/// Used when the URL does not say: an unreachable server should fail an apply in seconds, not
/// hang it.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`StateStore`](crate::StateStore) in a PostgreSQL database.
///
/// The tables live in the connection's default schema (choose another with
/// `?options=-csearch_path%3Dname` in the URL). Writers of one fleet are serialised by a row
/// lock on the fleet; lease times use the server's clock, so clients on hosts with skewed
/// clocks still agree on when a lease expires. A dropped connection fails the call in
/// progress with a retryable error and is re-established on the next call.
///
/// The connection is not encrypted (`NoTls`): use it on a trusted network or through a
/// local tunnel.
pub struct PostgresStore {
    config: Config,
    url_for_errors: String,
    client: Mutex<Option<Client>>,
    /// Every transaction read-only ([`PostgresStore::connect_read_only`]).
    read_only: bool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.url_for_errors)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`) and migrates the schema.
    ///
    /// # Errors
    /// [`StateError::ConnectPostgres`] (retryable when the server was unreachable),
    /// [`StateError::Migrate`], [`StateError::SchemaTooNew`].
    pub fn connect(url: &str) -> Result<Self, StateError> {
        let store = Self::connect_only(url, false)?;
        logic::migrate(&store)?;
        Ok(store)
    }

    /// Connects to `url` for reading only: the schema is checked, never created or migrated,
    /// and every transaction is read-only, so every write fails.
    ///
    /// # Errors
    /// [`StateError::ConnectPostgres`], [`StateError::NoStateAtUrl`] when the database has no
    /// Phoenix schema, [`StateError::SchemaTooNew`], [`StateError::SchemaTooOld`].
    pub fn connect_read_only(url: &str) -> Result<Self, StateError> {
        let store = Self::connect_only(url, true)?;
        let version = store.read(crate::recorded_schema_version).map_err(|f| {
            f.at(|source| StateError::ConnectPostgres {
                url: store.url_for_errors.clone(),
                source,
            })
        })?;
        let supported = crate::schema::latest_version();
        match version {
            None | Some(0) => Err(StateError::NoStateAtUrl {
                url: store.url_for_errors.clone(),
            }),
            Some(found) if found > supported => Err(StateError::SchemaTooNew { found, supported }),
            Some(found) if found < supported => Err(StateError::SchemaTooOld {
                location: store.url_for_errors.clone(),
                found,
                supported,
            }),
            Some(_) => Ok(store),
        }
    }

    fn connect_only(url: &str, read_only: bool) -> Result<Self, StateError> {
        let url_for_errors = redact_password(url);
        let mut config = Config::from_str(url).map_err(|e| StateError::ConnectPostgres {
            url: url_for_errors.clone(),
            source: e.into(),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("phoenix");
        }
        let client = config
            .connect(NoTls)
            .map_err(|e| StateError::ConnectPostgres {
                url: url_for_errors.clone(),
                source: e.into(),
            })?;
        Ok(Self {
            config,
            url_for_errors,
            client: Mutex::new(Some(client)),
            read_only,
        })
    }

    /// The URL connected to, password removed.
    pub fn url(&self) -> &str {
        &self.url_for_errors
    }

    fn run<T>(
        &self,
        read_only: bool,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, Fail>,
    ) -> Result<T, Fail> {
        // A panic while the mutex was held dropped the transaction, which rolls it back; the
        // connection is fine to use again.
        let mut slot = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = Some(self.config.connect(NoTls)?);
        }
        let Some(client) = slot.as_mut() else {
            unreachable!("connected just above")
        };
        let result = run_in_transaction(client, read_only || self.read_only, f);
        if client.is_closed() {
            // Reconnect on the next call rather than fail every call from now on.
            *slot = None;
        }
        result
    }
}

fn run_in_transaction<T>(
    client: &mut Client,
    read_only: bool,
    f: impl FnOnce(&mut dyn Tx) -> Result<T, Fail>,
) -> Result<T, Fail> {
    let transaction = if read_only {
        // REPEATABLE READ: reads that take several statements see one snapshot.
        client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?
    } else {
        // READ COMMITTED plus the fleet row lock (see `lock_fleet_row`): once the lock is held,
        // every later statement sees everything committed before it.
        client.transaction()?
    };
    let mut tx = PostgresTx { transaction };
    let value = f(&mut tx)?;
    tx.transaction.commit()?;
    Ok(value)
}

impl Backend for PostgresStore {
    fn read<T>(&self, f: impl FnOnce(&mut dyn Tx) -> Result<T, Fail>) -> Result<T, Fail> {
        self.run(true, f)
    }

    fn write<T>(&self, f: impl FnOnce(&mut dyn Tx) -> Result<T, Fail>) -> Result<T, Fail> {
        self.run(false, f)
    }
}

logic::impl_state_store!(PostgresStore);

struct PostgresTx<'c> {
    transaction: postgres::Transaction<'c>,
}

fn param_refs(params: &[Val]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl Tx for PostgresTx<'_> {
    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>, DbError> {
        let rows = self.transaction.query(sql, &param_refs(params))?;
        rows.iter()
            .map(|row| {
                let values = (0..row.len())
                    .map(|i| row.try_get::<_, Val>(i))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Row(values))
            })
            .collect()
    }

    fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64, DbError> {
        Ok(self.transaction.execute(sql, &param_refs(params))?)
    }

    fn execute_batch(&mut self, sql: &str) -> Result<(), DbError> {
        Ok(self.transaction.batch_execute(sql)?)
    }

    fn now_ms(&mut self) -> Result<i64, DbError> {
        // clock_timestamp(), not now(): now() is frozen at the start of the transaction, which
        // may have waited on a row lock.
        let row = self.transaction.query_one(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            &[],
        )?;
        Ok(row.try_get(0)?)
    }

    fn lock_fleet_row(&mut self, fleet: &str) -> Result<(), DbError> {
        self.transaction
            .execute("SELECT 1 FROM fleets WHERE name = $1 FOR UPDATE", &[&fleet])?;
        Ok(())
    }

    fn lock_for_migration(&mut self) -> Result<(), DbError> {
        self.transaction
            .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])?;
        Ok(())
    }

    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }
}

impl ToSql for Val {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Val::Null => Ok(IsNull::Yes),
            // The server infers parameter types from context; the schema only has BIGINT, but
            // a literal comparison may be inferred narrower.
            Val::Int(v) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            Val::Int(v) if *ty == Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
            Val::Int(v) => v.to_sql(ty, out),
            Val::Text(v) => v.as_str().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked per value in `to_sql`, which knows whether this is an integer or text.
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Val {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        match *ty {
            Type::INT8 => Ok(Val::Int(i64::from_sql(ty, raw)?)),
            Type::INT4 => Ok(Val::Int(i32::from_sql(ty, raw)?.into())),
            Type::INT2 => Ok(Val::Int(i16::from_sql(ty, raw)?.into())),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                Ok(Val::Text(String::from_sql(ty, raw)?))
            }
            _ => Err(format!("unsupported column type {ty}").into()),
        }
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(Val::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// `postgres://user:secret@host/db` becomes `postgres://user:***@host/db`, for error messages.
pub(crate) fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_password;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_password("postgres://u:s3cret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_password("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_password("postgres://h/db?x=y"),
            "postgres://h/db?x=y"
        );
    }
}
