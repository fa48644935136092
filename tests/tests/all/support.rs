//! Shared set-up for the integration tests: a runtime on a temporary data
//! directory (with or without the repository's models), guests by path,
//! invocations with grants, callers (an agent called as one tenant with its
//! grants), and a bystander tenant whose calls must keep succeeding while a
//! hostile guest runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sovra_runtime::tools::{InstalledTool, StaticTools, ToolCatalog};
use sovra_runtime::{
    Agent, AgentErrorKind, Grants, Invocation, InvocationReport, InvokeError, Limits, Runtime,
    RuntimeConfig, TenantId,
};

/// A runtime and the temporary directory that holds its data.
pub struct TestRuntime {
    pub runtime: Runtime,
    pub dir: tempfile::TempDir,
}

/// Compiled components are shared between tests to save compile time.
fn shared_compiled_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("compiled")
}

pub fn config(data_dir: &Path) -> RuntimeConfig {
    RuntimeConfig {
        compiled_dir: Some(shared_compiled_dir()),
        ..RuntimeConfig::new(data_dir)
    }
}

/// A connection to one of the runtime's databases under `data_dir`, keyed
/// as an operator holding the node key would open it.
pub fn keyed_connection(data_dir: &Path, db: &Path, label: &str) -> rusqlite::Connection {
    use sovra_runtime::sealing::{NodeKey, NodeKeySource, SealedDatabase};
    let key = NodeKey::load(&NodeKeySource::Default, data_dir, || true).expect("node key");
    SealedDatabase::existing(db, &key, label)
        .and_then(|db| db.open_read_write())
        .expect("keyed connection")
}

pub fn runtime() -> TestRuntime {
    let dir = tempfile::tempdir().expect("temporary directory");
    let runtime = Runtime::new(config(dir.path())).expect("runtime starts");
    TestRuntime { runtime, dir }
}

impl TestRuntime {
    pub fn load(&self, path: &str) -> Arc<Agent> {
        load(&self.runtime, path)
    }

    /// Loads the agent at `path` and calls it as `tenant` with `grants`.
    pub fn caller(&self, path: &str, tenant: &str, grants: Grants) -> Caller {
        Caller::load(&self.runtime, path, tenant, grants)
    }

    /// Loads the hostile guest at `path`, called by the tenant `mallory`
    /// with no grants under `limits`.
    pub fn hostile(&self, path: &str, limits: Limits) -> Caller {
        self.caller(path, "mallory", Grants::none())
            .with_limits(limits)
    }
}

fn load(runtime: &Runtime, path: &str) -> Arc<Agent> {
    runtime
        .load_file(Path::new(path), None)
        .unwrap_or_else(|e| panic!("loading {path}: {e}"))
}

pub fn tenant(name: &str) -> TenantId {
    TenantId::new(name).expect("valid tenant id")
}

pub fn grants(kv: bool, sql: bool, models: &[&str]) -> Grants {
    Grants {
        kv,
        sql,
        models: models.iter().map(|m| m.to_string()).collect(),
        ..Grants::none()
    }
}

pub fn invocation(tenant_name: &str, grants: Grants, input: &str) -> Invocation {
    Invocation {
        grants,
        ..Invocation::new(tenant(tenant_name), input)
    }
}

/// A runtime serving the repository's models.toml, or `None` when the model
/// files have not been fetched (then `SOVRA_REQUIRE_MODELS` makes it fail).
pub fn runtime_with_models() -> Option<TestRuntime> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let fetched = ["SmolLM2-135M-Instruct.Q4_1.gguf", "digits.onnx"];
    if !fetched.iter().all(|f| root.join("models").join(f).exists()) {
        assert!(
            std::env::var_os("SOVRA_REQUIRE_MODELS").is_none(),
            "SOVRA_REQUIRE_MODELS is set but the models are missing; run scripts/fetch-models"
        );
        eprintln!("skipping: models not fetched (run scripts/fetch-models)");
        return None;
    }
    let registry = sovra_gpu::config::load_registry(&root.join("models.toml")).unwrap();
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = config(dir.path());
    config.models = Arc::new(registry);
    let runtime = Runtime::new(config).unwrap();
    Some(TestRuntime { runtime, dir })
}

