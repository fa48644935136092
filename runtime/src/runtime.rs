//! The [`Runtime`]: loads agent components once and runs each invocation in a
//! fresh sandbox holding only what the tenant granted.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use sovra_gpu::ModelRegistry;
use tracing::Instrument;
use wasmtime::component::Linker;
use wasmtime::{Engine, Store};

use crate::audit::{AuditLog, AuditReceipt, AuditRecord, unix_millis};
use crate::bindings::{self, GuestError};
use crate::capability::ImportNeed;
use crate::component::{ComponentInfo, check_manifest_matches};
use crate::digest::Digest;
use crate::engine::{CompileCache, EpochTicker, new_engine};
use crate::error::{AgentError, AgentErrorKind, InvokeError, LoadError};
use crate::fair_share::{ExecutionSlots, Turns};
use crate::invocation::{AgentResponse, Invocation, InvocationReport};
use crate::limits::{
    HOST_CALL_GRACE, MAX_COMPONENT_BYTES, MAX_CONCURRENT_INVOCATIONS, MAX_HOST_CALLS,
    MAX_HOSTCALL_BYTES, MAX_INPUT_BYTES, MemoryLimiter, TOOL_DESCRIBE_TIMEOUT,
};
use crate::manifest::{AgentManifest, World};
use crate::names::TenantId;
use crate::outcome::{agent_error, classify_trap, command_outcome};
use crate::sandbox::{
    Access, DeadlineExceeded, GrantedStorage, Identity, InferenceAccess, Sandbox, ToolAccess,
};
use crate::sealing::{NodeKey, NodeKeySource, SealingError};
use crate::storage::{DataDirLock, DirLockError, StorageError, TENANTS_DIR, TenantStores};

/// File name of the audit database inside a runtime's data directory.
pub const AUDIT_DB_FILE: &str = "audit.db";
use crate::tools::DescribedTool;

/// How a node's runtime is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Root of everything the runtime writes: tenant databases, the audit
    /// log, compiled components.
    pub data_dir: PathBuf,
    /// Size limit of each tenant's database.
    pub storage_quota: u64,
    /// Tenant databases kept open at once (see [`TenantStores`]); a node
    /// sizes this to its file-descriptor budget.
    pub max_open_tenant_dbs: usize,
    /// Models this node serves.
    pub models: Arc<ModelRegistry>,
    /// Where compiled components are kept between runs (`None`: compile on
    /// every start). Defaults to `<data_dir>/compiled`.
    pub compiled_dir: Option<PathBuf>,
    /// The key that seals every database's key (`None`: the default
    /// source, [`NodeKeySource::Default`], over `data_dir`).
    pub node_key: Option<NodeKey>,
}

impl RuntimeConfig {
    /// Defaults: no models, the default quota, compiled-code cache on.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        RuntimeConfig {
            compiled_dir: Some(data_dir.join("compiled")),
            data_dir,
            storage_quota: crate::limits::DEFAULT_STORAGE_QUOTA,
            max_open_tenant_dbs: crate::storage::DEFAULT_MAX_OPEN_TENANT_DBS,
            models: Arc::new(ModelRegistry::empty()),
            node_key: None,
        }
    }
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Sealing(#[from] SealingError),
    #[error(transparent)]
    DirLock(#[from] DirLockError),
    #[error("cannot set up the wasm engine: {0}")]
    Engine(String),
}

/// A loaded agent: its manifest, what it imports, and its pre-linked
/// instance template. Cheap to share; instantiating it is the per-call cost.
pub struct Agent {
    info: ComponentInfo,
    manifest: AgentManifest,
    needs: Vec<(String, ImportNeed)>,
    entry: Entry,
}

/// A component that passed [`Runtime::inspect`].
#[derive(Debug, Clone)]
pub struct Inspection {
    pub info: ComponentInfo,
    /// The manifest in force: the one given, or the component's own.
    pub manifest: AgentManifest,
    /// What each import needs of the tenant's grants.
    pub needs: Vec<(String, ImportNeed)>,
}

#[derive(Clone)]
enum Entry {
    Handler(bindings::AgentPre<Sandbox>),
    Tool(bindings::tool::ToolPre<Sandbox>),
    Controller(bindings::controller::ControllerPre<Sandbox>),
    /// A WASI command (`wasi:cli/run`): input on stdin, stdout the output.
    Command(wasmtime_wasi::p2::bindings::CommandPre<Sandbox>),
    /// An HTTP handler (`wasi:http/incoming-handler`): each invocation a request.
    Http(wasmtime_wasi_http::p2::bindings::ProxyPre<Sandbox>),
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("name", &self.manifest.name)
            .field("digest", &self.info.digest)
            .finish_non_exhaustive()
    }
}

