//! What the node holds while it serves: configuration, the node database,
//! the runtime, the artifact store, admission and metrics, plus two caches
//! that keep the invocation path off SQLite (API keys to tenants, and
//! installs with their loaded agents). Every write that changes what a cache
//! holds clears it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sovra_gpu::ModelRegistry;
use sovra_runtime::{Agent, Grants, Limits, Runtime, RuntimeConfig};

use crate::artifacts::ArtifactStore;
use crate::compile::CompileWorker;
use crate::config::NodeConfig;
use crate::db::{DbError, InstallRow, NODE_DB_FILE, NodeDb};
use crate::keys::{hash_key, is_operator_token};
use crate::limiter::TenantLimiter;
use crate::metrics::Metrics;

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
    operator_token: String,
    keys: RwLock<HashMap<String, Caller>>,
    installs: RwLock<HashMap<(String, String), Arc<ReadyInstall>>>,
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
        let db = NodeDb::open(&data_dir.join(NODE_DB_FILE))?;
        let artifacts = ArtifactStore::open(&data_dir).map_err(io(&data_dir))?;
        let mut runtime_config = RuntimeConfig::new(data_dir.join("runtime"));
        runtime_config.models = Arc::clone(&models);
        let compiled_dir = runtime_config
            .compiled_dir
            .clone()
            .expect("the runtime caches compiled code");
        std::fs::create_dir_all(&compiled_dir).map_err(io(&compiled_dir))?;
        let runtime = Runtime::new(runtime_config)?;
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
            operator_token,
            keys: RwLock::new(HashMap::new()),
            installs: RwLock::new(HashMap::new()),
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
        if let Some(caller) = self
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hash)
        {
            return Ok(caller.clone());
        }
        let caller = match self.db.tenant_of_key(&hash)? {
            None => Caller::Anonymous,
            Some(tenant) => match self.db.tenant(&tenant)? {
                Some(row) if !row.disabled => Caller::Tenant(tenant),
                _ => Caller::DisabledTenant(tenant),
            },
        };
        // Unknown keys are not cached: a flood of random keys must not grow
        // the cache.
        if caller != Caller::Anonymous {
            self.keys
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(hash, caller.clone());
        }
        Ok(caller)
    }

    /// Forgets cached credentials (after a revocation or a tenant change).
    pub fn forget_keys(&self) {
        self.keys.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Forgets a cached install (after it changed or went away).
    pub fn forget_install(&self, tenant: &str, plugin: &str) {
        self.installs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(tenant.to_owned(), plugin.to_owned()));
    }

    pub fn cached_install(&self, tenant: &str, plugin: &str) -> Option<Arc<ReadyInstall>> {
        self.installs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(tenant.to_owned(), plugin.to_owned()))
            .cloned()
    }

    pub fn cache_install(&self, install: Arc<ReadyInstall>) {
        let key = (install.row.tenant.clone(), install.row.plugin.clone());
        self.installs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, install);
    }

    /// The limits an install runs under: what it asked for, else the
    /// runtime's defaults, never above the node's ceilings.
    pub fn install_limits(&self, timeout_ms: Option<u64>, max_memory: Option<u64>) -> Limits {
        let defaults = Limits::default();
        Limits {
            timeout: timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(defaults.timeout)
                .min(self.config.ceilings.timeout),
            max_memory: max_memory
                .unwrap_or(defaults.max_memory)
                .min(self.config.ceilings.max_memory),
        }
    }
}
