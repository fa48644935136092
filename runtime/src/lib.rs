//! `sovra-runtime`: the sovra host. It runs untrusted agent components
//! (wasm32-wasip2, `sovra:agent` worlds) in a fresh wasmtime sandbox per
//! invocation, holding only what the tenant granted: inference on allowed
//! models, the tenant's own SQLite storage, its tools, logging.
//!
//! ```no_run
//! use sovra_runtime::{Grants, Invocation, Runtime, RuntimeConfig, TenantId};
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let runtime = Runtime::new(RuntimeConfig::new("/var/lib/sovra"))?;
//! let agent = runtime.load_file("counter.wasm".as_ref(), None)?;
//! let mut invocation = Invocation::new(TenantId::new("acme")?, "apples");
//! invocation.grants = Grants { kv: true, ..Grants::none() };
//! let report = runtime.invoke(&agent, invocation).await;
//! match report.result {
//!     Ok(response) => println!("{}", response.output),
//!     Err(error) => eprintln!("{} ({})", error, error.kind()),
//! }
//! # Ok(()) }
//! ```
//!
//! Guide to the modules: [`capability`] decides what a component may import
//! and what a tenant granted; `host` implements each `sovra:agent` interface;
//! [`limits`] names every limit and the attack it stops; [`storage`] holds
//! the per-tenant databases; [`tools`] is how an agent's tool calls reach
//! the tenant's tool plugins; [`policy`] computes what an invocation runs
//! with; [`audit`] records every invocation; [`sealing`] encrypts every database
//! at rest; [`budget`] charges a tenant's token quotas at each step;
//! [`packaging`] builds the WIT world and embeds the manifest for agents in
//! any language.

pub mod audit;
mod bindings;
pub mod budget;
pub mod capability;
pub mod component;
pub mod controller;
mod digest;
mod engine;
mod error;
mod fair_share;
pub mod guest_text;
mod host;
pub mod http_trigger;
mod invocation;
pub mod limits;
pub mod manifest;
mod names;
mod outcome;
mod output;
pub mod packaging;
pub mod policy;
mod runtime;
mod sandbox;
pub mod sealing;
pub mod storage;
pub mod tools;
pub mod units;

pub use capability::{Capability, Grants};
pub use component::ComponentInfo;
pub use controller::{
    ActuatorRange, Controller, ControllerSetup, ControllerSignals, EpisodeConfig,
};
pub use digest::Digest;
pub use engine::{engine_config, precompile_into};
pub use error::{AgentError, AgentErrorKind, InvokeError, LoadError};
pub use invocation::{
    AgentResponse, EventSink, Invocation, InvocationReport, LiveEvent, ModelUsage,
};
pub use limits::Limits;
pub use manifest::{AgentManifest, ManifestError, World};
pub use names::{InvalidName, TenantId};
pub use output::{OutputLimitExceeded, StreamName};
pub use runtime::{
    AUDIT_DB_FILE, Agent, Inspection, Runtime, RuntimeConfig, StartError, read_component,
};
pub use sandbox::{LogLevel, LogLine};