impl Agent {
    pub fn manifest(&self) -> &AgentManifest {
        &self.manifest
    }

    pub fn info(&self) -> &ComponentInfo {
        &self.info
    }

    pub fn digest(&self) -> Digest {
        self.info.digest
    }

    /// What each import needs of the tenant's grants.
    pub fn needs(&self) -> &[(String, ImportNeed)] {
        &self.needs
    }

    pub(crate) fn controller_entry(&self) -> Option<&bindings::controller::ControllerPre<Sandbox>> {
        match &self.entry {
            Entry::Controller(pre) => Some(pre),
            _ => None,
        }
    }
}

/// A place among the node's live sandboxes, held for as long as a
/// controller's episode runs (an invocation holds one for its call).
pub(crate) struct SandboxPermit {
    runtime: Runtime,
}

impl Drop for SandboxPermit {
    fn drop(&mut self) {
        self.runtime.inner.sandboxes.add_permits(1);
    }
}

struct Inner {
    engine: Engine,
    linker: Linker<Sandbox>,
    compile_cache: CompileCache,
    entries: Mutex<HashMap<Digest, Entry>>,
    /// How each tool component described itself, by digest.
    described: Mutex<HashMap<Digest, Arc<DescribedTool>>>,
    /// Held shared while the runtime lives: maintenance waits for it.
    _dir_lock: DataDirLock,
    stores: TenantStores,
    audit: AuditLog,
    models: Arc<ModelRegistry>,
    /// Sandboxes alive at once (the pooling allocator's size).
    sandboxes: tokio::sync::Semaphore,
    /// Turns at running guest code, shared fairly between tenants.
    execution: Arc<ExecutionSlots>,
    /// The threads long-running guest code moves to, apart from the caller's
    /// own (a node's connections stay responsive while every slot runs one).
    executor: Executor,
    invocation_counter: AtomicU64,
    run_id: u64,
    _ticker: EpochTicker,
}

