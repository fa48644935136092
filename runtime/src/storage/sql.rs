//! Guest SQL on the tenant's guest connection: one statement per call, typed
//! parameters and values, and limits on time, rows and bytes.

use std::time::Instant;

use rusqlite::types::{ToSqlOutput, Value as SqliteValue, ValueRef};
use rusqlite::{Statement, ToSql};

use super::authorizer::HOST_TABLE_PREFIX;
use super::tenant_db::GuestConnection;
use super::{StorageError, TenantDb};
use crate::limits::{
    MAX_SQL_PARAMS, MAX_SQL_RESULT_BYTES, MAX_SQL_ROWS, MAX_SQL_STATEMENT_BYTES, MAX_SQL_TIME,
};

/// Virtual-machine steps between deadline checks.
const PROGRESS_INTERVAL_OPS: i32 = 1_000;

/// A SQL value as it crosses the guest boundary.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl SqlValue {
    fn size(&self) -> usize {
        match self {
            SqlValue::Null | SqlValue::Integer(_) | SqlValue::Real(_) => 8,
            SqlValue::Text(text) => text.len(),
            SqlValue::Blob(blob) => blob.len(),
        }
    }
}

impl ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            SqlValue::Null => ToSqlOutput::Owned(SqliteValue::Null),
            SqlValue::Integer(value) => ToSqlOutput::Owned(SqliteValue::Integer(*value)),
            SqlValue::Real(value) => ToSqlOutput::Owned(SqliteValue::Real(*value)),
            SqlValue::Text(value) => ToSqlOutput::Borrowed(ValueRef::Text(value.as_bytes())),
            SqlValue::Blob(value) => ToSqlOutput::Borrowed(ValueRef::Blob(value)),
        })
    }
}

impl From<ValueRef<'_>> for SqlValue {
    fn from(value: ValueRef<'_>) -> Self {
        match value {
            ValueRef::Null => SqlValue::Null,
            ValueRef::Integer(value) => SqlValue::Integer(value),
            ValueRef::Real(value) => SqlValue::Real(value),
            ValueRef::Text(text) => SqlValue::Text(String::from_utf8_lossy(text).into_owned()),
            ValueRef::Blob(blob) => SqlValue::Blob(blob.to_vec()),
        }
    }
}

/// Rows of a query.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RowSet {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<SqlValue>>,
}

fn check_statement(statement: &str, params: &[SqlValue]) -> Result<(), StorageError> {
    if statement.len() > MAX_SQL_STATEMENT_BYTES {
        return Err(StorageError::LimitExceeded(format!(
            "statement is {} bytes; the limit is {MAX_SQL_STATEMENT_BYTES}",
            statement.len()
        )));
    }
    if params.len() > MAX_SQL_PARAMS {
        return Err(StorageError::LimitExceeded(format!(
            "{} parameters given; the limit is {MAX_SQL_PARAMS}",
            params.len()
        )));
    }
    Ok(())
}

impl TenantDb {
    /// Runs one statement that returns no rows; returns rows changed.
    pub fn sql_execute(&self, statement: &str, params: &[SqlValue]) -> Result<u64, StorageError> {
        check_statement(statement, params)?;
        let guest = self.guest();
        self.with_statement(&guest, statement, |stmt| {
            stmt.execute(rusqlite::params_from_iter(params))
                .map(|n| n as u64)
        })
    }

    /// Runs one statement and returns its rows, within the row and byte limits.
    pub fn sql_query(&self, statement: &str, params: &[SqlValue]) -> Result<RowSet, StorageError> {
        check_statement(statement, params)?;
        let guest = self.guest();
        let mut limit_hit = None;
        let result = self.with_statement(&guest, statement, |stmt| {
            let columns: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
            let width = columns.len();
            let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
            let mut set = RowSet {
                columns,
                rows: Vec::new(),
            };
            let mut bytes = 0usize;
            while let Some(row) = rows.next()? {
                if set.rows.len() == MAX_SQL_ROWS {
                    limit_hit = Some(format!("query returns more than {MAX_SQL_ROWS} rows"));
                    break;
                }
                let mut values = Vec::with_capacity(width);
                for index in 0..width {
                    let value = SqlValue::from(row.get_ref(index)?);
                    bytes += value.size();
                    values.push(value);
                }
                if bytes > MAX_SQL_RESULT_BYTES {
                    limit_hit = Some(format!(
                        "query returns more than {MAX_SQL_RESULT_BYTES} bytes"
                    ));
                    break;
                }
                set.rows.push(values);
            }
            Ok(set)
        })?;
        match limit_hit {
            Some(reason) => Err(StorageError::LimitExceeded(reason)),
            None => Ok(result),
        }
    }

