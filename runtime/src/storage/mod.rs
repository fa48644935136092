//! Tenant storage: one SQLite database per tenant on the node's disk.
//!
//! Each tenant's database holds that tenant's key/value data, vector memory
//! and controller episodes (in host-owned tables guests cannot touch through
//! SQL) and the tables its agents create
//! through the `sql` capability. Each is encrypted at rest under its own key
//! (`tenant.db.key` beside it, sealed by the node key; see
//! [`crate::sealing`]). A tenant's identity comes from the
//! invocation context, and its database path is derived only from a validated
//! [`TenantId`]; nothing a guest says can point at another tenant's file.

mod authorizer;
mod dir_lock;
mod episodes;
mod error;
mod kv;
mod sql;
mod tenant_db;
mod vector;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use dir_lock::{DataDirLock, DirLockError, LOCK_FILE};
pub use episodes::{EpisodeRecord, MAX_EPISODE_PAGE, MAX_TELEMETRY_SAMPLES, TelemetryRecord};
pub use error::StorageError;
pub use kv::KeyPage;
pub use sql::{RowSet, SqlValue};
pub use tenant_db::TenantDb;
pub use vector::{MAX_COLLECTION_ENTRIES, MAX_QUERY_RESULTS, MAX_VECTOR_DIMS, VectorHit};

use crate::names::TenantId;
use crate::sealing::NodeKey;

/// File name of a tenant's database inside its directory.
pub const TENANT_DB_FILE: &str = "tenant.db";

/// Directory of the tenants' directories inside a runtime's data directory.
pub const TENANTS_DIR: &str = "tenants";

/// File descriptors one open [`TenantDb`] holds: two connections, each with
/// the database and its write-ahead log, and the shared-memory index they
/// share.
pub const DESCRIPTORS_PER_TENANT_DB: usize = 5;

/// Tenant databases kept open at once unless the node sets another bound.
/// Stops: every tenant that ever ran holding its descriptors, until the
/// process runs out and no tenant's database (nor any socket) can be opened.
pub const DEFAULT_MAX_OPEN_TENANT_DBS: usize = 256;

/// Opens tenant databases on first use and keeps at most `max_open` of them
/// open: to make room, the least recently used one that no invocation is
/// using is closed. A database in use is never closed under an invocation;
/// when every open one is in use, opening another is refused as
/// [`StorageError::Busy`] (retryable), never by running out of descriptors.
#[derive(Debug)]
pub struct TenantStores {
    root: PathBuf,
    quota_bytes: u64,
    max_open: usize,
    node_key: Arc<NodeKey>,
    open: Mutex<OpenDatabases>,
}

#[derive(Debug, Default)]
struct OpenDatabases {
    by_tenant: HashMap<TenantId, OpenDatabase>,
    /// Counts uses; a database's `last_used` orders evictions.
    clock: u64,
    /// Tenants whose storage was erased while this process ran: never
    /// opened (and so never created empty) again until admitted anew.
    erased: HashSet<TenantId>,
    /// Limits the operator set for particular tenants.
    quotas: HashMap<TenantId, TenantLimits>,
}

/// What the operator limits one tenant's storage to, beyond the node's
/// limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantLimits {
    /// Size of its database (`None`: the node's quota).
    pub storage_bytes: Option<u64>,
    /// Entries in its vector memory, all collections together.
    pub vectors: Option<u64>,
}

#[derive(Debug)]
struct OpenDatabase {
    db: Arc<TenantDb>,
    last_used: u64,
}