/// One agent as one tenant calls it: loaded into a runtime, bound to the
/// tenant's grants (and, if set, its limits). Clones share the runtime and
/// the loaded agent, so a clone can be moved into a spawned task.
#[derive(Clone)]
pub struct Caller {
    runtime: Runtime,
    agent: Arc<Agent>,
    tenant: String,
    grants: Grants,
    limits: Option<Limits>,
    tools: Option<Arc<dyn ToolCatalog>>,
}

impl Caller {
    /// Loads the agent at `path` into `runtime` and calls it as `tenant`.
    pub fn load(runtime: &Runtime, path: &str, tenant: &str, grants: Grants) -> Caller {
        let agent = load(runtime, path);
        Caller {
            runtime: runtime.clone(),
            agent,
            tenant: tenant.to_owned(),
            grants,
            limits: None,
            tools: None,
        }
    }

    /// The loaded agent.
    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    /// The same agent and grants, called as another tenant.
    pub fn as_tenant(&self, tenant: &str) -> Caller {
        Caller {
            tenant: tenant.to_owned(),
            ..self.clone()
        }
    }

    /// The same agent and tenant, with other grants.
    pub fn with_grants(&self, grants: Grants) -> Caller {
        Caller {
            grants,
            ..self.clone()
        }
    }

    /// The same agent, tenant and grants, under `limits`.
    pub fn with_limits(&self, limits: Limits) -> Caller {
        Caller {
            limits: Some(limits),
            ..self.clone()
        }
    }

    /// The same caller, finding its tenant's tools in `tools`.
    pub fn with_tools(&self, tools: impl ToolCatalog + 'static) -> Caller {
        Caller {
            tools: Some(Arc::new(tools)),
            ..self.clone()
        }
    }

    /// [`Caller::with_limits`] of the default limits but for the timeout.
    pub fn with_timeout(&self, timeout: Duration) -> Caller {
        self.with_limits(Limits {
            timeout,
            ..Limits::default()
        })
    }

    /// The invocation of `input` this caller makes.
    pub fn invocation(&self, input: &str) -> Invocation {
        let mut invocation = invocation(&self.tenant, self.grants.clone(), input);
        if let Some(limits) = self.limits {
            invocation.limits = limits;
        }
        invocation.tools = self.tools.clone();
        invocation
    }

    /// Runs one invocation of `input` and returns its report.
    pub async fn report(&self, input: &str) -> InvocationReport {
        invoke(&self.runtime, &self.agent, self.invocation(input)).await
    }

    /// The output of a successful invocation of `input`, or a panic naming
    /// the error.
    pub async fn output(&self, input: &str) -> String {
        output(&self.runtime, &self.agent, self.invocation(input)).await
    }

    /// The error of a failed invocation of `input`, or a panic showing the
    /// output.
    pub async fn failure(&self, input: &str) -> InvokeError {
        failure(&self.runtime, &self.agent, self.invocation(input)).await
    }
}

/// Runs one invocation and returns its report.
pub async fn invoke(runtime: &Runtime, agent: &Agent, invocation: Invocation) -> InvocationReport {
    runtime.invoke(agent, invocation).await
}

/// The output of a successful invocation, or a panic naming the error.
pub async fn output(runtime: &Runtime, agent: &Agent, invocation: Invocation) -> String {
    let report = runtime.invoke(agent, invocation).await;
    match report.result {
        Ok(response) => response.output,
        Err(error) => panic!("invocation failed: {error} ({})", error.kind()),
    }
}

/// The error of a failed invocation, or a panic showing the output.
pub async fn failure(runtime: &Runtime, agent: &Agent, invocation: Invocation) -> InvokeError {
    let report = runtime.invoke(agent, invocation).await;
    match report.result {
        Ok(response) => panic!("invocation succeeded with {:?}", response.output),
        Err(error) => error,
    }
}

/// Short limits for hostile guests, so tests stay fast.
pub fn tight_limits() -> Limits {
    Limits {
        timeout: Duration::from_millis(1500),
        max_memory: 32 << 20,
    }
}