/// The sovra host runtime. Clone it freely; clones share everything.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// Starts a runtime over `config.data_dir`.
    pub fn new(config: RuntimeConfig) -> Result<Self, StartError> {
        let data_dir = &config.data_dir;
        std::fs::create_dir_all(data_dir).map_err(|source| StartError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let dir_lock = DataDirLock::shared(data_dir)?;
        let engine = new_engine().map_err(|e| StartError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        crate::host::add_to_linker(&mut linker)
            .map_err(|e| StartError::Engine(format!("{e:#}")))?;
        let ticker = EpochTicker::start(&engine).map_err(|e| StartError::Engine(e.to_string()))?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let executor = Executor::start(cores).map_err(|e| StartError::Engine(e.to_string()))?;
        let execution = ExecutionSlots::new(engine.clone(), cores);
        let audit_path = data_dir.join(AUDIT_DB_FILE);
        let node_key = match config.node_key {
            Some(key) => key,
            None => NodeKey::load(&NodeKeySource::Default, data_dir, || {
                crate::sealing::key_file::path_for(&audit_path).exists()
            })?,
        };
        let audit = AuditLog::open(&audit_path, &node_key)?;
        let compile_cache = CompileCache::new(config.compiled_dir);
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                compile_cache,
                entries: Mutex::new(HashMap::new()),
                described: Mutex::new(HashMap::new()),
                _dir_lock: dir_lock,
                stores: TenantStores::new(
                    data_dir.join(TENANTS_DIR),
                    config.storage_quota,
                    config.max_open_tenant_dbs,
                    Arc::new(node_key),
                ),
                audit,
                models: config.models,
                sandboxes: tokio::sync::Semaphore::new(MAX_CONCURRENT_INVOCATIONS as usize),
                execution,
                executor,
                invocation_counter: AtomicU64::new(0),
                run_id: unix_millis(SystemTime::now()),
                _ticker: ticker,
            }),
        })
    }

    /// `tenant`'s own database, for what the host records there itself
    /// (controller episodes).
    pub fn tenant_storage(
        &self,
        tenant: &TenantId,
    ) -> Result<Arc<crate::storage::TenantDb>, StorageError> {
        self.inner.stores.get(tenant)
    }

    /// Erases `tenant`'s storage (see [`TenantStores::erase`]): refused as
    /// busy while one of its invocations holds it.
    pub fn erase_tenant(&self, tenant: &TenantId) -> Result<(), StorageError> {
        self.inner.stores.erase(tenant)
    }

    /// Sets what `tenant`'s storage is limited to, at once.
    pub fn set_storage_limits(
        &self,
        tenant: &TenantId,
        limits: crate::storage::TenantLimits,
    ) -> Result<(), StorageError> {
        self.inner.stores.set_limits(tenant, limits)
    }

    /// Lets a tenant created anew under an erased tenant's name have
    /// (empty) storage.
    pub fn admit_tenant(&self, tenant: &TenantId) {
        self.inner.stores.admit(tenant)
    }

    /// The audit log of every invocation.
    pub fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }

    /// Reads and loads the component at `path` (see [`Runtime::load`]).
    pub fn load_file(
        &self,
        path: &Path,
        manifest: Option<AgentManifest>,
    ) -> Result<Arc<Agent>, LoadError> {
        self.load(&read_component(path)?, manifest)
    }

    /// Checks a component without compiling it: its size, that it is a
    /// component of a sovra world, that its imports are ones the host
    /// provides, and that they are what its manifest asks (`manifest`
    /// overrides the one the component carries). The checks every load and
    /// every marketplace submission share.
    pub fn inspect(bytes: &[u8], manifest: Option<AgentManifest>) -> Result<Inspection, LoadError> {
        if bytes.len() as u64 > MAX_COMPONENT_BYTES {
            return Err(LoadError::TooLarge {
                size: bytes.len() as u64,
                max: MAX_COMPONENT_BYTES,
            });
        }
        let info = ComponentInfo::read(bytes)?;
        let needs = info.import_needs()?;
        let manifest = manifest
            .or_else(|| info.manifest.clone())
            .ok_or(LoadError::MissingManifest)?;
        check_manifest_matches(&info, &manifest)?;
        Ok(Inspection {
            info,
            manifest,
            needs,
        })
    }

    /// Loads a component: [`Runtime::inspect`]s it, then compiles and links
    /// it once per digest.
    pub fn load(
        &self,
        bytes: &[u8],
        manifest: Option<AgentManifest>,
    ) -> Result<Arc<Agent>, LoadError> {
        let Inspection {
            info,
            manifest,
            needs,
        } = Self::inspect(bytes, manifest)?;
        let entry = self.entry(&info, bytes)?;
        Ok(Arc::new(Agent {
            info,
            manifest,
            needs,
            entry,
        }))
    }

    /// The linked instance template for a component, compiled at most once.
    fn entry(&self, info: &ComponentInfo, bytes: &[u8]) -> Result<Entry, LoadError> {
        let inner = &self.inner;
        if let Some(entry) = inner
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&info.digest)
        {
            return Ok(entry.clone());
        }
        let component = inner
            .compile_cache
            .load(&inner.engine, &info.digest, bytes)?;
        let link_error = |e: wasmtime::Error| {
            LoadError::Malformed(format!(
                "its imports do not match what sovra provides: {e:#}"
            ))
        };
        let pre = inner
            .linker
            .instantiate_pre(&component)
            .map_err(link_error)?;
        let entry = match info.world {
            World::Agent => Entry::Handler(bindings::AgentPre::new(pre).map_err(link_error)?),
            World::Tool => Entry::Tool(bindings::tool::ToolPre::new(pre).map_err(link_error)?),
            World::Controller => Entry::Controller(
                bindings::controller::ControllerPre::new(pre).map_err(link_error)?,
            ),
            World::Command => Entry::Command(
                wasmtime_wasi::p2::bindings::CommandPre::new(pre).map_err(link_error)?,
            ),
            World::Http => Entry::Http(
                wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre).map_err(link_error)?,
            ),
        };
        inner
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(info.digest, entry.clone());
        Ok(entry)
    }

    /// Whether the compiled code of the component with `digest` is in the
    /// compiled-code cache (so [`Runtime::load`] will not compile it).
    pub fn is_compiled(&self, digest: &Digest) -> bool {
        self.inner
            .compile_cache
            .path_for(&self.inner.engine, digest)
            .is_some_and(|path| path.exists())
    }

    fn next_invocation_id(&self) -> String {
        let n = self
            .inner
            .invocation_counter
            .fetch_add(1, Ordering::Relaxed);
        format!("{:x}-{n}", self.inner.run_id)
    }

    /// Runs one invocation of `agent` in a fresh sandbox. Never panics on
    /// guest behaviour: every fault is a typed [`InvokeError`] in the report.
    pub async fn invoke(&self, agent: &Agent, invocation: Invocation) -> InvocationReport {
        let invocation_id = self.next_invocation_id();
        let span = tracing::info_span!(
            "invocation",
            tenant = %invocation.tenant,
            agent = %agent.manifest.name,
            invocation = %invocation_id,
        );
        let started_at = SystemTime::now();
        let started = Instant::now();
        let tenant = invocation.tenant.clone();
        let parent = invocation.call_chain.as_ref().map(|c| c.parent.clone());
        let (report, denials) = self
            .run(agent, invocation, invocation_id)
            .instrument(span.clone())
            .await;
        let report = InvocationReport {
            duration: started.elapsed(),
            ..report
        };
        span.in_scope(|| match &report.result {
            Ok(_) => tracing::debug!(
                duration_us = report.duration.as_micros() as u64,
                "invocation succeeded"
            ),
            Err(error) => tracing::info!(kind = error.kind(), %error, "invocation failed"),
        });
        let audited = self.inner.audit.record(AuditRecord {
            invocation_id: report.invocation_id.clone(),
            tenant: tenant.to_string(),
            agent: agent.manifest.name.clone(),
            agent_digest: agent.info.digest.to_string(),
            started_at_ms: unix_millis(started_at),
            duration_us: report.duration.as_micros() as u64,
            outcome: match &report.result {
                Ok(_) => "ok".to_owned(),
                Err(error) => error.kind().to_owned(),
            },
            error: report.result.as_ref().err().map(ToString::to_string),
            denials,
            usage: report.usage.clone(),
            parent,
        });
        InvocationReport { audited, ..report }
    }

    async fn run(
        &self,
        agent: &Agent,
        mut invocation: Invocation,
        invocation_id: String,
    ) -> (InvocationReport, Vec<String>) {
        let empty = |result, denials| {
            (
                InvocationReport {
                    invocation_id: invocation_id.clone(),
                    result: Err(result),
                    stdout: Vec::new(),
                    stderr: Vec::new(),
                    logs: Vec::new(),
                    dropped_logs: 0,
                    generated_tokens: 0,
                    usage: Vec::new(),
                    host_calls: 0,
                    duration: Duration::ZERO,
                    audited: AuditReceipt::default(),
                },
                denials,
            )
        };
        if let Err(error) = invocation.limits.validate() {
            return empty(error.into(), Vec::new());
        }
        if invocation.input.len() > MAX_INPUT_BYTES {
            return empty(
                InvokeError::InvalidInvocation(format!(
                    "input is {} bytes; the limit is {MAX_INPUT_BYTES}",
                    invocation.input.len()
                )),
                Vec::new(),
            );
        }
        // Grants are checked against the imports before anything runs.
        for (interface, need) in &agent.needs {
            if let ImportNeed::Grant(capability) = need
                && !invocation.grants.allows(*capability)
            {
                return empty(
                    InvokeError::NotGranted {
                        interface: interface.clone(),
                        capability: *capability,
                    },
                    vec![format!("import: {interface}")],
                );
            }
        }
        let call = match agent.entry {
            Entry::Handler(_) => Call::Handle(bindings::exports::sovra::agent::handler::Request {
                input: std::mem::take(&mut invocation.input),
                metadata: std::mem::take(&mut invocation.metadata)
                    .into_iter()
                    .map(|(key, value)| bindings::Pair { key, value })
                    .collect(),
            }),
            Entry::Tool(_) => Call::Tool(std::mem::take(&mut invocation.input)),
            // The input goes to the command's stdin (see `new_store`).
            Entry::Command(_) => Call::Run,
            Entry::Http(_) => {
                let input = std::mem::take(&mut invocation.input);
                match crate::http_trigger::request(input, &invocation.metadata) {
                    Ok(request) => Call::Http(Box::new(request)),
                    Err(error) => return empty(error, Vec::new()),
                }
            }
            Entry::Controller(_) => {
                return empty(
                    InvokeError::InvalidInvocation(format!(
                        "`{}` is a controller: it runs in episodes (`sovra control`), not \
                         invocations",
                        agent.manifest.name
                    )),
                    Vec::new(),
                );
            }
        };
        let Executed {
            result,
            sandbox,
            stdio,
        } = match self.execute(agent, &invocation, &invocation_id, call).await {
            Ok(executed) => executed,
            Err(error) => return empty(error, Vec::new()),
        };
        let mut stdout = stdio.stdout.contents();
        let result = result.and_then(|answer| match answer {
            Answer::Response(response) => Ok(response),
            Answer::Exited(status) => command_outcome(
                status,
                std::mem::take(&mut stdout),
                &stdio.stderr.contents(),
            ),
            Answer::Described(_) => Err(InvokeError::Internal(
                "a call answered with a description".into(),
            )),
        });
        let usage = crate::invocation::usage_by_model(&sandbox.meters);
        let result = result.map_err(|error| blame_the_host_for_its_unavailability(error, &sandbox));
        (
            InvocationReport {
                invocation_id,
                result,
                stdout,
                stderr: stdio.stderr.contents(),
                logs: sandbox.logs.lines,
                dropped_logs: sandbox.logs.dropped,
                generated_tokens: usage.iter().map(|u| u.generated_tokens).sum(),
                usage,
                host_calls: sandbox.host_calls,
                duration: Duration::ZERO,
                audited: AuditReceipt::default(),
            },
            sandbox.denials,
        )
    }

    /// Runs `call` on a fresh instance of `agent` in a fresh sandbox set up
    /// for `invocation`, once its tenant's turn at an execution slot has
    /// come: first on this task's thread, moved to the guest executor if it
    /// runs long.
    async fn execute(
        &self,
        agent: &Agent,
        invocation: &Invocation,
        invocation_id: &str,
        call: Call,
    ) -> Result<Executed, InvokeError> {
        let Ok(_sandbox) = self.inner.sandboxes.acquire().await else {
            return Err(InvokeError::Unavailable(
                "the runtime is shutting down".into(),
            ));
        };
        let (mut store, stdio) = self.new_store(agent, invocation, invocation_id)?;
        let limits = invocation.limits;
        let turns = Arc::clone(&store.data().turns);
        let reservation = turns.reserve();
        let entry = agent.entry.clone();
        let guest = Box::pin(async move {
            store.data().turns.begin_with(reservation).await;
            store.data().turns.start_inline();
            let call = call_entry(&entry, &mut store, call);
            let outcome = tokio::time::timeout(limits.timeout + HOST_CALL_GRACE, call).await;
            store.data().turns.end();
            (outcome, store)
        });
        let (outcome, store) = match self.run_inline_then_move(guest, &turns).await {
            Ok(finished) => finished,
            Err(error) => {
                turns.end();
                return Err(InvokeError::Internal(format!(
                    "the invocation's task failed: {error}"
                )));
            }
        };
        let result = match outcome {
            Err(_elapsed) => Err(InvokeError::Timeout {
                limit: limits.timeout,
            }),
            Ok(Err(trap)) => Err(classify_trap(&trap, store.data(), limits)),
            Ok(Ok(Err(guest_error))) => Err(InvokeError::Agent(agent_error(guest_error))),
            Ok(Ok(Ok(answer))) => Ok(answer),
        };
        Ok(Executed {
            result,
            sandbox: store.into_data(),
            stdio,
        })
    }

    /// How `tool` describes itself, with its input schema compiled: asked
    /// once per component (in a sandbox with no grants, as `tenant`, under
    /// [`TOOL_DESCRIBE_TIMEOUT`]) and kept.
    pub(crate) async fn describe_tool(
        &self,
        tool: &Agent,
        tenant: &TenantId,
    ) -> Result<Arc<DescribedTool>, String> {
        let digest = tool.info.digest;
        if let Some(known) = self
            .inner
            .described
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
        {
            return Ok(Arc::clone(known));
        }
        if !matches!(tool.entry, Entry::Tool(_)) {
            return Err(format!(
                "it is not a tool (its world is `{}`)",
                tool.manifest.world.as_str()
            ));
        }
        let mut invocation = Invocation::new(tenant.clone(), "");
        invocation.limits.timeout = TOOL_DESCRIBE_TIMEOUT;
        let id = format!("{}-describe", self.next_invocation_id());
        let executed = self
            .execute(tool, &invocation, &id, Call::Describe)
            .await
            .map_err(|e| format!("it could not describe itself: {e}"))?;
        let info = match executed.result {
            Ok(Answer::Described(info)) => info,
            Ok(Answer::Response(_) | Answer::Exited(_)) => {
                return Err("it answered `describe` with a response".into());
            }
            Err(error) => return Err(format!("it could not describe itself: {error}")),
        };
        let described = Arc::new(DescribedTool::new(
            info.name,
            info.description,
            info.input_schema,
        )?);
        self.inner
            .described
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest, Arc::clone(&described));
        Ok(described)
    }

    /// Polls `guest` here until it finishes, or until it has run past its
    /// inline budget; then hands it to the guest executor and waits for it
    /// there (a started future may move between threads).
    async fn run_inline_then_move<F>(
        &self,
        guest: Pin<Box<F>>,
        turns: &Turns,
    ) -> Result<F::Output, tokio::task::JoinError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let mut guest = Some(guest);
        let inline = std::future::poll_fn(|cx| {
            let running = guest.as_mut().expect("polled until it moves");
            match running.as_mut().poll(cx) {
                Poll::Ready(output) => Poll::Ready(Some(output)),
                Poll::Pending if turns.should_move() => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match inline {
            Some(output) => Ok(output),
            None => {
                let moved = guest.take().expect("not finished");
                self.inner.executor.spawn(moved).await
            }
        }
    }

    /// A place among the node's live sandboxes, now or never.
    pub(crate) fn try_sandbox_permit(&self) -> Result<SandboxPermit, InvokeError> {
        match self.inner.sandboxes.try_acquire() {
            Ok(permit) => {
                permit.forget();
                Ok(SandboxPermit {
                    runtime: self.clone(),
                })
            }
            Err(_) => Err(InvokeError::Unavailable(
                "the node runs as many sandboxes as it can; retry later".into(),
            )),
        }
    }

    /// A fresh store for one invocation: WASI slice, grants, limits, deadline.
    pub(crate) fn new_store(
        &self,
        agent: &Agent,
        invocation: &Invocation,
        invocation_id: &str,
    ) -> Result<(Store<Sandbox>, crate::host::wasi::CapturedStdio), InvokeError> {
        let imports = |capability| {
            agent
                .needs
                .iter()
                .any(|(_, need)| *need == ImportNeed::Grant(capability))
        };
        let wants_kv = invocation.grants.kv && imports(crate::Capability::Kv);
        let wants_sql = invocation.grants.sql && imports(crate::Capability::Sql);
        let wants_vector = invocation.grants.vector && imports(crate::Capability::Vector);
        let db = if wants_kv || wants_sql || wants_vector {
            Some(
                self.inner
                    .stores
                    .get(&invocation.tenant)
                    .map_err(storage_unavailable)?,
            )
        } else {
            None
        };
        let deadline = Instant::now() + invocation.limits.timeout;
        let turns = Turns::new(Arc::clone(&self.inner.execution), invocation.tenant.clone());
        let command_stdin = matches!(agent.entry, Entry::Command(_))
            .then(|| (agent.manifest.name.as_str(), invocation.input.as_bytes()));
        let (wasi, stdio) = crate::host::wasi::sandbox_ctx(command_stdin);
        let sandbox = Sandbox::new(
            wasi,
            MemoryLimiter::new(invocation.limits.max_memory),
            Arc::new(Identity {
                tenant: invocation.tenant.clone(),
                agent: agent.manifest.name.clone(),
                invocation_id: invocation_id.to_owned(),
            }),
            Access {
                storage: GrantedStorage {
                    kv: db.clone().filter(|_| wants_kv),
                    sql: db.clone().filter(|_| wants_sql),
                    vector: db.filter(|_| wants_vector),
                },
                inference: InferenceAccess {
                    registry: Arc::clone(&self.inner.models),
                    grants: Arc::new(invocation.grants.clone()),
                    deadline,
                    budget: invocation.token_budget.clone(),
                },
                tools: ToolAccess {
                    catalog: invocation.tools.clone(),
                    runtime: self.clone(),
                    depth: invocation.call_chain.as_ref().map_or(0, |c| c.depth),
                    calls: 0,
                },
                host_call_limit: invocation
                    .call_chain
                    .as_ref()
                    .map_or(MAX_HOST_CALLS, |c| c.host_calls_left),
            },
            invocation.events.clone(),
            Arc::clone(&turns),
        );
        let mut store = Store::new(&self.inner.engine, sandbox);
        store.limiter(|sandbox| &mut sandbox.limiter);
        store.set_hostcall_fuel(MAX_HOSTCALL_BYTES);
        // Check the deadline at every epoch tick, and yield to other
        // invocations while it has not passed.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else {
                Ok(turns.at_tick())
            }
        });
        Ok((store, stdio))
    }
}

