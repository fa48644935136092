//! `sovra serve`: run a node (the HTTP API over the runtime) until SIGINT or
//! SIGTERM, then drain in-flight calls and exit. Also the hidden
//! `compile-worker` the node starts for each submission.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use sovra_gpu::ModelRegistry;
use sovra_gpu::config::load_registry_on;
use sovra_server::{AppState, NodeConfig};

use crate::exit::{Code, Failure, WithCode};

#[derive(Args)]
pub struct ServeArgs {
    /// The node's config file (sovra.toml).
    #[arg(long)]
    config: PathBuf,
    /// Listen here instead of the config's address (port 0: any free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

#[derive(Args)]
pub struct CompileWorkerArgs {
    #[arg(long)]
    component: PathBuf,
    #[arg(long)]
    compiled_dir: PathBuf,
    #[arg(long)]
    max_memory: u64,
    #[arg(long)]
    max_cpu_seconds: u64,
}

pub fn compile_worker(args: CompileWorkerArgs) -> ExitCode {
    let code = sovra_server::compile::run_worker(
        &args.component,
        &args.compiled_dir,
        args.max_memory,
        args.max_cpu_seconds,
    );
    ExitCode::from(code as u8)
}

pub fn serve(args: ServeArgs) -> Result<ExitCode, Failure> {
    let mut config = NodeConfig::load(&args.config).code(Code::Usage)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let models = match &config.models {
        Some(path) => load_registry_on(path, config.device).code(Code::Usage)?,
        None => ModelRegistry::empty(),
    };
    let worker = std::env::current_exe()
        .context("cannot find the sovra binary for the compile worker")
        .code(Code::Host)?;
    let state = AppState::open(config, Arc::new(models), worker).code(Code::Usage)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .code(Code::Host)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(state.config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", state.config.listen))
            .code(Code::Usage)?;
        let address = listener.local_addr().code(Code::Host)?;
        // Scripts and tests wait for this line.
        println!("sovra node listening on http://{address}");
        sovra_server::serve(Arc::new(state), listener, shutdown_signal())
            .await
            .code(Code::Host)?;
        eprintln!("sovra node stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).ok();
    let interrupt = tokio::signal::ctrl_c();
    tokio::select! {
        _ = interrupt => {}
        _ = async {
            match terminate.as_mut() {
                Some(s) => { s.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
