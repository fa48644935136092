//! Turning how a guest call ended into a typed [`InvokeError`]: which limit a
//! trap came from, or which error value the agent returned.

use wasmtime::Trap;
use wasmtime::component::ResourceTableError;

use crate::bindings::GuestError;
use crate::error::{AgentError, AgentErrorKind, InvokeError};
use crate::guest_text::escape_controls;
use crate::host::wasi::HostCallResultLimitExceeded;
use crate::limits::{Limits, MAX_HOSTCALL_BYTES, MAX_RESOURCES, MAX_WASM_STACK};
use crate::output::OutputLimitExceeded;
use crate::sandbox::{DeadlineExceeded, HostCallLimitExceeded, Sandbox};

/// Names the limit or fault behind a trap.
pub(crate) fn classify_trap(
    trap: &wasmtime::Error,
    sandbox: &Sandbox,
    limits: Limits,
) -> InvokeError {
    if trap.downcast_ref::<DeadlineExceeded>().is_some() {
        return InvokeError::Timeout {
            limit: limits.timeout,
        };
    }
    if let Some(exceeded) = trap.downcast_ref::<OutputLimitExceeded>() {
        return InvokeError::OutputLimit(*exceeded);
    }
    if let Some(exceeded) = trap.downcast_ref::<HostCallLimitExceeded>() {
        return InvokeError::HostCallLimit {
            limit: exceeded.limit,
        };
    }
    // wasmtime keeps its hostcall-fuel error type private; its message is
    // the only handle on it (covered by the `probe` integration tests).
    if trap
        .chain()
        .any(|cause| cause.to_string().contains("fuel allocated for hostcalls"))
    {
        return InvokeError::HostCallDataLimit {
            limit: MAX_HOSTCALL_BYTES,
        };
    }
    if let Some(exceeded) = trap.downcast_ref::<HostCallResultLimitExceeded>() {
        return InvokeError::HostCallResultLimit {
            call: exceeded.call,
            requested: exceeded.requested,
            limit: exceeded.limit,
        };
    }
    if let Some(ResourceTableError::Full) = trap.downcast_ref::<ResourceTableError>() {
        return InvokeError::ResourceLimit {
            limit: MAX_RESOURCES,
        };
    }
    if let Some(Trap::StackOverflow) = trap.downcast_ref::<Trap>() {
        return InvokeError::StackOverflow {
            limit: MAX_WASM_STACK,
        };
    }
    if let Some(requested) = sandbox.limiter.denied_memory_request() {
        return InvokeError::MemoryLimit {
            requested: requested as u64,
            limit: sandbox.limiter.max_memory() as u64,
        };
    }
    if let Some(Trap::Interrupt) = trap.downcast_ref::<Trap>() {
        return InvokeError::Timeout {
            limit: limits.timeout,
        };
    }
    match trap.downcast_ref::<Trap>() {
        Some(code) => InvokeError::Trap {
            message: code.to_string(),
        },
        // The backtrace names the guest's own functions: guest text.
        None => InvokeError::Trap {
            message: escape_controls(&format!("{trap:#}")).into_owned(),
        },
    }
}

/// The guest error of `kind` with `message` (a tool's error, as its caller
/// sees it).
pub(crate) fn guest_error(kind: AgentErrorKind, message: String) -> GuestError {
    match kind {
        AgentErrorKind::AccessDenied => GuestError::AccessDenied(message),
        AgentErrorKind::NotFound => GuestError::NotFound(message),
        AgentErrorKind::InvalidInput => GuestError::InvalidInput(message),
        AgentErrorKind::QuotaExceeded => GuestError::QuotaExceeded(message),
        AgentErrorKind::LimitExceeded => GuestError::LimitExceeded(message),
        AgentErrorKind::Unavailable => GuestError::Unavailable(message),
        AgentErrorKind::Internal => GuestError::Internal(message),
    }
}

pub(crate) fn agent_error(error: GuestError) -> AgentError {
    let (kind, message) = match error {
        GuestError::AccessDenied(m) => (AgentErrorKind::AccessDenied, m),
        GuestError::NotFound(m) => (AgentErrorKind::NotFound, m),
        GuestError::InvalidInput(m) => (AgentErrorKind::InvalidInput, m),
        GuestError::QuotaExceeded(m) => (AgentErrorKind::QuotaExceeded, m),
        GuestError::LimitExceeded(m) => (AgentErrorKind::LimitExceeded, m),
        GuestError::Unavailable(m) => (AgentErrorKind::Unavailable, m),
        GuestError::Internal(m) => (AgentErrorKind::Internal, m),
    };
    // The agent's own words, shown by the CLI and logged by the node.
    let message = escape_controls(&message).into_owned();
    AgentError { kind, message }
}
