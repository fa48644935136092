//! Compiling submissions in a separate worker process.
//!
//! Cranelift runs on untrusted input here, before any review. The worker
//! (`sovra compile-worker`, the same binary) caps its own address space and
//! CPU time before reading the component, and the node kills it at the wall
//! deadline; a component that makes the compiler loop, explode in memory or
//! crash costs the node one child process and gets a clear rejection. The
//! worker writes the compiled code into the runtime's compiled-code cache,
//! so the node itself only ever loads it.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncReadExt;

use crate::config::CompileLimits;

/// Longest worker error message passed on.
const MAX_WORKER_MESSAGE: usize = 4096;

/// Why a submission did not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("the component does not compile: {0}")]
    Invalid(String),
    #[error("compiling the component took longer than {0:?}")]
    TimedOut(std::time::Duration),
    #[error("compiling the component exceeded the worker's limits ({0})")]
    Crashed(String),
    #[error("cannot run the compile worker: {0}")]
    Worker(String),
}

/// How to start the worker.
#[derive(Debug, Clone)]
pub struct CompileWorker {
    /// The `sovra` binary.
    pub program: PathBuf,
    pub limits: CompileLimits,
}

impl CompileWorker {
    /// Compiles the component at `component` into `compiled_dir` in a worker.
    pub async fn compile(&self, component: &Path, compiled_dir: &Path) -> Result<(), CompileError> {
        // The worker sees none of the node's environment (the operator
        // token may be there).
        let mut child = tokio::process::Command::new(&self.program)
            .env_clear()
            .arg("compile-worker")
            .arg("--component")
            .arg(component)
            .arg("--compiled-dir")
            .arg(compiled_dir)
            .arg("--max-memory")
            .arg(self.limits.max_memory.to_string())
            .arg("--max-cpu-seconds")
            .arg(self.limits.timeout.as_secs().max(1).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| CompileError::Worker(format!("{}: {e}", self.program.display())))?;
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let run = async {
            // Keep the start of what it says, and drain the rest so a
            // chatty worker never blocks on a full pipe.
            let mut message = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                let room = MAX_WORKER_MESSAGE.saturating_sub(message.len());
                message.extend_from_slice(&chunk[..n.min(room)]);
            }
            (child.wait().await, message)
        };
        let (status, message) = match tokio::time::timeout(self.limits.timeout, run).await {
            Ok((status, message)) => (
                status.map_err(|e| CompileError::Worker(e.to_string()))?,
                String::from_utf8_lossy(&message).trim().to_owned(),
            ),
            Err(_) => return Err(CompileError::TimedOut(self.limits.timeout)),
        };
        match status.code() {
            Some(0) => Ok(()),
            Some(WORKER_INVALID) => Err(CompileError::Invalid(message)),
            // The worker could not set itself up: the node's fault.
            Some(WORKER_SETUP_FAILED) => Err(CompileError::Worker(message)),
            Some(code) => Err(CompileError::Crashed(format!(
                "exit code {code}: {message}"
            ))),
            None => Err(CompileError::Crashed(signal_name(&status))),
        }
    }
}

fn signal_name(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(9) => "killed: time limit".into(),
        Some(24) => "killed: CPU time limit".into(),
        Some(6) => "aborted: out of memory".into(),
        Some(11) => "crashed: segmentation fault".into(),
        Some(signal) => format!("killed by signal {signal}"),
        None => "ended abnormally".into(),
    }
}

/// The worker's exit code for a component that is not valid Wasm.
pub const WORKER_INVALID: i32 = 3;

/// The worker's exit code when it could not limit itself or read its input.
pub const WORKER_SETUP_FAILED: i32 = 2;

/// The worker's body: caps itself, then compiles. Returns the exit code.
pub fn run_worker(
    component: &Path,
    compiled_dir: &Path,
    max_memory: u64,
    max_cpu_seconds: u64,
) -> i32 {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let cap = |resource, value: u64| {
        setrlimit(
            resource,
            Rlimit {
                current: Some(value),
                maximum: Some(value),
            },
        )
    };
    if let Err(e) = cap(Resource::As, max_memory)
        .and_then(|()| cap(Resource::Cpu, max_cpu_seconds))
        .and_then(|()| cap(Resource::Core, 0))
    {
        eprintln!("cannot limit the worker: {e}");
        return WORKER_SETUP_FAILED;
    }
    let bytes = match std::fs::read(component) {
        Ok(bytes) => bytes,
        Err(e) => {
            // Under a tight memory limit even this read can fail: a limit,
            // not a broken node.
            eprintln!("cannot read {}: {e}", component.display());
            return 4;
        }
    };
    match sovra_runtime::precompile_into(compiled_dir, &bytes) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            WORKER_INVALID
        }
    }
}