/// The caller's view of a tenant database that could not be opened: the
/// full error (with the host's paths) is for the operator's log only.
fn storage_unavailable(error: StorageError) -> InvokeError {
    if let StorageError::Busy(reason) = &error {
        tracing::warn!(%reason, "tenant storage busy");
        return InvokeError::Unavailable("tenant storage is busy; retry later".into());
    }
    tracing::error!(%error, "cannot open the tenant's storage");
    InvokeError::Unavailable("tenant storage is unavailable".into())
}

/// The bytes of the component file at `path`, refusing a file larger than
/// any component may be before reading it.
pub fn read_component(path: &Path) -> Result<Vec<u8>, LoadError> {
    let io_error = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io_error)?.len();
    if size > MAX_COMPONENT_BYTES {
        return Err(LoadError::TooLarge {
            size,
            max: MAX_COMPONENT_BYTES,
        });
    }
    std::fs::read(path).map_err(io_error)
}

/// An agent that returns the `unavailable` error the host gave it (its
/// storage stayed busy, or could not be opened) failed because of the node,
/// not of its own doing: the invocation is `unavailable`, which callers retry.
fn blame_the_host_for_its_unavailability(error: InvokeError, sandbox: &Sandbox) -> InvokeError {
    match error {
        InvokeError::Agent(AgentError {
            kind: AgentErrorKind::Unavailable,
            message,
        }) if sandbox.host_unavailable => InvokeError::Unavailable(message),
        other => other,
    }
}

