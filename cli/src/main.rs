//! `sovra`: the command-line front of the sovra runtime.
//!
//! - `sovra run`: the agent author's dev loop: run a component once.
//! - `sovra control`: run a controller against a simulated world.
//! - `sovra inspect`: what a component is and what it asks for.
//! - `sovra plugin`: publisher keys, signatures, submission, the log.
//! - `sovra serve`: run a node for tenants and publishers.
//! - `sovra audit verify`: check the audit log's per-tenant hash chains.
//! - `sovra tenant rekey|erase|export|verify-export`: new database keys,
//!   crypto-erase, a tenant's signed export and its check.

mod audit;
mod control;
mod exit;
mod inspect;
mod node_key;
mod pack;
mod plugin;
mod run;
mod serve;
mod tenant;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sovra",
    version,
    about = "A WebAssembly-sandboxed runtime for AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an agent component once and print its response.
    Run(Box<run::RunArgs>),
    /// Run a controller (world `controller`) against a simulated world.
    Control(Box<control::ControlArgs>),
    /// Show a component's world, imports, exports, manifest and digest.
    Inspect(inspect::InspectArgs),
    /// Publisher tools: keys, signatures, submission; the publisher log.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Run a node: the HTTP API for tenants, publishers and the operator.
    Serve(serve::ServeArgs),
    /// The runtime's audit log: verify its per-tenant hash chains.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Tenant maintenance: new database keys, crypto-erase, signed exports.
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// Compile one submitted component under resource limits (started by the node).
    #[command(hide = true)]
    CompileWorker(serve::CompileWorkerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::CompileWorker(args) = cli.command {
        return serve::compile_worker(args);
    }
    init_tracing(&cli.command);
    let result = match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Control(args) => control::control(*args),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Plugin(command) => plugin::plugin(command),
        Command::Serve(args) => serve::serve(args),
        Command::Audit(command) => audit::audit(command),
        Command::Tenant(command) => tenant::tenant(command),
        Command::CompileWorker(_) => unreachable!("handled above"),
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            failure.code.into()
        }
    }
}

/// Host logs go to stderr, filtered by `SOVRA_LOG` (default `warn`, and
/// `info` for a node).
fn init_tracing(command: &Command) {
    let default = match command {
        Command::Serve(_) => "info,sovra::guest=warn",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SOVRA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a terminal: a log file or pipe gets plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
