//! The node database (`node.db`, SQLite, encrypted at rest like every
//! database of the node): tenants, API key hashes, publishers, plugin
//! versions, installs and the publisher log. Tenant data never lives here; it
//! stays in each tenant's own database.
//!
//! Every write that belongs together (a plugin row and its log entry) runs in
//! one transaction, and the file is opened with `synchronous=FULL`, so a
//! crash leaves either all of it or none.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sovra_runtime::sealing::{NodeKey, SealedDatabase, SealingError};

use crate::ledger;

/// File name of the node database inside the data directory.
pub const NODE_DB_FILE: &str = "node.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenants (
    id TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(id),
    hash TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);
CREATE TABLE IF NOT EXISTS publishers (
    name TEXT PRIMARY KEY,
    public_key TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS plugins (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    publisher TEXT NOT NULL REFERENCES publishers(name),
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    world TEXT NOT NULL,
    description TEXT NOT NULL,
    requests TEXT NOT NULL,
    signature TEXT NOT NULL,
    state TEXT NOT NULL,
    submitted_ms INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS installs (
    tenant TEXT NOT NULL REFERENCES tenants(id),
    plugin TEXT NOT NULL,
    version TEXT NOT NULL,
    grants TEXT NOT NULL,
    installed_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, plugin)
);
CREATE TABLE IF NOT EXISTS quotas (
    tenant TEXT PRIMARY KEY REFERENCES tenants(id),
    spec TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS publisher_log (
    seq INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
";

/// A database failure: the node's fault, never the caller's.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("node database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("node database: {0}")]
    Sealing(#[from] SealingError),
}

/// How the node database is named in its key file's seals.
pub const NODE_DB_LABEL: &str = "node";

/// A tenant as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantRow {
    pub id: String,
    pub created_ms: i64,
    pub disabled: bool,
}

/// An API key without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRow {
    pub id: String,
    pub tenant: String,
    pub created_ms: i64,
    pub revoked: bool,
}

/// A registered publisher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublisherRow {
    pub name: String,
    pub public_key: String,
    pub created_ms: i64,
}

/// Where a plugin version is in review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginState {
    Pending,
    Approved,
    Yanked,
}

impl PluginState {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginState::Pending => "pending",
            PluginState::Approved => "approved",
            PluginState::Yanked => "yanked",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "approved" => PluginState::Approved,
            "yanked" => PluginState::Yanked,
            _ => PluginState::Pending,
        }
    }
}

/// Capabilities a plugin's manifest requests (stored as JSON).
pub use sovra_runtime::manifest::RequestedCapabilities as Requests;

/// One plugin version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginRow {
    pub name: String,
    pub version: String,
    pub publisher: String,
    pub digest: String,
    pub size: i64,
    pub world: String,
    pub description: String,
    pub requests: Requests,
    pub state: PluginState,
    pub submitted_ms: i64,
}

/// What a tenant granted an installed plugin (stored as JSON).
pub use sovra_runtime::policy::Grant as InstallGrants;

/// A plugin installed for a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstallRow {
    pub tenant: String,
    pub plugin: String,
    pub version: String,
    pub grants: InstallGrants,
    pub installed_ms: i64,
}

/// What storing a submitted version did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddPlugin {
    Added,
    /// That version exists already.
    Duplicate,
    /// Another publisher owns the name.
    NameTaken(String),
}

/// The node database.
#[derive(Debug)]
pub struct NodeDb {
    connection: Mutex<Connection>,
}

