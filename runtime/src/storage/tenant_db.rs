//! One tenant's SQLite database, encrypted at rest under its own key (see
//! [`crate::sealing`]) and opened twice: a host connection for the
//! host-owned key/value and vector tables, and a guest connection for agent SQL that runs under the
//! authorizer and SQLite's own limits.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::config::DbConfig;
use rusqlite::limits::Limit;

use super::StorageError;
use super::authorizer::GuestAuthorizer;
use crate::limits::{MAX_SQL_PARAMS, MAX_SQL_STATEMENT_BYTES, MAX_VALUE_BYTES};
use crate::sealing::{NodeKey, SealedDatabase, SealingError};

/// SQLite page size used for quota accounting.
const PAGE_SIZE: u64 = 4096;

/// How long a writer waits for another's write lock before its call fails
/// as busy (`unavailable`, retryable). Longer than one guest statement may
/// run ([`crate::limits::MAX_SQL_TIME`]), so that writers queue behind the
/// slowest legitimate statement; shorter than an invocation's default time.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(3);

/// Name of the host-owned key/value table; guest SQL can never reach it.
pub(super) const KV_TABLE: &str = "_sovra_kv";

/// A tenant's database.
#[derive(Debug)]
pub struct TenantDb {
    sealed: SealedDatabase,
    quota_bytes: AtomicU64,
    /// Most vector entries, all collections together (`u64::MAX`: none).
    vector_quota: AtomicU64,
    host: Mutex<Connection>,
    guest: Mutex<GuestConnection>,
}

/// The guest's connection and the authorizer's record of its last refusal.
#[derive(Debug)]
pub(super) struct GuestConnection {
    pub(super) conn: Connection,
    pub(super) authorizer: GuestAuthorizer,
}

impl TenantDb {
    /// Opens (creating if needed) the database at `path`, limited to
    /// `quota_bytes` of pages, encrypted under a key sealed by `node_key`
    /// (a plain database from before is encrypted in place first). `label`
    /// names the database in its key file (`tenant/<id>`).
    pub fn open(
        path: &Path,
        quota_bytes: u64,
        node_key: &NodeKey,
        label: &str,
    ) -> Result<Self, StorageError> {
        let open_error = |e: rusqlite::Error| StorageError::Open {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let sealing_error = |e: SealingError| StorageError::Open {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let sealed = SealedDatabase::prepare(path, node_key, label).map_err(sealing_error)?;
        let host = open_connection(&sealed, quota_bytes).map_err(sealing_error)?;
        host.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {KV_TABLE} (
                 key TEXT PRIMARY KEY NOT NULL,
                 value BLOB NOT NULL
             ) WITHOUT ROWID;"
        ))
        .map_err(open_error)?;
        Self::create_vector_table(&host).map_err(open_error)?;
        Self::create_episode_tables(&host).map_err(open_error)?;

        let guest = open_connection(&sealed, quota_bytes).map_err(sealing_error)?;
        configure_guest_connection(&guest).map_err(open_error)?;
        let authorizer = GuestAuthorizer::install(&guest);

        Ok(TenantDb {
            sealed,
            quota_bytes: AtomicU64::new(quota_bytes),
            vector_quota: AtomicU64::new(u64::MAX),
            host: Mutex::new(host),
            guest: Mutex::new(GuestConnection {
                conn: guest,
                authorizer,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        self.sealed.path()
    }

    /// Another keyed connection to this database, outside its two.
    pub fn connect(&self) -> Result<Connection, SealingError> {
        self.sealed.open_read_write()
    }

    pub fn quota_bytes(&self) -> u64 {
        self.quota_bytes.load(Ordering::Relaxed)
    }

    /// Changes the size limit, on both connections at once. A limit below
    /// what the database holds keeps it from growing; nothing is removed.
    pub fn set_quota_bytes(&self, quota_bytes: u64) -> Result<(), StorageError> {
        let pages = max_pages(quota_bytes);
        let set = |conn: &Connection| conn.pragma_update(None, "max_page_count", pages);
        set(&self.host()).map_err(|e| self.sqlite_error(e))?;
        let guest = self.guest();
        guest
            .authorizer
            .as_host(|| set(&guest.conn))
            .map_err(|e| self.sqlite_error(e))?;
        self.quota_bytes.store(quota_bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Sets the most vector entries the tenant may keep (`None`: no quota
    /// beyond each collection's limit).
    pub fn set_vector_quota(&self, vectors: Option<u64>) {
        self.vector_quota
            .store(vectors.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The most vector entries the tenant may keep, if limited.
    pub(super) fn vector_quota(&self) -> Option<u64> {
        Some(self.vector_quota.load(Ordering::Relaxed)).filter(|&n| n != u64::MAX)
    }

    /// Bytes the database holds now (its pages).
    pub fn used_bytes(&self) -> Result<u64, StorageError> {
        let pages: u64 = self
            .host()
            .query_row("PRAGMA page_count", [], |row| row.get(0))
            .map_err(|e| self.sqlite_error(e))?;
        Ok(pages * PAGE_SIZE)
    }

    pub(super) fn host(&self) -> MutexGuard<'_, Connection> {
        self.host.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn guest(&self) -> MutexGuard<'_, GuestConnection> {
        self.guest.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn sqlite_error(&self, error: rusqlite::Error) -> StorageError {
        StorageError::from_sqlite(error, self.quota_bytes(), None)
    }
}

/// Opens a keyed connection in WAL mode with full durability: a write the
/// guest was told succeeded is on disk.
fn open_connection(sealed: &SealedDatabase, quota_bytes: u64) -> Result<Connection, SealingError> {
    let conn = sealed.open_read_write()?;
    configure_host_connection(&conn, quota_bytes).map_err(SealingError::sqlite(sealed.path()))?;
    Ok(conn)
}

fn configure_host_connection(conn: &Connection, quota_bytes: u64) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "max_page_count", max_pages(quota_bytes))?;
    Ok(())
}

/// The page limit that keeps a database within `quota_bytes` (at least the
/// few pages an empty tenant database needs).
fn max_pages(quota_bytes: u64) -> u64 {
    quota_bytes.div_ceil(PAGE_SIZE).max(16)
}

/// Hardens the guest connection beyond the authorizer: defensive mode (no
/// writable schema, no shadow-table writes), untrusted schema, and SQLite's
/// own size limits.
fn configure_guest_connection(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    let as_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
    conn.set_limit(
        Limit::SQLITE_LIMIT_SQL_LENGTH,
        as_i32(MAX_SQL_STATEMENT_BYTES),
    )?;
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, as_i32(MAX_VALUE_BYTES))?;
    conn.set_limit(Limit::SQLITE_LIMIT_VARIABLE_NUMBER, as_i32(MAX_SQL_PARAMS))?;
    conn.set_limit(Limit::SQLITE_LIMIT_EXPR_DEPTH, 100)?;
    conn.set_limit(Limit::SQLITE_LIMIT_COMPOUND_SELECT, 50)?;
    conn.set_limit(Limit::SQLITE_LIMIT_TRIGGER_DEPTH, 10)?;
    conn.set_limit(Limit::SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 1000)?;
    conn.set_limit(Limit::SQLITE_LIMIT_COLUMN, 200)?;
    Ok(())
}
