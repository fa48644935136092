//! Tokenizers built from a GGUF file's own metadata (`tokenizer.ggml.*`).
//!
//! - `gpt2`: byte-level BPE with llama.cpp's pre-tokenizer for the file's
//!   `tokenizer.ggml.pre` ([`Pretokenizer`]).
//!
//! Special (control and user-defined) tokens are matched literally in the
//! text before pre-tokenization, so a rendered chat template's markers become
//! their ids. Checked against Hugging Face `tokenizers` on a varied text set
//! (`host-gpu/tests/reference/tokenizer_ids.json`).

mod bpe;
mod bytes;
mod pretokenize;
mod special;
mod wordpiece;

pub use bpe::BpeTokenizer;
pub use pretokenize::Pretokenizer;
pub use wordpiece::WordPieceTokenizer;

use crate::gguf::{GgufError, GgufFile};

/// A token id.
pub type TokenId = u32;

/// Why a tokenizer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{path}: tokenizer model `{model}` is not supported (supported: gpt2)")]
    UnsupportedModel { path: String, model: String },
    #[error("{path}: pre-tokenizer `{pre}` is not supported (supported: {supported})")]
    UnsupportedPretokenizer {
        path: String,
        pre: String,
        supported: &'static str,
    },
    #[error("{path}: invalid tokenizer data: {what}")]
    Invalid { path: String, what: String },
}

/// Builds the tokenizer a GGUF file describes.
pub fn from_gguf(file: &GgufFile) -> Result<BpeTokenizer, TokenizerError> {
    let model = file.require_str("tokenizer.ggml.model")?;
    match model {
        "gpt2" => BpeTokenizer::from_gguf(file),
        other => Err(TokenizerError::UnsupportedModel {
            path: file.path().display().to_string(),
            model: other.to_owned(),
        }),
    }
}
