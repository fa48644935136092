//! Typed inference errors, mapped one to one onto the WIT `error` variant by
//! the runtime.

use thiserror::Error;

/// Why an inference call failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InferenceError {
    /// No model of that name is registered on this node.
    #[error("no model named `{model}` is registered on this node")]
    NotFound { model: String },
    /// The model exists but this tenant may not use it.
    #[error("model `{model}` is not allowed for this tenant")]
    AccessDenied { model: String },
    /// The model cannot do what was asked (for example `embed` on a text model).
    #[error("model `{model}` does not support {operation}")]
    Unsupported {
        model: String,
        operation: &'static str,
    },
    /// The request is malformed (empty prompt, bad sampling values, bad tensor).
    #[error("invalid inference request: {0}")]
    InvalidInput(String),
    /// A per-request limit was exceeded (prompt too long, too many texts).
    #[error("inference limit exceeded: {0}")]
    LimitExceeded(String),
    /// The engine cannot serve now (shutting down, out of cache, device lost).
    #[error("inference unavailable: {0}")]
    Unavailable(String),
    /// A failure inside the engine.
    #[error("inference engine failure: {0}")]
    Internal(String),
}