    /// Prepares `statement` on the guest connection and runs `body` on it
    /// under the execution-time limit, translating errors with the
    /// authorizer's reason when it refused something.
    fn with_statement<T>(
        &self,
        guest: &GuestConnection,
        statement: &str,
        body: impl FnOnce(&mut Statement<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StorageError> {
        guest.authorizer.reset();
        let deadline = Instant::now() + MAX_SQL_TIME;
        guest.conn.progress_handler(
            PROGRESS_INTERVAL_OPS,
            Some(move || Instant::now() > deadline),
        );
        let result = guest.conn.prepare(statement).and_then(|mut stmt| {
            if guest.authorizer.altered() {
                self.run_alter(guest, || body(&mut stmt))
            } else {
                body(&mut stmt)
            }
        });
        guest.conn.progress_handler(0, None::<fn() -> bool>);
        result.map_err(|e| {
            StorageError::from_sqlite(e, self.quota_bytes(), guest.authorizer.take_denial())
        })
    }

    /// Runs an ALTER TABLE in a transaction of the host's that is rolled back
    /// if the statement gave a table a name reserved for the host: SQLite
    /// does not tell the authorizer a rename's new name.
    fn run_alter<T>(
        &self,
        guest: &GuestConnection,
        run: impl FnOnce() -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let host = |sql: &str| guest.authorizer.as_host(|| guest.conn.execute_batch(sql));
        host("BEGIN IMMEDIATE")?;
        let before = guest.authorizer.as_host(|| reserved_names(&guest.conn));
        let result = run();
        let after = guest.authorizer.as_host(|| reserved_names(&guest.conn));
        let taken = match (&before, &after) {
            (Ok(before), Ok(after)) => after.iter().find(|name| !before.contains(name)).cloned(),
            _ => None,
        };
        match (result, taken, after) {
            (Ok(value), None, Ok(_)) => {
                host("COMMIT")?;
                Ok(value)
            }
            (result, taken, after) => {
                host("ROLLBACK")?;
                if let Some(name) = taken {
                    guest
                        .authorizer
                        .refuse(format!("the name `{name}` is reserved for the host"));
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_AUTH),
                        None,
                    ));
                }
                after?;
                result
            }
        }
    }
}

