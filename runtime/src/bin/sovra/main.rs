//! `sovra`: the command-line front of the sovra runtime.
//!
//! - `sovra run`: the agent author's dev loop: run a component once.
//! - `sovra inspect`: what a component is and what it asks for.
//! - `sovra plugin`: publisher keys and signatures.

mod exit;
mod inspect;
mod plugin;
mod run;

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
    /// Show a component's world, imports, exports, manifest and digest.
    Inspect(inspect::InspectArgs),
    /// Publisher tools: keys and signatures.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Plugin(command) => plugin::plugin(command),
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            failure.code.into()
        }
    }
}

/// Host logs go to stderr, filtered by `SOVRA_LOG` (default `warn`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SOVRA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