/// What is asked of an instance.
enum Call {
    /// An agent's `handle`.
    Handle(bindings::exports::sovra::agent::handler::Request),
    /// A tool's `call`, with its input.
    Tool(String),
    /// A tool's `describe`.
    Describe,
    /// A command's `run`.
    Run,
    /// An HTTP handler's `handle`, with the request.
    Http(Box<http::Request<http_body_util::Full<bytes::Bytes>>>),
}

/// What an instance answered.
enum Answer {
    Response(AgentResponse),
    Described(bindings::ToolInfo),
    /// A command finished with this exit status.
    Exited(i32),
}

/// A finished call and the sandbox it ran in.
struct Executed {
    result: Result<Answer, InvokeError>,
    sandbox: Sandbox,
    stdio: crate::host::wasi::CapturedStdio,
}

/// Instantiates the agent's template in `store` and makes `call`.
async fn call_entry(
    entry: &Entry,
    store: &mut Store<Sandbox>,
    call: Call,
) -> wasmtime::Result<Result<Answer, GuestError>> {
    let response = |output| {
        Answer::Response(AgentResponse {
            output,
            metadata: Vec::new(),
        })
    };
    match (entry, call) {
        (Entry::Handler(pre), Call::Handle(request)) => {
            let instance = pre.instantiate_async(&mut *store).await?;
            let result = instance
                .sovra_agent_handler()
                .call_handle(&mut *store, &request)
                .await?;
            Ok(result.map(|response| {
                Answer::Response(AgentResponse {
                    output: response.output,
                    metadata: response
                        .metadata
                        .into_iter()
                        .map(|pair| (pair.key, pair.value))
                        .collect(),
                })
            }))
        }
        (Entry::Tool(pre), Call::Tool(input)) => {
            let instance = pre.instantiate_async(&mut *store).await?;
            let result = instance
                .sovra_agent_tool_handler()
                .call_call(&mut *store, &input)
                .await?;
            Ok(result.map(response))
        }
        (Entry::Http(pre), Call::Http(request)) => {
            Ok(crate::http_trigger::call(pre, store, *request)
                .await?
                .map(Answer::Response))
        }
        (Entry::Command(pre), Call::Run) => {
            let instance = pre.instantiate_async(&mut *store).await?;
            match instance.wasi_cli_run().call_run(&mut *store).await {
                Ok(Ok(())) => Ok(Ok(Answer::Exited(0))),
                Ok(Err(())) => Ok(Ok(Answer::Exited(1))),
                Err(trap) => match trap.downcast_ref::<wasmtime_wasi::I32Exit>() {
                    Some(exit) => Ok(Ok(Answer::Exited(exit.0))),
                    None => Err(trap),
                },
            }
        }
        (Entry::Tool(pre), Call::Describe) => {
            let instance = pre.instantiate_async(&mut *store).await?;
            let info = instance
                .sovra_agent_tool_handler()
                .call_describe(&mut *store)
                .await?;
            Ok(Ok(Answer::Described(info)))
        }
        _ => Err(wasmtime::Error::msg(
            "the call does not match the component's world",
        )),
    }
}

/// How much lower than the node's own threads the OS schedules guest code.
/// Stops: guests spinning on every core making the node's threads (its
/// connections, `/healthz`, the inference scheduler) wait for the OS's time
/// slices.
const GUEST_THREAD_NICENESS: i32 = 10;

/// A multi-threaded tokio runtime for guest code, one worker per core. Shut
/// down in the background when dropped (a runtime dropped inside another's
/// task may not block).
struct Executor(Option<tokio::runtime::Runtime>);

impl Executor {
    fn start(workers: usize) -> std::io::Result<Self> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("sovra-guest")
            .on_thread_start(|| {
                // Per thread on Linux: only the guest threads yield.
                if let Err(error) = rustix::process::nice(GUEST_THREAD_NICENESS) {
                    tracing::warn!(%error, "cannot lower the guest threads' priority");
                }
            })
            .enable_time()
            .build()
            .map(|runtime| Executor(Some(runtime)))
    }

    fn spawn<F: Future + Send + 'static>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F::Output: Send + 'static,
    {
        self.0.as_ref().expect("running until dropped").spawn(work)
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