impl OpenDatabases {
    /// Closes idle databases, least recently used first, until one more
    /// fits under `max_open`; refuses when every open one is in use.
    fn make_room(&mut self, max_open: usize) -> Result<(), StorageError> {
        while self.by_tenant.len() >= max_open.max(1) {
            let idle = self
                .by_tenant
                .iter()
                .filter(|(_, open)| Arc::strong_count(&open.db) == 1)
                .min_by_key(|(_, open)| open.last_used)
                .map(|(tenant, _)| tenant.clone());
            match idle {
                Some(tenant) => drop(self.by_tenant.remove(&tenant)),
                None => {
                    return Err(StorageError::Busy(format!(
                        "all {max_open} tenant databases this node keeps open are in use"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl TenantStores {
    /// Stores under `root` (`<root>/<tenant>/tenant.db`), each limited to
    /// `quota_bytes` and sealed by `node_key`, at most `max_open` open at once.
    pub fn new(
        root: impl Into<PathBuf>,
        quota_bytes: u64,
        max_open: usize,
        node_key: Arc<NodeKey>,
    ) -> Self {
        TenantStores {
            root: root.into(),
            quota_bytes,
            max_open,
            node_key,
            open: Mutex::new(OpenDatabases::default()),
        }
    }

    /// The database of `tenant`, opened (and created) if needed.
    pub fn get(&self, tenant: &TenantId) -> Result<Arc<TenantDb>, StorageError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.erased.contains(tenant) {
            return Err(StorageError::Denied(format!(
                "the storage of tenant {tenant} was erased"
            )));
        }
        open.clock += 1;
        let now = open.clock;
        if let Some(entry) = open.by_tenant.get_mut(tenant) {
            entry.last_used = now;
            return Ok(Arc::clone(&entry.db));
        }
        open.make_room(self.max_open)?;
        let dir = self.tenant_dir(tenant);
        create_private_dir(&dir)?;
        let limits = open.quotas.get(tenant).copied().unwrap_or_default();
        let quota_bytes = limits.storage_bytes.unwrap_or(self.quota_bytes);
        let db = Arc::new(TenantDb::open(
            &dir.join(TENANT_DB_FILE),
            quota_bytes,
            &self.node_key,
            &tenant_label(tenant),
        )?);
        db.set_vector_quota(limits.vectors);
        open.by_tenant.insert(
            tenant.clone(),
            OpenDatabase {
                db: Arc::clone(&db),
                last_used: now,
            },
        );
        Ok(db)
    }

    /// Erases `tenant`'s storage: its database key is destroyed first
    /// (crypto-erase: any copy of the database, a backup or a file the
    /// filesystem kept, stays unreadable), then its files. Refused as
    /// [`StorageError::Busy`] while an invocation uses the database; until
    /// [`TenantStores::admit`], the tenant's storage is not opened again. Its
    /// limits go too: a tenant created anew under the name starts with the
    /// node's.
    pub fn erase(&self, tenant: &TenantId) -> Result<(), StorageError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = open.by_tenant.get(tenant) {
            if Arc::strong_count(&entry.db) > 1 {
                return Err(StorageError::Busy(format!(
                    "tenant {tenant}'s storage is in use; retry once its invocations end"
                )));
            }
            open.by_tenant.remove(tenant);
        }
        open.erased.insert(tenant.clone());
        open.quotas.remove(tenant);
        erase_files(&self.tenant_dir(tenant))
    }

    /// Sets `tenant`'s limits, applied at once if its database is open.
    pub fn set_limits(&self, tenant: &TenantId, limits: TenantLimits) -> Result<(), StorageError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if limits == TenantLimits::default() {
            open.quotas.remove(tenant);
        } else {
            open.quotas.insert(tenant.clone(), limits);
        }
        match open.by_tenant.get(tenant) {
            Some(entry) => {
                entry.db.set_vector_quota(limits.vectors);
                entry
                    .db
                    .set_quota_bytes(limits.storage_bytes.unwrap_or(self.quota_bytes))
            }
            None => Ok(()),
        }
    }

    /// Lets `tenant` have storage again (a tenant created anew under an
    /// erased tenant's name starts empty).
    pub fn admit(&self, tenant: &TenantId) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.erased.remove(tenant);
    }

    /// How many tenant databases are open now.
    pub fn open_count(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_tenant
            .len()
    }

    /// Where `tenant`'s files live.
    pub fn tenant_dir(&self, tenant: &TenantId) -> PathBuf {
        self.root.join(tenant.as_str())
    }
}

/// Erases the tenant directory `dir`: the database key first, then every
/// file. Nothing there is an error (erasing twice erases nothing more).
pub fn erase_files(dir: &Path) -> Result<(), StorageError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StorageError::Io {
            path,
            source: Arc::new(source),
        }
    };
    let key_file = crate::sealing::key_file::path_for(&dir.join(TENANT_DB_FILE));
    crate::sealing::key_file::destroy(&key_file)
        .map_err(|e| StorageError::Internal(e.to_string()))?;
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(dir)(e)),
    }
}

/// How a tenant's database is named in its key file's seals.
pub fn tenant_label(tenant: &TenantId) -> String {
    format!("tenant/{}", tenant.as_str())
}

/// Creates `dir` (and parents) readable only by the node's user.
fn create_private_dir(dir: &Path) -> Result<(), StorageError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| StorageError::Io {
        path: dir.to_owned(),
        source: Arc::new(source),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tenant database in a fresh temporary directory, with a 16 MiB quota.
    pub(crate) fn db() -> (tempfile::TempDir, TenantDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = TenantDb::open(
            &dir.path().join("t.db"),
            16 << 20,
            &NodeKey::generate(),
            "t",
        )
        .unwrap();
        (dir, db)
    }
}

#[cfg(test)]
mod bounded_open {
    use super::*;

    fn tenant(i: usize) -> TenantId {
        TenantId::new(&format!("t{i}")).unwrap()
    }

    /// Descriptors this process holds now.
    fn descriptors() -> usize {
        std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
    }

