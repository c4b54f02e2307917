//! The little both backends have in common: a transaction that runs SQL with `$n` placeholders
//! over integers, text and NULL. The store's logic ([`crate::logic`]) is written once against it,
//! so SQLite and PostgreSQL cannot drift apart in semantics.

use crate::error::{DbError, StateError};

/// A value passed to or read from SQL. The schema uses only BIGINT and TEXT columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Val {
    Null,
    Int(i64),
    Text(String),
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::Int(v)
    }
}

impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::Text(v.to_owned())
    }
}

impl From<String> for Val {
    fn from(v: String) -> Self {
        Val::Text(v)
    }
}

impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Self {
        v.map_or(Val::Null, Into::into)
    }
}

/// One result row.
#[derive(Debug)]
pub(crate) struct Row(pub(crate) Vec<Val>);

impl Row {
    pub(crate) fn int(&self, i: usize) -> Result<i64, DbError> {
        match self.0.get(i) {
            Some(Val::Int(v)) => Ok(*v),
            other => Err(decode_error(i, "an integer", other)),
        }
    }

    pub(crate) fn opt_int(&self, i: usize) -> Result<Option<i64>, DbError> {
        match self.0.get(i) {
            Some(Val::Null) => Ok(None),
            _ => self.int(i).map(Some),
        }
    }

    pub(crate) fn text(&self, i: usize) -> Result<String, DbError> {
        match self.0.get(i) {
            Some(Val::Text(v)) => Ok(v.clone()),
            other => Err(decode_error(i, "text", other)),
        }
    }

    pub(crate) fn opt_text(&self, i: usize) -> Result<Option<String>, DbError> {
        match self.0.get(i) {
            Some(Val::Null) => Ok(None),
            _ => self.text(i).map(Some),
        }
    }
}

fn decode_error(column: usize, wanted: &str, found: Option<&Val>) -> DbError {
    DbError::Decode {
        column,
        reason: format!("wanted {wanted}, found {found:?}"),
    }
}

/// An open transaction. Dropping it without [`Backend::write`]/[`Backend::read`] committing
/// rolls it back.
pub(crate) trait Tx {
    /// Runs a query and returns all rows.
    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>, DbError>;
    /// Runs a statement and returns the number of rows affected.
    fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64, DbError>;
    /// Runs several statements without parameters (migrations).
    fn execute_batch(&mut self, sql: &str) -> Result<(), DbError>;
    /// The store clock in Unix milliseconds: the database server's for PostgreSQL (so that
    /// leases of clients on different hosts compare against one clock), the host's for SQLite.
    fn now_ms(&mut self) -> Result<i64, DbError>;
    /// Blocks other writers of this fleet until commit. The `fleets` row exists already.
    fn lock_fleet_row(&mut self, fleet: &str) -> Result<(), DbError>;
    /// Blocks other migrators until commit.
    fn lock_for_migration(&mut self) -> Result<(), DbError>;
    /// The dialect, for the few statements that differ (DDL).
    fn dialect(&self) -> Dialect;
}

/// The SQL dialect of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A failure inside a transaction: a database error (mapped to the step's [`StateError`]
/// variant at the API boundary) or an already meaningful [`StateError`].
#[derive(Debug)]
pub(crate) enum Fail {
    Db(DbError),
    State(StateError),
}

impl From<DbError> for Fail {
    fn from(e: DbError) -> Self {
        Fail::Db(e)
    }
}

impl From<StateError> for Fail {
    fn from(e: StateError) -> Self {
        Fail::State(e)
    }
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Db(DbError::Sqlite(e))
    }
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Self {
        Fail::Db(DbError::Postgres(e))
    }
}

impl Fail {
    /// Names the step: turns a database error into `step(error)`.
    pub(crate) fn at(self, step: impl FnOnce(DbError) -> StateError) -> StateError {
        match self {
            Fail::Db(e) => step(e),
            Fail::State(e) => e,
        }
    }
}

/// A database that runs closures in transactions. Implemented by the SQLite and PostgreSQL
/// stores; each call of the public API is exactly one transaction.
pub(crate) trait Backend {
    /// Runs `f` in a read transaction (a consistent snapshot where the database offers one).
    fn read<T>(&self, f: impl FnOnce(&mut dyn Tx) -> Result<T, Fail>) -> Result<T, Fail>;
    /// Runs `f` in a write transaction, committed only if `f` returns `Ok`.
    fn write<T>(&self, f: impl FnOnce(&mut dyn Tx) -> Result<T, Fail>) -> Result<T, Fail>;
}

/// Rewrites `$1`-style placeholders (PostgreSQL) into `?1` (SQLite). SQLite would accept `$1`
/// too, but as a *named* parameter numbered by first appearance, which breaks as soon as a
/// statement mentions `$2` before `$1`.
pub(crate) fn sqlite_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_by_number() {
        assert_eq!(
            sqlite_placeholders("a = $2 AND b = $1 AND c = '$x'"),
            "a = ?2 AND b = ?1 AND c = '$x'"
        );
    }
}
