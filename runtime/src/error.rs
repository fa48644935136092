//! Errors by layer: loading a component ([`LoadError`]) and running an
//! invocation ([`InvokeError`]). Every guest fault maps to its own variant
//! so callers, audit records and exit codes can tell them apart.

use std::path::PathBuf;
use std::time::Duration;

use crate::capability::{Capability, UnsupportedImport};
use crate::limits::LimitsError;
use crate::manifest::ManifestError;
use crate::output::OutputLimitExceeded;

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("component is {size} bytes, more than the {max} allowed")]
    TooLarge { size: u64, max: u64 },
    #[error("not a WebAssembly file (no \\0asm header)")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component; build the agent with \
         `cargo build --target wasm32-wasip2`"
    )]
    CoreModule,
    #[error("malformed component: {0}")]
    Malformed(String),
    #[error("not a sovra component: {0}")]
    WrongWorld(String),
    #[error(transparent)]
    UnsupportedImport(UnsupportedImport),
    #[error("invalid agent manifest: {0}")]
    Manifest(ManifestError),
    #[error(
        "the component carries no sovra manifest; export it with `sovra_sdk::export_agent!` \
         (which embeds agent.toml) or pass a manifest explicitly"
    )]
    MissingManifest,
    #[error("manifest does not match the component: {0}")]
    ManifestMismatch(String),
    #[error("component failed to compile: {0}")]
    Compile(String),
}

/// The kind of error an agent returned from its handler, mirroring the WIT
/// `error` variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentErrorKind {
    AccessDenied,
    NotFound,
    InvalidInput,
    QuotaExceeded,
    LimitExceeded,
    Unavailable,
    Internal,
}

impl AgentErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentErrorKind::AccessDenied => "access-denied",
            AgentErrorKind::NotFound => "not-found",
            AgentErrorKind::InvalidInput => "invalid-input",
            AgentErrorKind::QuotaExceeded => "quota-exceeded",
            AgentErrorKind::LimitExceeded => "limit-exceeded",
            AgentErrorKind::Unavailable => "unavailable",
            AgentErrorKind::Internal => "internal",
        }
    }
}

/// An error value the agent itself returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.as_str())]
pub struct AgentError {
    pub kind: AgentErrorKind,
    pub message: String,
}

/// Why an invocation did not produce a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// The component needs a capability the tenant did not grant.
    #[error(
        "access denied: the component imports `{interface}` but the tenant has not granted \
         `{capability}`"
    )]
    NotGranted {
        interface: String,
        capability: Capability,
    },
    /// The invocation's limits or input are outside what the node allows.
    #[error("invalid invocation: {0}")]
    InvalidInvocation(String),
    /// The agent ran past its deadline.
    #[error("timed out: the agent ran longer than its {limit:?} limit")]
    Timeout { limit: Duration },
    /// The agent tried to use more linear memory than it may.
    #[error("memory limit exceeded: the agent asked for {requested} bytes, its limit is {limit}")]
    MemoryLimit { requested: u64, limit: u64 },
    /// The agent recursed deeper than its stack allows.
    #[error("stack overflow: the agent exhausted its {limit}-byte stack")]
    StackOverflow { limit: usize },
    /// The agent printed more than the capture allows.
    #[error("output limit exceeded: {0}")]
    OutputLimit(OutputLimitExceeded),
    /// The agent made more host calls than one invocation may.
    #[error("host-call limit exceeded: more than {limit} calls to sovra host functions")]
    HostCallLimit { limit: u64 },
    /// The agent passed more data to one host call than allowed.
    #[error("host-call data limit exceeded: more than {limit} bytes passed to one host call")]
    HostCallDataLimit { limit: usize },
    /// The agent asked one host call for more data than it may produce.
    #[error("host-call result limit exceeded: {requested} bytes asked of {call}, at most {limit}")]
    HostCallResultLimit {
        call: &'static str,
        requested: u64,
        limit: u64,
    },
    /// The agent held more resource handles than one invocation may.
    #[error("resource limit exceeded: more than {limit} live handles (streams, generations)")]
    ResourceLimit { limit: usize },
    /// The agent crashed (panic, unreachable, out-of-bounds access, ...).
    #[error("the agent trapped: {message}")]
    Trap { message: String },
    /// The agent returned an error value.
    #[error("the agent returned an error: {0}")]
    Agent(AgentError),
    /// The host could not open what the invocation needs (for example the
    /// tenant's database).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A host failure that is not the agent's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl InvokeError {
    /// A short stable name for audit records, metrics and exit codes.
    pub fn kind(&self) -> &'static str {
        match self {
            InvokeError::NotGranted { .. } => "not-granted",
            InvokeError::InvalidInvocation(_) => "invalid-invocation",
            InvokeError::Timeout { .. } => "timeout",
            InvokeError::MemoryLimit { .. } => "memory-limit",
            InvokeError::StackOverflow { .. } => "stack-overflow",
            InvokeError::OutputLimit(_) => "output-limit",
            InvokeError::HostCallLimit { .. } => "host-call-limit",
            InvokeError::HostCallDataLimit { .. } => "host-call-data-limit",
            InvokeError::HostCallResultLimit { .. } => "host-call-result-limit",
            InvokeError::ResourceLimit { .. } => "resource-limit",
            InvokeError::Trap { .. } => "trap",
            InvokeError::Agent(_) => "agent-error",
            InvokeError::Unavailable(_) => "unavailable",
            InvokeError::Internal(_) => "internal",
        }
    }

    /// Whether the failure was a limit the sandbox enforced.
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            InvokeError::Timeout { .. }
                | InvokeError::MemoryLimit { .. }
                | InvokeError::StackOverflow { .. }
                | InvokeError::OutputLimit(_)
                | InvokeError::HostCallLimit { .. }
                | InvokeError::HostCallDataLimit { .. }
                | InvokeError::HostCallResultLimit { .. }
                | InvokeError::ResourceLimit { .. }
        )
    }
}

impl From<LimitsError> for InvokeError {
    fn from(error: LimitsError) -> Self {
        InvokeError::InvalidInvocation(error.to_string())
    }
}