/// The publisher of a plugin name's first version.
fn owner_of(connection: &Connection, name: &str) -> Result<Option<String>, DbError> {
    Ok(connection
        .query_row(
            "SELECT publisher FROM plugins WHERE name = ?1 ORDER BY submitted_ms, rowid LIMIT 1",
            [name],
            |row| row.get(0),
        )
        .optional()?)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl NodeDb {
    /// Opens (creating if needed) the database at `path`, sealed by
    /// `node_key`.
    pub fn open(path: &Path, node_key: &NodeKey) -> Result<Self, DbError> {
        let connection =
            SealedDatabase::prepare(path, node_key, NODE_DB_LABEL)?.open_read_write()?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", true)?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        connection.execute_batch(SCHEMA)?;
        Ok(NodeDb {
            connection: Mutex::new(connection),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the database answers (for readiness).
    pub fn ping(&self) -> Result<(), DbError> {
        self.lock().query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    // Tenants and keys.

    /// Creates a tenant; `false` if it already exists.
    pub fn create_tenant(&self, id: &str) -> Result<bool, DbError> {
        let changed = self.lock().execute(
            "INSERT OR IGNORE INTO tenants (id, created_ms) VALUES (?1, ?2)",
            params![id, now_ms()],
        )?;
        Ok(changed == 1)
    }

    pub fn tenants(&self) -> Result<Vec<TenantRow>, DbError> {
        let connection = self.lock();
        let mut statement =
            connection.prepare("SELECT id, created_ms, disabled FROM tenants ORDER BY id")?;
        let rows = statement.query_map([], |row| {
            Ok(TenantRow {
                id: row.get(0)?,
                created_ms: row.get(1)?,
                disabled: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn tenant(&self, id: &str) -> Result<Option<TenantRow>, DbError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT id, created_ms, disabled FROM tenants WHERE id = ?1",
                [id],
                |row| {
                    Ok(TenantRow {
                        id: row.get(0)?,
                        created_ms: row.get(1)?,
                        disabled: row.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Sets a tenant's disabled flag; `false` if there is no such tenant.
    pub fn set_tenant_disabled(&self, id: &str, disabled: bool) -> Result<bool, DbError> {
        let changed = self.lock().execute(
            "UPDATE tenants SET disabled = ?2 WHERE id = ?1",
            params![id, disabled],
        )?;
        Ok(changed == 1)
    }

    pub fn add_key(&self, id: &str, tenant: &str, hash: &str) -> Result<(), DbError> {
        self.lock().execute(
            "INSERT INTO api_keys (id, tenant, hash, created_ms) VALUES (?1, ?2, ?3, ?4)",
            params![id, tenant, hash, now_ms()],
        )?;
        Ok(())
    }

    pub fn keys(&self, tenant: &str) -> Result<Vec<KeyRow>, DbError> {
        let connection = self.lock();
        let mut statement = connection.prepare(
            "SELECT id, tenant, created_ms, revoked_ms IS NOT NULL FROM api_keys
             WHERE tenant = ?1 ORDER BY created_ms, id",
        )?;
        let rows = statement.query_map([tenant], |row| {
            Ok(KeyRow {
                id: row.get(0)?,
                tenant: row.get(1)?,
                created_ms: row.get(2)?,
                revoked: row.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revokes a key of `tenant`; `false` if it has no such live key.
    pub fn revoke_key(&self, tenant: &str, id: &str) -> Result<bool, DbError> {
        let changed = self.lock().execute(
            "UPDATE api_keys SET revoked_ms = ?3
             WHERE tenant = ?1 AND id = ?2 AND revoked_ms IS NULL",
            params![tenant, id, now_ms()],
        )?;
        Ok(changed == 1)
    }

    /// The hashes of every key not revoked.
    pub fn live_key_hashes(&self) -> Result<Vec<String>, DbError> {
        let connection = self.lock();
        let mut statement =
            connection.prepare("SELECT hash FROM api_keys WHERE revoked_ms IS NULL")?;
        let rows = statement.query_map([], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The tenant owning the live key with this hash.
    pub fn tenant_of_key(&self, hash: &str) -> Result<Option<String>, DbError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT tenant FROM api_keys WHERE hash = ?1 AND revoked_ms IS NULL",
                [hash],
                |row| row.get(0),
            )
            .optional()?)
    }

    // Publishers.

    /// Registers a publisher and logs it; `false` if the name or key is taken.
    pub fn add_publisher(&self, name: &str, public_key: &str) -> Result<bool, DbError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let changed = transaction.execute(
            "INSERT OR IGNORE INTO publishers (name, public_key, created_ms) VALUES (?1, ?2, ?3)",
            params![name, public_key, now_ms()],
        )?;
        if changed == 1 {
            ledger::append(&transaction, "publisher-registered", name, public_key)?;
        }
        transaction.commit()?;
        Ok(changed == 1)
    }

    pub fn publishers(&self) -> Result<Vec<PublisherRow>, DbError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare("SELECT name, public_key, created_ms FROM publishers ORDER BY name")?;
        let rows = statement.query_map([], |row| {
            Ok(PublisherRow {
                name: row.get(0)?,
                public_key: row.get(1)?,
                created_ms: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn publisher_by_key(&self, public_key: &str) -> Result<Option<String>, DbError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT name FROM publishers WHERE public_key = ?1",
                [public_key],
                |row| row.get(0),
            )
            .optional()?)
    }

    // Plugins.

    /// Who owns a plugin name (the publisher of its first version).
    pub fn plugin_owner(&self, name: &str) -> Result<Option<String>, DbError> {
        owner_of(&self.lock(), name)
    }

    /// Stores a submitted version (pending) and logs it. Refused when that
    /// version already exists (versions are immutable) or another publisher
    /// owns the name, checked in the same transaction as the write.
    pub fn add_plugin(&self, plugin: &PluginRow, signature: &str) -> Result<AddPlugin, DbError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        if let Some(owner) = owner_of(&transaction, &plugin.name)?
            && owner != plugin.publisher
        {
            return Ok(AddPlugin::NameTaken(owner));
        }
        let requests = serde_json::to_string(&plugin.requests).expect("requests serialize");
        let changed = transaction.execute(
            "INSERT OR IGNORE INTO plugins (name, version, publisher, digest, size, world,
                 description, requests, signature, state, submitted_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                plugin.name,
                plugin.version,
                plugin.publisher,
                plugin.digest,
                plugin.size,
                plugin.world,
                plugin.description,
                requests,
                signature,
                plugin.state.as_str(),
                plugin.submitted_ms
            ],
        )?;
        if changed == 1 {
            ledger::append(
                &transaction,
                "submitted",
                &format!("{}@{}", plugin.name, plugin.version),
                &format!("publisher={} sha256={}", plugin.publisher, plugin.digest),
            )?;
        }
        transaction.commit()?;
        Ok(if changed == 1 {
            AddPlugin::Added
        } else {
            AddPlugin::Duplicate
        })
    }

    const PLUGIN_COLUMNS: &str = "name, version, publisher, digest, size, world, description,
        requests, state, submitted_ms";

    fn plugin_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PluginRow> {
        let requests: String = row.get(7)?;
        let state: String = row.get(8)?;
        Ok(PluginRow {
            name: row.get(0)?,
            version: row.get(1)?,
            publisher: row.get(2)?,
            digest: row.get(3)?,
            size: row.get(4)?,
            world: row.get(5)?,
            description: row.get(6)?,
            requests: serde_json::from_str(&requests).unwrap_or_default(),
            state: PluginState::parse(&state),
            submitted_ms: row.get(9)?,
        })
    }

    /// Plugin versions, all or only those in `state`.
    pub fn plugins(&self, state: Option<PluginState>) -> Result<Vec<PluginRow>, DbError> {
        let connection = self.lock();
        let mut statement = connection.prepare(&format!(
            "SELECT {} FROM plugins WHERE ?1 IS NULL OR state = ?1 ORDER BY name, submitted_ms",
            Self::PLUGIN_COLUMNS
        ))?;
        let rows = statement.query_map([state.map(PluginState::as_str)], Self::plugin_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn plugin(&self, name: &str, version: &str) -> Result<Option<PluginRow>, DbError> {
        Ok(self
            .lock()
            .query_row(
                &format!(
                    "SELECT {} FROM plugins WHERE name = ?1 AND version = ?2",
                    Self::PLUGIN_COLUMNS
                ),
                [name, version],
                Self::plugin_row,
            )
            .optional()?)
    }

    /// Whether any plugin version is stored under `digest`.
    pub fn digest_in_use(&self, digest: &str) -> Result<bool, DbError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT 1 FROM plugins WHERE digest = ?1 LIMIT 1",
                [digest],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Moves a version from one of `from` to `to` and logs it. Returns the
    /// state it was in (`None`: no such version).
    pub fn set_plugin_state(
        &self,
        name: &str,
        version: &str,
        from: &[PluginState],
        to: PluginState,
        action: &str,
    ) -> Result<Option<PluginState>, DbError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        let current: Option<(String, String)> = transaction
            .query_row(
                "SELECT state, digest FROM plugins WHERE name = ?1 AND version = ?2",
                [name, version],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let Some((current, digest)) = current else {
            return Ok(None);
        };
        let current = PluginState::parse(&current);
        if from.contains(&current) {
            transaction.execute(
                "UPDATE plugins SET state = ?3 WHERE name = ?1 AND version = ?2",
                params![name, version, to.as_str()],
            )?;
            ledger::append(
                &transaction,
                action,
                &format!("{name}@{version}"),
                &format!("sha256={digest}"),
            )?;
        }
        transaction.commit()?;
        Ok(Some(current))
    }

    // Installs.

    pub fn install(&self, row: &InstallRow) -> Result<(), DbError> {
        let grants = serde_json::to_string(&row.grants).expect("grants serialize");
        self.lock().execute(
            "INSERT INTO installs (tenant, plugin, version, grants, installed_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (tenant, plugin) DO UPDATE SET
                 version = excluded.version, grants = excluded.grants,
                 installed_ms = excluded.installed_ms",
            params![
                row.tenant,
                row.plugin,
                row.version,
                grants,
                row.installed_ms
            ],
        )?;
        Ok(())
    }

    fn install_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<InstallRow> {
        let grants: String = row.get(3)?;
        Ok(InstallRow {
            tenant: row.get(0)?,
            plugin: row.get(1)?,
            version: row.get(2)?,
            grants: serde_json::from_str(&grants).unwrap_or_default(),
            installed_ms: row.get(4)?,
        })
    }

    pub fn installs(&self, tenant: &str) -> Result<Vec<InstallRow>, DbError> {
        let connection = self.lock();
        let mut statement = connection.prepare(
            "SELECT tenant, plugin, version, grants, installed_ms FROM installs
             WHERE tenant = ?1 ORDER BY plugin",
        )?;
        let rows = statement.query_map([tenant], Self::install_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn installed(&self, tenant: &str, plugin: &str) -> Result<Option<InstallRow>, DbError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT tenant, plugin, version, grants, installed_ms FROM installs
                 WHERE tenant = ?1 AND plugin = ?2",
                [tenant, plugin],
                Self::install_row,
            )
            .optional()?)
    }

    pub fn uninstall(&self, tenant: &str, plugin: &str) -> Result<bool, DbError> {
        let changed = self.lock().execute(
            "DELETE FROM installs WHERE tenant = ?1 AND plugin = ?2",
            [tenant, plugin],
        )?;
        Ok(changed == 1)
    }

    /// Sets `tenant`'s quotas (a JSON object, replacing any before).
    pub fn set_quotas(&self, tenant: &str, spec: &str) -> Result<(), DbError> {
        self.lock().execute(
            "INSERT INTO quotas (tenant, spec) VALUES (?1, ?2)
             ON CONFLICT (tenant) DO UPDATE SET spec = excluded.spec",
            [tenant, spec],
        )?;
        Ok(())
    }

    /// Every tenant's quotas: `(tenant, JSON object)`.
    pub fn all_quotas(&self) -> Result<Vec<(String, String)>, DbError> {
        let connection = self.lock();
        let mut stmt = connection.prepare("SELECT tenant, spec FROM quotas ORDER BY tenant")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes `tenant`, its API keys and its installs, and logs the
    /// erasure (the tenant's name only), in one transaction; `false` if
    /// there is no such tenant.
    pub fn erase_tenant(&self, tenant: &str) -> Result<bool, DbError> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        transaction.execute("DELETE FROM installs WHERE tenant = ?1", [tenant])?;
        transaction.execute("DELETE FROM api_keys WHERE tenant = ?1", [tenant])?;
        transaction.execute("DELETE FROM quotas WHERE tenant = ?1", [tenant])?;
        let removed = transaction.execute("DELETE FROM tenants WHERE id = ?1", [tenant])?;
        if removed == 1 {
            ledger::append(&transaction, "tenant-erased", tenant, "")?;
        }
        transaction.commit()?;
        Ok(removed == 1)
    }

    // The publisher log.

    pub fn log_entries(&self) -> Result<Vec<ledger::Entry>, DbError> {
        ledger::entries(&self.lock())
    }
}
