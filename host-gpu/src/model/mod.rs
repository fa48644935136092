//! Models on the CPU backend: llama-family text generators (llama, SmolLM,
//! qwen2) and BERT-family sentence encoders.

mod attention;
mod bert;
mod config;
mod kv_cache;
mod llama;

pub use bert::BertModel;
pub use config::{LlamaConfig, RopeStyle};
pub use kv_cache::{BLOCK_TOKENS, KvCache, KvCacheFull, KvPool, block_bytes, blocks_for};
pub use llama::{LayerWeights, LlamaModel};
