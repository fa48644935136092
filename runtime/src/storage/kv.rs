//! The key/value store on the tenant's host connection.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::tenant_db::KV_TABLE;
use super::{StorageError, TenantDb};
use crate::limits::{MAX_KEY_BYTES, MAX_LIST_PAGE, MAX_VALUE_BYTES};

/// One page of keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<String>,
    /// Where the next page starts; `None` when there are no more keys.
    pub cursor: Option<String>,
}

fn check_key(key: &str) -> Result<(), StorageError> {
    if key.is_empty() {
        return Err(StorageError::InvalidInput("keys may not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StorageError::LimitExceeded(format!(
            "key is {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

impl TenantDb {
    pub fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        check_key(key)?;
        self.host()
            .prepare_cached(&format!("SELECT value FROM {KV_TABLE} WHERE key = ?1"))
            .and_then(|mut stmt| stmt.query_row([key], |row| row.get(0)).optional())
            .map_err(|e| self.sqlite_error(e))
    }

    pub fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(StorageError::LimitExceeded(format!(
                "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
                value.len()
            )));
        }
        self.host()
            .prepare_cached(&format!(
                "INSERT INTO {KV_TABLE} (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            ))
            .and_then(|mut stmt| stmt.execute(params![key, value]))
            .map(drop)
            .map_err(|e| self.sqlite_error(e))
    }

    /// Removes `key`; returns whether it existed.
    pub fn kv_delete(&self, key: &str) -> Result<bool, StorageError> {
        check_key(key)?;
        self.host()
            .prepare_cached(&format!("DELETE FROM {KV_TABLE} WHERE key = ?1"))
            .and_then(|mut stmt| stmt.execute([key]))
            .map(|changed| changed > 0)
            .map_err(|e| self.sqlite_error(e))
    }

    /// Adds `delta` to the decimal integer at `key` in one transaction and
    /// returns the new value. The transaction takes the write lock before it
    /// reads: a deferred one that read first could not wait for another
    /// writer (SQLite answers "database is locked" at once when a reader
    /// must upgrade past a newer commit).
    pub fn kv_increment(&self, key: &str, delta: i64) -> Result<i64, StorageError> {
        check_key(key)?;
        let mut conn = self.host();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.sqlite_error(e))?;
        let current: Option<Vec<u8>> = tx
            .query_row(
                &format!("SELECT value FROM {KV_TABLE} WHERE key = ?1"),
                [key],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.sqlite_error(e))?;
        let current = match current {
            None => 0,
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    StorageError::InvalidInput(format!("the value at `{key}` is not an integer"))
                })?,
        };
        let next = current.checked_add(delta).ok_or_else(|| {
            StorageError::InvalidInput(format!("incrementing `{key}` by {delta} overflows"))
        })?;
        tx.execute(
            &format!(
                "INSERT INTO {KV_TABLE} (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            ),
            params![key, next.to_string().into_bytes()],
        )
        .map_err(|e| self.sqlite_error(e))?;
        tx.commit().map_err(|e| self.sqlite_error(e))?;
        Ok(next)
    }

    /// Keys starting with `prefix`, in byte order, after `cursor`.
    pub fn kv_list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, StorageError> {
        if prefix.len() > MAX_KEY_BYTES {
            return Err(StorageError::LimitExceeded(
                "prefix is longer than a key may be".into(),
            ));
        }
        let limit = limit.clamp(1, MAX_LIST_PAGE) as usize;
        // Keys sharing a prefix are contiguous in byte order, so scan from the
        // later of prefix and cursor and stop at the first key outside it.
        let start = match cursor {
            Some(cursor) if cursor >= prefix => cursor,
            _ => prefix,
        };
        let strict = cursor.is_some_and(|c| c >= prefix);
        let conn = self.host();
        let sql = if strict {
            format!("SELECT key FROM {KV_TABLE} WHERE key > ?1 ORDER BY key LIMIT ?2")
        } else {
            format!("SELECT key FROM {KV_TABLE} WHERE key >= ?1 ORDER BY key LIMIT ?2")
        };
        let mut stmt = conn
            .prepare_cached(&sql)
            .map_err(|e| self.sqlite_error(e))?;
        let rows = stmt
            .query_map(params![start, (limit + 1) as i64], |row| {
                row.get::<_, String>(0)
            })
            .map_err(|e| self.sqlite_error(e))?;
        let mut keys = Vec::with_capacity(limit);
        let mut more = false;
        for key in rows {
            let key = key.map_err(|e| self.sqlite_error(e))?;
            if !key.starts_with(prefix) {
                break;
            }
            if keys.len() == limit {
                more = true;
                break;
            }
            keys.push(key);
        }
        let cursor = if more { keys.last().cloned() } else { None };
        Ok(KeyPage { keys, cursor })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::db;

    #[test]
    fn set_get_delete_increment() {
        let (_dir, db) = db();
        assert_eq!(db.kv_get("a").unwrap(), None);
        db.kv_set("a", b"1").unwrap();
        assert_eq!(db.kv_get("a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(db.kv_increment("a", 41).unwrap(), 42);
        assert_eq!(db.kv_increment("fresh", -2).unwrap(), -2);
        db.kv_set("text", b"hello").unwrap();
        assert!(matches!(
            db.kv_increment("text", 1),
            Err(StorageError::InvalidInput(_))
        ));
        assert!(db.kv_delete("a").unwrap());
        assert!(!db.kv_delete("a").unwrap());
        assert!(matches!(db.kv_get(""), Err(StorageError::InvalidInput(_))));
    }

    #[test]
    fn an_increment_waits_for_another_writer_instead_of_failing() {
        let (_dir, db) = db();
        db.kv_increment("n", 1).unwrap();
        // Another connection (the tenant's SQL, say) is in the middle of a
        // write when the increment starts, and commits soon after.
        let other = db.connect().unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            other.execute_batch("COMMIT").unwrap();
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(db.kv_increment("n", 1).unwrap(), 2);
        writer.join().unwrap();
    }

    #[test]
    fn list_pages_through_a_prefix_only() {
        let (_dir, db) = db();
        for key in ["a/1", "a/2", "a/3", "a0", "b/1", "a/0"] {
            db.kv_set(key, b"x").unwrap();
        }
        let first = db.kv_list("a/", None, 2).unwrap();
        assert_eq!(first.keys, ["a/0", "a/1"]);
        let second = db.kv_list("a/", first.cursor.as_deref(), 2).unwrap();
        assert_eq!(second.keys, ["a/2", "a/3"]);
        assert_eq!(second.cursor, None);
        assert_eq!(db.kv_list("", None, 100).unwrap().keys.len(), 6);
    }

    #[test]
    fn quota_stops_writes_with_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::sealing::NodeKey::generate();
        let db = TenantDb::open(&dir.path().join("t.db"), 256 * 1024, &key, "t").unwrap();
        let value = vec![7u8; 64 * 1024];
        let mut result = Ok(());
        for i in 0..64 {
            result = db.kv_set(&format!("k{i}"), &value);
            if result.is_err() {
                break;
            }
        }
        assert!(
            matches!(result, Err(StorageError::QuotaExceeded { .. })),
            "{result:?}"
        );
        // What was acknowledged before the quota hit is still readable.
        assert!(db.kv_get("k0").unwrap().is_some());
    }
}