    #[test]
    fn many_tenants_keep_a_bounded_number_of_databases_open_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let stores = TenantStores::new(dir.path(), 16 << 20, 8, Arc::new(NodeKey::generate()));
        let before = descriptors();
        for i in 0..200 {
            let db = stores.get(&tenant(i)).unwrap();
            db.kv_set("written", format!("{i}").as_bytes()).unwrap();
            assert!(stores.open_count() <= 8);
        }
        // Other tests in this process open files too: allow them some.
        let held = descriptors().saturating_sub(before);
        assert!(
            held <= 8 * DESCRIPTORS_PER_TENANT_DB + 16,
            "{held} descriptors held for 8 open databases"
        );
        for i in 0..200 {
            let value = stores.get(&tenant(i)).unwrap().kv_get("written").unwrap();
            assert_eq!(value, Some(format!("{i}").into_bytes()), "tenant {i}");
        }
    }

    #[test]
    fn a_database_in_use_is_not_closed_and_the_least_recently_used_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let stores = TenantStores::new(dir.path(), 16 << 20, 2, Arc::new(NodeKey::generate()));
        let held = stores.get(&tenant(0)).unwrap();
        stores.get(&tenant(1)).unwrap();
        stores.get(&tenant(2)).unwrap(); // evicts t1: t0 is in use
        let again = stores.get(&tenant(0)).unwrap();
        assert!(
            Arc::ptr_eq(&held, &again),
            "the database in use stayed open"
        );
        drop((held, again));
        stores.get(&tenant(2)).unwrap(); // t2 is now the most recent
        stores.get(&tenant(3)).unwrap(); // evicts t0, the least recent idle
        {
            let open = stores.open.lock().unwrap();
            assert!(open.by_tenant.contains_key(&tenant(2)));
            assert!(open.by_tenant.contains_key(&tenant(3)));
            assert!(!open.by_tenant.contains_key(&tenant(0)));
        }
        // Every open database in use: a third is refused, retryably.
        let _busy = (
            stores.get(&tenant(2)).unwrap(),
            stores.get(&tenant(3)).unwrap(),
        );
        assert!(matches!(stores.get(&tenant(4)), Err(StorageError::Busy(_))));
    }

    #[test]
    fn a_tenant_quota_applies_to_an_open_database_and_to_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let stores = TenantStores::new(dir.path(), 16 << 20, 8, Arc::new(NodeKey::generate()));
        let acme = tenant(1);
        let db = stores.get(&acme).unwrap();
        let value = vec![7u8; 32 << 10];
        db.kv_set("a", &value).unwrap();
        let limits = |storage_bytes| TenantLimits {
            storage_bytes,
            vectors: None,
        };
        stores.set_limits(&acme, limits(Some(128 << 10))).unwrap();
        let mut result = Ok(());
        for i in 0..8 {
            result = db.kv_set(&format!("k{i}"), &value);
            if result.is_err() {
                break;
            }
        }
        assert!(
            matches!(
                result,
                Err(StorageError::QuotaExceeded {
                    quota_bytes: 131_072
                })
            ),
            "{result:?}"
        );
        assert!(db.used_bytes().unwrap() <= 128 << 10);
        drop(db);
        // Evicted and reopened, it keeps the tenant's limit; lifting it
        // gives the node's back.
        let other = stores.get(&tenant(2)).unwrap();
        drop(other);
        let db = stores.get(&acme).unwrap();
        assert_eq!(db.quota_bytes(), 128 << 10);
        stores.set_limits(&acme, limits(None)).unwrap();
        assert_eq!(db.quota_bytes(), 16 << 20);
        db.kv_set("more", &value).unwrap();
    }

    #[test]
    fn an_erased_tenant_leaves_nothing_readable_and_is_not_reopened_until_admitted() {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(NodeKey::generate());
        let stores = TenantStores::new(dir.path(), 16 << 20, 8, Arc::clone(&key));
        let acme = tenant(1);
        let held = stores.get(&acme).unwrap();
        held.kv_set("secret", b"erase-me-4c2a").unwrap();
        let limits = TenantLimits {
            storage_bytes: Some(1 << 20),
            vectors: Some(5),
        };
        stores.set_limits(&acme, limits).unwrap();
        assert!(matches!(stores.erase(&acme), Err(StorageError::Busy(_))));
        drop(held);
        // A copy taken before the erasure (a backup, say), and another
        // tenant whose key the node still holds.
        let db = stores.tenant_dir(&acme).join(TENANT_DB_FILE);
        let copy = dir.path().join("copy.db");
        std::fs::copy(&db, &copy).unwrap();
        let globex = tenant(2);
        stores.get(&globex).unwrap().kv_set("k", b"v").unwrap();

        stores.erase(&acme).unwrap();
        assert!(!stores.tenant_dir(&acme).exists());
        assert!(matches!(stores.get(&acme), Err(StorageError::Denied(_))));
        assert!(!stores.tenant_dir(&acme).exists(), "not recreated empty");
        // Every key the node still holds fails to open the copy.
        let globex_db = stores.tenant_dir(&globex).join(TENANT_DB_FILE);
        std::fs::copy(
            crate::sealing::key_file::path_for(&globex_db),
            crate::sealing::key_file::path_for(&copy),
        )
        .unwrap();
        let with_remaining_key =
            crate::sealing::SealedDatabase::existing(&copy, &key, "tenant/t2").unwrap();
        assert!(matches!(
            with_remaining_key.open_read_write(),
            Err(crate::sealing::SealingError::NoKeyOpens { .. })
        ));

        stores.admit(&acme);
        let fresh = stores.get(&acme).unwrap();
        assert_eq!(fresh.kv_get("secret").unwrap(), None);
        assert_eq!(
            fresh.quota_bytes(),
            16 << 20,
            "the node's limit, not the erased one's"
        );
    }
}
