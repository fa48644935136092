//! Llama-family models (llama, SmolLM, qwen2) on the CPU backend.

mod config;
mod llama;

pub use config::{LlamaConfig, RopeStyle};
pub use llama::{KvCache, LlamaModel};