/// Runs `input` through `hostile` while another tenant keeps invoking
/// `hello` and `counter`; every bystander call must succeed. Returns the
/// hostile invocation's error.
pub async fn with_bystander(test: &TestRuntime, hostile: &Caller, input: &str) -> InvokeError {
    let hostile_task = tokio::spawn({
        let (hostile, input) = (hostile.clone(), input.to_owned());
        async move { hostile.report(&input).await }
    });

    let hello = test.caller(sovra_test_artifacts::HELLO, "bystander", Grants::none());
    let counter = test.caller(
        sovra_test_artifacts::COUNTER,
        "bystander",
        grants(true, false, &[]),
    );
    let mut served = 0;
    while !hostile_task.is_finished() || served < 5 {
        assert_eq!(hello.output("Bo").await, "Hello, Bo!");
        served += 1;
        assert_eq!(counter.output("calls").await, format!("calls: {served}"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let report = hostile_task.await.expect("hostile invocation task");
    // The runtime is still up for everyone, the hostile tenant included.
    assert_eq!(hello.output("again").await, "Hello, again!");
    match report.result {
        Ok(response) => panic!("hostile guest succeeded with {:?}", response.output),
        Err(error) => error,
    }
}

/// A catalog of the tools at `paths`, each loaded into `runtime` and
/// granted `grants` (its own install's), with the default limits.
pub fn tools(runtime: &Runtime, installed: &[(&str, Grants)]) -> StaticTools {
    let mut tools = StaticTools::new();
    for (path, grants) in installed {
        tools.add(InstalledTool {
            agent: load(runtime, path),
            grants: grants.clone(),
            limits: Limits::default(),
        });
    }
    tools
}

/// The typed error the guest saw (its kind and message); any other failure
/// fails the test.
pub fn agent_error(error: InvokeError) -> (AgentErrorKind, String) {
    match error {
        InvokeError::Agent(error) => (error.kind, error.message),
        other => panic!("expected the guest to see a typed error, got {other:?}"),
    }
}

/// An episode plan: `world` at `rate_hz` for `seconds` of world time, with
/// the controller's `parameters`.
pub fn plan(
    world: &str,
    rate_hz: u32,
    seconds: f64,
    pacing: sovra_control::Pacing,
    parameters: &[(&str, &str)],
) -> sovra_control::EpisodePlan {
    let mut spec = sovra_control::EpisodeSpec::new(rate_hz, Duration::from_secs_f64(seconds));
    spec.pacing = pacing;
    spec.parameters = parameters
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    sovra_control::EpisodePlan {
        world: world.to_owned(),
        world_options: sovra_control::WorldOptions::default(),
        spec,
    }
}

impl TestRuntime {
    /// Runs one episode of the controller at `path` as `tenant` with
    /// `grants`, on this thread.
    pub fn episode(
        &self,
        path: &str,
        tenant_name: &str,
        grants: Grants,
        plan: &sovra_control::EpisodePlan,
    ) -> Result<sovra_control::Episode, sovra_control::EpisodeError> {
        let setup = sovra_runtime::ControllerSetup::new(tenant(tenant_name), grants);
        sovra_control::run_sandboxed(
            &self.runtime,
            self.load(path),
            setup,
            &sovra_control::new_episode_id(),
            plan,
            &sovra_control::StopHandle::default(),
            &mut |_| {},
        )
    }
}

/// The first held-out image of the digits reference (64 comma-separated
/// pixel values) and the class numpy gave it.
pub fn digits_reference_image() -> (String, usize) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/digits.reference.json");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let pixels: Vec<String> = reference["inputs"]["pixels"]["data"].as_array().unwrap()[..64]
        .iter()
        .map(|p| p.as_f64().unwrap().to_string())
        .collect();
    let probabilities: Vec<f64> = reference["outputs"]["probabilities"]["data"]
        .as_array()
        .unwrap()[..10]
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect();
    let class = (0..10)
        .max_by(|&a, &b| probabilities[a].total_cmp(&probabilities[b]))
        .unwrap();
    (pixels.join(","), class)
}

/// The `rag` agents' handbook: three passages, the refunds one second.
pub const HANDBOOK: &str = "ingest The office is open from 9am to 5pm on weekdays.\n\n\
    Refunds are processed within five business days.\n\n\
    The cafeteria serves vegetarian lunch on Fridays.";

/// Checks that a `rag` agent's answer to "How long do refunds take?" cites
/// the refunds passage first, in its metadata and its text.
pub fn assert_cites_the_refunds_passage(response: &sovra_runtime::AgentResponse) {
    let sources = &response
        .metadata
        .iter()
        .find(|(k, _)| k == "sources")
        .expect("the answer names its sources")
        .1;
    assert!(
        sources.starts_with("handbook#1"),
        "the refunds passage ranks first: {sources}"
    );
    assert!(
        response.output.contains("[sources: handbook#1"),
        "{}",
        response.output
    );
}
