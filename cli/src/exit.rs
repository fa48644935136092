//! Exit codes of `sovra`, so scripts can tell failures apart.

use std::process::ExitCode;

use sovra_runtime::InvokeError;

/// Why the command failed, and the code it exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The agent returned an error value.
    AgentError = 1,
    /// Bad arguments, unreadable file, not a component, bad manifest.
    Usage = 2,
    /// The component needs a capability the tenant did not grant.
    Denied = 3,
    /// The agent hit a sandbox limit (time, memory, stack, output, host calls).
    Limit = 4,
    /// The agent crashed (trap).
    Trap = 5,
    /// The host failed or could not serve.
    Host = 6,
}

impl From<Code> for ExitCode {
    fn from(code: Code) -> Self {
        ExitCode::from(code as u8)
    }
}

impl Code {
    pub fn of(error: &InvokeError) -> Code {
        match error {
            InvokeError::Agent(_) => Code::AgentError,
            InvokeError::NotGranted { .. } => Code::Denied,
            InvokeError::InvalidInvocation(_) => Code::Usage,
            InvokeError::Trap { .. } => Code::Trap,
            InvokeError::Unavailable(_) | InvokeError::Internal(_) => Code::Host,
            limit if limit.is_limit() => Code::Limit,
            _ => Code::Host,
        }
    }
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: Code,
    pub error: anyhow::Error,
}

/// Attaches an exit code to any error.
pub trait WithCode<T> {
    fn code(self, code: Code) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> WithCode<T> for Result<T, E> {
    fn code(self, code: Code) -> Result<T, Failure> {
        self.map_err(|error| Failure {
            code,
            error: error.into(),
        })
    }
}
