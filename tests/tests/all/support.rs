//! Shared set-up for the integration tests: a runtime on a temporary data
//! directory, guests by path, invocations with grants, and a bystander
//! tenant whose calls must keep succeeding while a hostile guest runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sovra_runtime::{
    Agent, Grants, Invocation, InvocationReport, InvokeError, Limits, Runtime, RuntimeConfig,
    TenantId,
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

pub fn runtime() -> TestRuntime {
    let dir = tempfile::tempdir().expect("temporary directory");
    let runtime = Runtime::new(config(dir.path())).expect("runtime starts");
    TestRuntime { runtime, dir }
}

impl TestRuntime {
    pub fn load(&self, path: &str) -> Arc<Agent> {
        self.runtime
            .load_file(Path::new(path), None)
            .unwrap_or_else(|e| panic!("loading {path}: {e}"))
    }
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

/// Runs `hostile` while another tenant keeps invoking `hello` and `counter`;
/// every bystander call must succeed. Returns the hostile invocation's error.
pub async fn with_bystander(
    test: &TestRuntime,
    agent: Arc<Agent>,
    hostile: Invocation,
) -> InvokeError {
    let runtime = test.runtime.clone();
    let hostile_task = tokio::spawn(async move { runtime.invoke(&agent, hostile).await });

    let hello = test.load(sovra_test_artifacts::HELLO);
    let counter = test.load(sovra_test_artifacts::COUNTER);
    let mut served = 0;
    while !hostile_task.is_finished() || served < 5 {
        let greeting = output(
            &test.runtime,
            &hello,
            invocation("bystander", Grants::none(), "Bo"),
        )
        .await;
        assert_eq!(greeting, "Hello, Bo!");
        served += 1;
        let counted = output(
            &test.runtime,
            &counter,
            invocation("bystander", grants(true, false, &[]), "calls"),
        )
        .await;
        assert_eq!(counted, format!("calls: {served}"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let report = hostile_task.await.expect("hostile invocation task");
    // The runtime is still up for everyone, the hostile tenant included.
    let after = output(
        &test.runtime,
        &hello,
        invocation("bystander", Grants::none(), "again"),
    )
    .await;
    assert_eq!(after, "Hello, again!");
    match report.result {
        Ok(response) => panic!("hostile guest succeeded with {:?}", response.output),
        Err(error) => error,
    }
}
