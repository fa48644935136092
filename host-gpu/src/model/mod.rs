//! Models on the CPU backend: llama-family text generators (llama, SmolLM,
//! qwen2) and BERT-family sentence encoders.

mod bert;
mod config;
mod llama;

pub use bert::BertModel;
pub use config::{LlamaConfig, RopeStyle};
pub use llama::{KvCache, LlamaModel};
