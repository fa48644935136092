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

/// A command's outcome: its stdout when it exited with status 0, else an
/// agent error naming the status and the last line it wrote to stderr.
pub(crate) fn command_outcome(
    status: i32,
    stdout: Vec<u8>,
    stderr: &[u8],
) -> Result<crate::invocation::AgentResponse, InvokeError> {
    let failed = |message: String| {
        Err(InvokeError::Agent(agent_error(GuestError::Internal(
            message,
        ))))
    };
    if status != 0 {
        let stderr = String::from_utf8_lossy(stderr);
        return match stderr.trim_end().lines().last().map(str::trim) {
            Some(last) if !last.is_empty() => {
                failed(format!("the command exited with status {status}: {last}"))
            }
            _ => failed(format!("the command exited with status {status}")),
        };
    }
    match String::from_utf8(stdout) {
        Ok(output) => Ok(crate::invocation::AgentResponse {
            output,
            metadata: Vec::new(),
        }),
        Err(_) => failed("the command wrote output that is not UTF-8".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_answers_its_stdout_or_its_status_and_last_error_line() {
        let ok = command_outcome(0, b"42\n".to_vec(), b"warming up\n").unwrap();
        assert_eq!(ok.output, "42\n");
        let failed = command_outcome(3, Vec::new(), b"first\nload failed: \x1b[31mred\n")
            .unwrap_err()
            .to_string();
        assert!(failed.contains("status 3: load failed"), "{failed}");
        assert!(
            !failed.contains('\x1b'),
            "control characters are escaped: {failed:?}"
        );
        let silent = command_outcome(1, Vec::new(), b"").unwrap_err().to_string();
        assert!(
            silent.ends_with("the command exited with status 1"),
            "{silent}"
        );
        let binary = command_outcome(0, vec![0xff, 0xfe], b"")
            .unwrap_err()
            .to_string();
        assert!(binary.contains("not UTF-8"), "{binary}");
    }
}
