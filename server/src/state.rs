//! What the node holds while it serves: configuration, the node database,
//! the runtime, the artifact store, admission and metrics, plus two caches
//! that keep the invocation path off SQLite (API keys to tenants, and
//! installs with their loaded agents). Every write that changes what a cache
//! holds clears it and bumps the cache's generation; a lookup that started
//! before a clear does not store its (possibly stale) answer, so a revoked
//! key or a changed install is never served from the cache afterwards. The
//! hashes of all live keys are held too, so a made-up key is refused without
//! a database lookup.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::{Notify, Semaphore};

use sovra_gpu::ModelRegistry;
use sovra_runtime::TenantId;
use sovra_runtime::sealing::NodeKey;
use sovra_runtime::{Agent, Grants, Limits, Runtime, RuntimeConfig};

use crate::artifacts::ArtifactStore;
use crate::compile::CompileWorker;
use crate::config::NodeConfig;
use crate::db::{DbError, InstallRow, NODE_DB_FILE, NodeDb};
use crate::episodes::Episodes;
use crate::keys::{LiveKeys, hash_key, is_operator_token};
use crate::limiter::TenantLimiter;
use crate::metrics::Metrics;
use crate::quotas::{QuotaBook, Quotas};
use crate::refusals::RefusalAudit;
use crate::transport::connections::Connections;
use crate::transport::descriptors::DescriptorBudget;

/// Who is calling, from the `Authorization: Bearer` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Operator,
    Tenant(String),
    /// A valid key of a tenant the operator disabled.
    DisabledTenant(String),
    /// No credential, or one the node does not know.
    Anonymous,
}

/// An install ready to invoke: the agent loaded, grants and limits resolved.
#[derive(Debug)]
pub struct ReadyInstall {
    pub row: InstallRow,
    pub agent: Arc<Agent>,
    pub grants: Grants,
    pub limits: Limits,
}

/// The node's shared state.
#[derive(Debug)]
pub struct AppState {
    pub config: NodeConfig,
    pub db: NodeDb,
    pub runtime: Runtime,
    pub models: Arc<ModelRegistry>,
    pub artifacts: ArtifactStore,
    pub compiler: CompileWorker,
    pub compiled_dir: PathBuf,
    pub limiter: TenantLimiter,
    pub metrics: Metrics,
    pub draining: AtomicBool,
    /// Refusals (401, 403, 429) recorded in the audit log.
    pub refusals: RefusalAudit,
    /// How the process's file descriptors are shared out.
    pub budget: DescriptorBudget,
    /// The HTTP connections open now, under the budget's cap.
    pub connections: Arc<Connections>,
    /// Invocations running, including those whose client went away.
    pub in_flight: InFlight,
    /// Controller episodes running, and the figures of those that ran.
    pub episodes: Arc<Episodes>,
    /// Compile workers that may run at once.
    /// Stops: a burst of submissions starting a 2 GiB worker each.
    pub compile_slots: Semaphore,
    /// The node's Ed25519 key that signs tenant exports.
    pub signer: ed25519_dalek::SigningKey,
    /// Each tenant's quotas, today's invocations and its tokens.
    pub quotas: Arc<QuotaBook>,
    operator_token: String,
    keys: Generational<String, Caller>,
    /// Hashes of the live keys: an unknown key is refused without a lookup.
    live_keys: LiveKeys,
    installs: Generational<(String, String), Arc<ReadyInstall>>,
}

/// Compile workers running at once, at most.
pub const MAX_CONCURRENT_COMPILES: usize = 2;

/// A cache whose clears invalidate lookups already under way.
#[derive(Debug)]
pub struct Generational<K, V> {
    map: RwLock<HashMap<K, V>>,
    generation: AtomicU64,
}

impl<K: std::hash::Hash + Eq, V: Clone> Generational<K, V> {
    fn new() -> Self {
        Generational {
            map: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// Read before looking something up, to hand to [`Self::store`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn get(&self, key: &K) -> Option<V> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Stores `value` unless the cache was cleared since `generation`.
    fn store(&self, key: K, value: V, generation: u64) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::Acquire) == generation {
            map.insert(key, value);
        }
    }

    fn clear(&self, which: impl Fn(&K) -> bool) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        map.retain(|k, _| !which(k));
    }
}

/// Counts running invocations so shutdown can wait for all of them.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// Held while one invocation runs.
#[derive(Debug)]
pub struct InFlightGuard<'a>(&'a InFlight);