/// Names in the schema that start with the host's reserved prefix.
fn reserved_names(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn
        .prepare_cached("SELECT name FROM sqlite_schema WHERE lower(substr(name, 1, ?1)) = ?2")?;
    let rows = stmt.query_map(
        rusqlite::params![HOST_TABLE_PREFIX.len() as i64, HOST_TABLE_PREFIX],
        |row| row.get::<_, String>(0),
    )?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::db;

    #[test]
    fn typed_round_trip() {
        let (_dir, db) = db();
        db.sql_execute("CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB)", &[])
            .unwrap();
        let row = [
            SqlValue::Integer(-7),
            SqlValue::Real(2.5),
            SqlValue::Text("é".into()),
            SqlValue::Blob(vec![0, 255]),
        ];
        assert_eq!(
            db.sql_execute("INSERT INTO t VALUES (?1, ?2, ?3, ?4)", &row)
                .unwrap(),
            1
        );
        db.sql_execute("INSERT INTO t VALUES (NULL, NULL, NULL, NULL)", &[])
            .unwrap();
        let set = db
            .sql_query("SELECT * FROM t ORDER BY i IS NULL", &[])
            .unwrap();
        assert_eq!(set.columns, ["i", "r", "s", "b"]);
        assert_eq!(set.rows[0], row);
        assert_eq!(set.rows[1], vec![SqlValue::Null; 4]);
    }

    #[test]
    fn authorizer_refuses_escapes_with_reasons() {
        let (dir, db) = db();
        let outside = dir.path().join("outside.db");
        let cases = [
            (
                format!("ATTACH DATABASE '{}' AS x", outside.display()),
                "ATTACH",
            ),
            ("PRAGMA journal_mode = DELETE".to_owned(), "PRAGMA"),
            ("PRAGMA writable_schema = 1".to_owned(), "PRAGMA"),
            ("SELECT * FROM _sovra_kv".to_owned(), "reserved"),
            ("DELETE FROM _sovra_kv".to_owned(), "reserved"),
            ("DROP TABLE _sovra_kv".to_owned(), "reserved"),
            ("BEGIN".to_owned(), "transaction"),
            ("CREATE TEMP TABLE x (a)".to_owned(), "temporary"),
            (
                "SELECT load_extension('/tmp/evil.so')".to_owned(),
                "load_extension",
            ),
        ];
        for (statement, needle) in cases {
            let err = db.sql_query(&statement, &[]).unwrap_err();
            assert!(
                matches!(err, StorageError::Denied(_)),
                "{statement}: {err:?}"
            );
            assert!(err.to_string().contains(needle), "{statement}: {err}");
        }
        let vacuum = db.sql_execute(&format!("VACUUM INTO '{}'", outside.display()), &[]);
        assert!(vacuum.is_err(), "VACUUM INTO must not write outside files");
        assert!(!outside.exists());
        // Read-only schema pragmas still work.
        db.sql_execute("CREATE TABLE mine (a)", &[]).unwrap();
        assert_eq!(
            db.sql_query("PRAGMA table_info(mine)", &[])
                .unwrap()
                .rows
                .len(),
            1
        );
    }

    #[test]
    fn no_path_leads_to_a_reserved_name_or_to_the_host_tables_pages() {
        let (_dir, db) = db();
        db.sql_execute("CREATE TABLE fill (a)", &[]).unwrap();
        db.sql_execute("INSERT INTO fill VALUES (1)", &[]).unwrap();
        for statement in [
            "ALTER TABLE fill RENAME TO _sovra_fill",
            "ALTER TABLE fill RENAME TO \"_SOVRA_fill\"",
            "ALTER TABLE fill RENAME /* hidden */ TO [_sovra_x]",
            "SELECT * FROM dbstat",
            "SELECT name, pgsize FROM dbstat WHERE name = '_sovra_kv'",
            "SELECT * FROM pragma_table_info('_sovra_kv')",
        ] {
            let err = db.sql_query(statement, &[]).unwrap_err();
            assert!(
                matches!(err, StorageError::Denied(_)),
                "{statement}: {err:?}"
            );
        }
        // Not built into this SQLite; refused by name should it ever be.
        assert!(db.sql_query("SELECT * FROM sqlite_dbpage", &[]).is_err());
        // The table kept its name and its rows; ordinary renames still work.
        assert_eq!(
            db.sql_query("SELECT a FROM fill", &[]).unwrap().rows.len(),
            1
        );
        db.sql_execute("ALTER TABLE fill RENAME TO kept", &[])
            .unwrap();
        db.sql_execute("ALTER TABLE kept ADD COLUMN b", &[])
            .unwrap();
        assert_eq!(
            db.sql_query("SELECT a, b FROM kept", &[])
                .unwrap()
                .rows
                .len(),
            1
        );
        db.sql_execute("DROP TABLE kept", &[]).unwrap();
        db.sql_execute("ANALYZE", &[]).unwrap();
    }

    #[test]
    fn one_statement_per_call() {
        let (_dir, db) = db();
        let err = db
            .sql_execute("CREATE TABLE a (x); CREATE TABLE b (y)", &[])
            .unwrap_err();
        assert!(matches!(err, StorageError::InvalidInput(_)), "{err:?}");
    }

    #[test]
    fn runaway_queries_are_interrupted() {
        let (_dir, db) = db();
        let err = db
            .sql_query(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
                 SELECT count(*) FROM c",
                &[],
            )
            .unwrap_err();
        assert!(matches!(err, StorageError::LimitExceeded(_)), "{err:?}");
    }

    #[test]
    fn row_limit_is_enforced() {
        let (_dir, db) = db();
        let err = db
            .sql_query(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 20000) \
                 SELECT x FROM c",
                &[],
            )
            .unwrap_err();
        assert!(err.to_string().contains("rows"), "{err}");
    }
}
