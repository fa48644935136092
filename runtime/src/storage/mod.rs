//! Tenant storage: one SQLite database per tenant on the node's disk.
//!
//! Each tenant's database holds that tenant's key/value data (in a host-owned
//! table guests cannot touch through SQL) and the tables its agents create
//! through the `sql` capability. A tenant's identity comes from the
//! invocation context, and its database path is derived only from a validated
//! [`TenantId`]; nothing a guest says can point at another tenant's file.

mod authorizer;
mod error;
mod kv;
mod sql;
mod tenant_db;
mod vector;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use error::StorageError;
pub use kv::KeyPage;
pub use sql::{RowSet, SqlValue};
pub use tenant_db::TenantDb;
pub use vector::{MAX_COLLECTION_ENTRIES, MAX_QUERY_RESULTS, MAX_VECTOR_DIMS, VectorHit};

use crate::names::TenantId;

/// File name of a tenant's database inside its directory.
pub const TENANT_DB_FILE: &str = "tenant.db";

/// Opens tenant databases on first use and keeps them open.
#[derive(Debug)]
pub struct TenantStores {
    root: PathBuf,
    quota_bytes: u64,
    open: Mutex<HashMap<TenantId, Arc<TenantDb>>>,
}

impl TenantStores {
    /// Stores under `root` (`<root>/<tenant>/tenant.db`), each limited to
    /// `quota_bytes`.
    pub fn new(root: impl Into<PathBuf>, quota_bytes: u64) -> Self {
        TenantStores {
            root: root.into(),
            quota_bytes,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The database of `tenant`, opened (and created) if needed.
    pub fn get(&self, tenant: &TenantId) -> Result<Arc<TenantDb>, StorageError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(db) = open.get(tenant) {
            return Ok(Arc::clone(db));
        }
        let dir = self.tenant_dir(tenant);
        create_private_dir(&dir)?;
        let db = Arc::new(TenantDb::open(&dir.join(TENANT_DB_FILE), self.quota_bytes)?);
        open.insert(tenant.clone(), Arc::clone(&db));
        Ok(db)
    }

    /// Where `tenant`'s files live.
    pub fn tenant_dir(&self, tenant: &TenantId) -> PathBuf {
        self.root.join(tenant.as_str())
    }
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
    use super::TenantDb;

    /// A tenant database in a fresh temporary directory, with a 16 MiB quota.
    pub(crate) fn db() -> (tempfile::TempDir, TenantDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = TenantDb::open(&dir.path().join("t.db"), 16 << 20).unwrap();
        (dir, db)
    }
}
