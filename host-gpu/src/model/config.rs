//! Llama-family hyper-parameters, read from GGUF metadata.

use crate::gguf::{GgufError, GgufFile};

/// How rotary position embeddings pair up dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i+1)`: GGUF llama files (their Q/K weights are
    /// permuted for it at conversion).
    Interleaved,
    /// Halves `(i, i + d/2)`: qwen2 (GPT-NeoX style).
    Halves,
}

/// The shape of a llama-family model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub architecture: String,
    pub layers: usize,
    pub embedding: usize,
    pub feed_forward: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub context_length: usize,
    pub rope_base: f32,
    pub rope_style: RopeStyle,
    pub rms_eps: f32,
    pub vocab: usize,
}

/// Architectures this engine runs, and their RoPE pairing.
const ARCHITECTURES: &[(&str, RopeStyle)] = &[
    ("llama", RopeStyle::Interleaved),
    ("qwen2", RopeStyle::Halves),
];

impl LlamaConfig {
    pub fn from_gguf(file: &GgufFile) -> Result<Self, GgufError> {
        let architecture = file.require_str("general.architecture")?.to_owned();
        let invalid = |what: String| GgufError::Invalid {
            path: file.path().to_owned(),
            what,
        };
        let rope_style = ARCHITECTURES
            .iter()
            .find(|(name, _)| *name == architecture)
            .map(|(_, style)| *style)
            .ok_or_else(|| {
                invalid(format!(
                    "architecture `{architecture}` is not supported (supported: llama, qwen2)"
                ))
            })?;
        let key = |name: &str| format!("{architecture}.{name}");
        let int = |name: &str| -> Result<usize, GgufError> {
            let value = file.require_u64(&key(name))?;
            usize::try_from(value)
                .ok()
                .filter(|&v| v > 0 && v <= 1 << 24)
                .ok_or_else(|| invalid(format!("`{}` = {value} is out of range", key(name))))
        };
        let layers = int("block_count")?;
        let embedding = int("embedding_length")?;
        let heads = int("attention.head_count")?;
        let kv_heads = match file.get(&key("attention.head_count_kv")) {
            Some(_) => int("attention.head_count_kv")?,
            None => heads,
        };
        if embedding % heads != 0 || heads % kv_heads != 0 {
            return Err(invalid(format!(
                "{heads} heads and {kv_heads} KV heads do not divide an embedding of {embedding}"
            )));
        }
        let head_dim = embedding / heads;
        if head_dim % 2 != 0 {
            return Err(invalid(format!("head dimension {head_dim} is odd")));
        }
        let vocab = match file.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
            Some(tokens) => tokens.len(),
            None => int("vocab_size")?,
        };
        Ok(LlamaConfig {
            layers,
            embedding,
            feed_forward: int("feed_forward_length")?,
            heads,
            kv_heads,
            head_dim,
            context_length: int("context_length")?,
            rope_base: file
                .get(&key("rope.freq_base"))
                .and_then(|v| v.as_f64())
                .unwrap_or(10_000.0) as f32,
            rope_style,
            rms_eps: file
                .get(&key("attention.layer_norm_rms_epsilon"))
                .and_then(|v| v.as_f64())
                .unwrap_or(1e-5) as f32,
            vocab,
            architecture,
        })
    }

    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}
