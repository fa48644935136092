//! `sovra-gpu`: the sovra host's inference engine, on the CPU and on CUDA
//! GPUs (the crate keeps the name of its `host-gpu/` folder; most of its code
//! runs on the CPU, and the same scheduler drives either device).
//!
//! The runtime never touches model files or devices directly. It asks a
//! [`ModelRegistry`] for a model by name on behalf of a tenant, and talks to
//! the [`ModelService`] it finds there: start a streamed generation, embed
//! texts, run a tensor model. The text and embedding engines implement
//! [`ModelService`], a text engine on a CPU or CUDA [`engine::Backend`];
//! a node with no models has an empty registry and every call gets a typed
//! [`InferenceError`].
//!
//! ```
//! use sovra_gpu::{InferenceError, ModelRegistry};
//!
//! let registry = ModelRegistry::empty();
//! assert!(registry.models_for_tenant("acme").is_empty());
//! let err = registry.lookup("acme", "smollm2").unwrap_err();
//! assert!(matches!(err, InferenceError::NotFound { .. }));
//! ```
//!
//! Guide to the modules, from files to served requests:
//! [`gguf`] and [`safetensors`] read model files; [`quant`] decodes weight
//! blocks; [`tokenizer`] and [`chat_template`] turn requests into tokens;
//! [`model`] holds the llama-family and BERT forward passes, built on the
//! [`cpu`] kernels; [`sampling`] picks tokens, within what
//! [`structured`] output allows; [`engine`] schedules every
//! live sequence of a model together on a backend (the CPU's, or [`cuda`]'s)
//! and serves embeddings; [`config`] loads the operator's `models.toml` into
//! a [`ModelRegistry`].

pub mod chat_template;
pub mod config;
pub mod cpu;
pub mod cuda;
mod descriptor;
pub mod engine;
mod error;
pub mod gguf;
pub mod model;
pub mod quant;
mod registry;
mod request;
pub mod safetensors;
pub mod sampling;
mod service;
pub mod structured;
pub mod tokenizer;

pub use descriptor::{ModelDescriptor, ModelKind, TensorSpec};
pub use error::InferenceError;
pub use registry::{ModelRegistry, TenantScope};
pub use request::{
    ChatMessage, Completion, Constraint, FinishReason, GenerateRequest, NamedTensor, Prompt, Role,
    Sampling, TensorType, Usage,
};
pub use service::{
    CancelToken, Embeddings, Generation, GenerationEvent, ModelService, ModelStatus,
    RequestContext, UsageMeter,
};
