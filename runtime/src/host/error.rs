//! How a host call fails, and the one place that decides what the guest sees.
//!
//! Host functions whose WIT result is `result<T, error>` return
//! `Result<T, HostError>` and use `?` on whatever fails beneath them (storage,
//! the engine, the resource table, the host-call budget). The bindings call
//! [`convert`] on every error on its way out (bindgen's trappable error
//! type): failures the guest can cause or handle become the WIT `error`
//! value, and only host bugs, broken invariants and exhausted per-invocation
//! budgets trap. Denials are recorded for the audit here and nowhere else.

use sovra_gpu::InferenceError;
use wasmtime::component::ResourceTableError;

use crate::bindings::GuestError;
use crate::sandbox::Sandbox;
use crate::storage::StorageError;

/// Why a host call failed, before it is decided what the guest sees.
#[derive(Debug)]
pub enum HostError {
    /// A failure the guest caused or can handle, as the guest will see it.
    Guest(GuestError),
    /// The tenant did not grant this capability (`kv`, `sql`, `vector`).
    NotGranted(&'static str),
    /// The model is not on the tenant's allowlist.
    ModelNotAllowed(String),
    /// The tool is not on the tenant's grant for this agent.
    ToolNotAllowed(String),
    /// The tenant's storage failed or refused.
    Storage(StorageError),
    /// The inference engine failed or refused.
    Inference(InferenceError),
    /// A host bug, a broken invariant or an exhausted per-invocation budget:
    /// the invocation traps.
    Trap(wasmtime::Error),
}

impl From<GuestError> for HostError {
    fn from(error: GuestError) -> Self {
        HostError::Guest(error)
    }
}

impl From<StorageError> for HostError {
    fn from(error: StorageError) -> Self {
        HostError::Storage(error)
    }
}

impl From<InferenceError> for HostError {
    fn from(error: InferenceError) -> Self {
        HostError::Inference(error)
    }
}

impl From<wasmtime::Error> for HostError {
    fn from(error: wasmtime::Error) -> Self {
        HostError::Trap(error)
    }
}

/// A handle the guest does not hold (or of another type): the bindings
/// checked its type, so this is a broken invariant and traps.
impl From<ResourceTableError> for HostError {
    fn from(error: ResourceTableError) -> Self {
        HostError::Trap(error.into())
    }
}

/// What the guest sees of `error`: its WIT error value, or a trap.
/// Denials go to the invocation's audit record; an unavailable host marks
/// the invocation so that an agent passing the error on is not blamed.
pub(crate) fn convert(sandbox: &mut Sandbox, error: HostError) -> wasmtime::Result<GuestError> {
    Ok(match error {
        HostError::Guest(error) => error,
        HostError::Trap(trap) => return Err(trap),
        HostError::NotGranted(capability) => {
            sandbox.denials.push(format!("capability: {capability}"));
            GuestError::AccessDenied(format!("the tenant has not granted `{capability}`"))
        }
        HostError::ModelNotAllowed(model) => {
            let message = format!("model `{model}` is not on this tenant's allowlist");
            sandbox.denials.push(format!("model: {model}"));
            GuestError::AccessDenied(message)
        }
        HostError::ToolNotAllowed(tool) => {
            let message = format!("tool `{tool}` is not granted to this agent");
            sandbox.denials.push(format!("tool: {tool}"));
            GuestError::AccessDenied(message)
        }
        HostError::Storage(error) => storage(sandbox, error),
        HostError::Inference(error) => inference(sandbox, error),
    })
}

fn storage(sandbox: &mut Sandbox, error: StorageError) -> GuestError {
    match error {
        StorageError::QuotaExceeded { .. } => GuestError::QuotaExceeded(error.to_string()),
        StorageError::InvalidInput(message) => GuestError::InvalidInput(message),
        StorageError::LimitExceeded(message) => GuestError::LimitExceeded(message),
        StorageError::Denied(message) => {
            sandbox.denials.push(format!("sql: {message}"));
            GuestError::AccessDenied(message)
        }
        StorageError::Io { .. } | StorageError::Open { .. } => {
            tracing::error!(error = %error, "tenant storage unavailable");
            sandbox.host_unavailable = true;
            GuestError::Unavailable("tenant storage is unavailable; retry later".into())
        }
        StorageError::Busy(message) => {
            tracing::warn!(error = %message, "tenant storage stayed busy past its timeout");
            sandbox.host_unavailable = true;
            GuestError::Unavailable("tenant storage is busy; retry later".into())
        }
        StorageError::Internal(message) => {
            tracing::error!(error = %message, "tenant storage failure");
            GuestError::Internal("storage failure".into())
        }
    }
}

fn inference(sandbox: &mut Sandbox, error: InferenceError) -> GuestError {
    let message = error.to_string();
    match error {
        InferenceError::NotFound { .. } => GuestError::NotFound(message),
        InferenceError::AccessDenied { model } => {
            sandbox.denials.push(format!("model: {model}"));
            GuestError::AccessDenied(message)
        }
        InferenceError::Unsupported { .. } | InferenceError::InvalidInput(_) => {
            GuestError::InvalidInput(message)
        }
        InferenceError::LimitExceeded(_) => GuestError::LimitExceeded(message),
        InferenceError::Unavailable(_) => {
            sandbox.host_unavailable = true;
            GuestError::Unavailable(message)
        }
        InferenceError::Internal(_) => {
            tracing::error!(error = %message, "inference engine failure");
            GuestError::Internal(message)
        }
    }
}