impl InFlight {
    pub fn enter(&self) -> InFlightGuard<'_> {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self)
    }

    /// Resolves once no invocation runs.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Runtime(#[from] sovra_runtime::StartError),
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl AppState {
    /// Opens everything under the data directory. `worker` is the `sovra`
    /// binary that compiles submissions.
    pub fn open(
        config: NodeConfig,
        models: Arc<ModelRegistry>,
        worker: PathBuf,
    ) -> Result<Self, StartError> {
        let operator_token = config.operator_token()?;
        let data_dir = config.data_dir.clone();
        let io = |path: &std::path::Path| {
            let path = path.to_owned();
            move |source| StartError::Io { path, source }
        };
        std::fs::create_dir_all(&data_dir).map_err(io(&data_dir))?;
        let node_db = data_dir.join(NODE_DB_FILE);
        let node_key = NodeKey::load(&config.node_key, &data_dir, || {
            sovra_runtime::sealing::key_file::path_for(&node_db).exists()
        })
        .map_err(|e| StartError::Runtime(e.into()))?;
        tracing::info!(fingerprint = %node_key.fingerprint(), "node key");
        let db = NodeDb::open(&node_db, &node_key)?;
        let signer =
            crate::export::signing_key(&data_dir, &node_key).map_err(|e| StartError::Io {
                path: data_dir.join(crate::export::SIGNING_KEY_FILE),
                source: std::io::Error::other(e.to_string()),
            })?;
        let live_keys = LiveKeys::load(|| db.live_key_hashes())?;
        let artifacts = ArtifactStore::open(&data_dir).map_err(io(&data_dir))?;
        let budget = DescriptorBudget::for_this_process(
            config.limits.max_connections,
            config.limits.max_open_tenant_dbs,
        );
        tracing::info!(
            limit = budget.limit,
            connections = budget.connections,
            tenant_databases = budget.tenant_dbs,
            "file descriptor budget"
        );
        let mut runtime_config = RuntimeConfig::new(data_dir.join("runtime"));
        runtime_config.models = Arc::clone(&models);
        runtime_config.node_key = Some(node_key);
        runtime_config.max_open_tenant_dbs = budget.tenant_dbs;
        // Where the compile worker writes and the runtime reads compiled code.
        let compiled_dir = data_dir.join("runtime").join("compiled");
        runtime_config.compiled_dir = Some(compiled_dir.clone());
        std::fs::create_dir_all(&compiled_dir).map_err(io(&compiled_dir))?;
        let runtime = Runtime::new(runtime_config)?;
        let mut quotas = Vec::new();
        for (tenant, spec) in db.all_quotas()? {
            let parsed: Quotas = serde_json::from_str(&spec).map_err(|e| StartError::Io {
                path: data_dir.join(NODE_DB_FILE),
                source: std::io::Error::other(format!("quotas of tenant {tenant}: {e}")),
            })?;
            if let Ok(id) = TenantId::new(&tenant) {
                runtime
                    .set_storage_limits(&id, parsed.storage_limits())
                    .map_err(|e| StartError::Io {
                        path: data_dir.join(NODE_DB_FILE),
                        source: std::io::Error::other(e.to_string()),
                    })?;
            }
            quotas.push((tenant, parsed));
        }
        Ok(AppState {
            compiler: CompileWorker {
                program: worker,
                limits: config.compile,
            },
            limiter: TenantLimiter::new(config.limits),
            config,
            db,
            runtime,
            models,
            artifacts,
            compiled_dir,
            metrics: Metrics::default(),
            draining: AtomicBool::new(false),
            refusals: RefusalAudit::default(),
            budget,
            connections: Connections::new(budget.connections),
            in_flight: InFlight::default(),
            episodes: Arc::default(),
            compile_slots: Semaphore::new(MAX_CONCURRENT_COMPILES),
            signer,
            quotas: Arc::new(QuotaBook::new(quotas)),
            operator_token,
            keys: Generational::new(),
            live_keys,
            installs: Generational::new(),
        })
    }

    /// Resolves a bearer credential.
    pub fn caller(&self, bearer: Option<&str>) -> Result<Caller, DbError> {
        let Some(token) = bearer.filter(|t| !t.is_empty()) else {
            return Ok(Caller::Anonymous);
        };
        if is_operator_token(token, &self.operator_token) {
            return Ok(Caller::Operator);
        }
        let hash = hash_key(token);
        if let Some(caller) = self.keys.get(&hash) {
            return Ok(caller);
        }
        if !self.live_keys.may_be_live(&hash) {
            return Ok(Caller::Anonymous);
        }
        let generation = self.keys.generation();
        let caller = match self.db.tenant_of_key(&hash)? {
            None => Caller::Anonymous,
            Some(tenant) => match self.db.tenant(&tenant)? {
                Some(row) if !row.disabled => Caller::Tenant(tenant),
                _ => Caller::DisabledTenant(tenant),
            },
        };
        // Unknown keys are not cached: a flood of random keys must not grow
        // the cache (and the live set keeps them from reaching the database).
        if caller != Caller::Anonymous {
            self.keys.store(hash, caller.clone(), generation);
        }
        Ok(caller)
    }

    /// Records a key just stored in the database.
    pub fn key_added(&self, hash: String) {
        self.live_keys.add(hash);
    }

    /// Forgets cached credentials and rereads the live keys (after a
    /// revocation or a tenant change). The cache is cleared first and
    /// whatever happens: a stale entry in the live set only sends a key to
    /// the database, which has the final say.
    pub fn forget_keys(&self) {
        self.keys.clear(|_| true);
        if let Err(error) = self.live_keys.reload(|| self.db.live_key_hashes()) {
            tracing::warn!(%error, "cannot reread the live API keys; unknown keys reach the database until the next change");
        }
    }

    /// `tenant`'s signed export (see [`crate::export`]): its database, kv,
    /// SQL and vector contents, installs, usage and audit chain.
    pub fn export_tenant(&self, tenant: &sovra_runtime::TenantId) -> Result<Vec<u8>, String> {
        let db = self
            .runtime
            .tenant_storage(tenant)
            .map_err(|e| e.to_string())?;
        let conn = db.connect().map_err(|e| e.to_string())?;
        let installs = self
            .db
            .installs(tenant.as_str())
            .map_err(|e| e.to_string())?;
        let records =
            crate::export::TenantRecords::gather(tenant.as_str(), &installs, self.runtime.audit())
                .map_err(|e| e.to_string())?;
        let mut archive = Vec::new();
        crate::export::write(&conn, &records, &self.signer, &mut archive)
            .map_err(|e| e.to_string())?;
        Ok(archive)
    }

    /// What `tenant`'s calls starting now may spend on models, if it has
    /// token quotas.
    pub fn token_budget(
        &self,
        tenant: &str,
    ) -> Option<Arc<dyn sovra_runtime::budget::TokenBudget>> {
        let now = crate::db::now_ms().max(0) as u64;
        self.quotas.token_budget(tenant, self.runtime.audit(), now)
    }

    /// Forgets every cached install of `tenant` (after it was erased).
    pub fn forget_installs_of(&self, tenant: &str) {
        self.installs.clear(|(t, _)| t.as_str() == tenant);
    }

    /// Forgets a cached install (after it changed or went away).
    pub fn forget_install(&self, tenant: &str, plugin: &str) {
        self.installs
            .clear(|(t, p)| t.as_str() == tenant && p.as_str() == plugin);
    }

    pub fn cached_install(&self, tenant: &str, plugin: &str) -> Option<Arc<ReadyInstall>> {
        self.installs.get(&(tenant.to_owned(), plugin.to_owned()))
    }

    /// Generation of the install cache, read before loading an install.
    pub fn install_generation(&self) -> u64 {
        self.installs.generation()
    }

    /// Caches a loaded install unless installs changed since `generation`.
    pub fn cache_install(&self, install: Arc<ReadyInstall>, generation: u64) {
        let key = (install.row.tenant.clone(), install.row.plugin.clone());
        self.installs.store(key, install, generation);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_lookup_that_started_before_a_clear_is_not_cached() {
        let cache: Generational<&str, u32> = Generational::new();
        let before = cache.generation();
        cache.clear(|_| true); // a revocation lands while the lookup runs
        cache.store("key", 1, before);
        assert_eq!(cache.get(&"key"), None);
        let now = cache.generation();
        cache.store("key", 2, now);
        assert_eq!(cache.get(&"key"), Some(2));
        cache.clear(|k| *k == "other");
        assert_eq!(
            cache.get(&"key"),
            Some(2),
            "clears take only what they name"
        );
    }

    #[tokio::test]
    async fn idle_waits_for_every_running_invocation() {
        let in_flight = Arc::new(InFlight::default());
        in_flight.idle().await;
        let guard = in_flight.enter();
        let waiter = {
            let in_flight = Arc::clone(&in_flight);
            tokio::spawn(async move { in_flight.idle().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(guard);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
