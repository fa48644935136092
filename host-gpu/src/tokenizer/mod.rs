//! Tokenizers built from a GGUF file's own metadata (`tokenizer.ggml.*`).
//!
//! - `gpt2`: byte-level BPE with llama.cpp's pre-tokenizer for the file's
//!   `tokenizer.ggml.pre` ([`Pretokenizer`]); checked against Hugging Face
//!   `tokenizers` (`host-gpu/tests/reference/tokenizer_ids.json`).
//! - `llama`: SentencePiece BPE over vocabulary scores with byte fallback;
//!   checked against llama.cpp and `sentencepiece`
//!   (`host-gpu/tests/reference/spm_tokenizer_ids.json`).
//!
//! Special (control, user-defined, unknown) tokens are matched literally in
//! the text first, so a rendered chat template's markers become their ids.

mod bpe;
mod bytes;
mod pretokenize;
mod special;
mod spm;
mod vocab;
mod wordpiece;

pub use bpe::BpeTokenizer;
pub use pretokenize::Pretokenizer;
pub use spm::SpmTokenizer;
pub use wordpiece::WordPieceTokenizer;

use crate::gguf::{GgufError, GgufFile};
use vocab::Vocab;

/// A token id.
pub type TokenId = u32;

/// The tokenizer models GGUF files name that sovra runs.
const SUPPORTED_MODELS: &str = "gpt2, llama";

/// Why a tokenizer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{path}: tokenizer model `{model}` is not supported (supported: {SUPPORTED_MODELS})")]
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

/// A language model's tokenizer, whichever kind its GGUF file describes.
#[derive(Debug)]
pub enum Tokenizer {
    Bpe(BpeTokenizer),
    SentencePiece(SpmTokenizer),
}

/// Builds the tokenizer a GGUF file describes.
pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, TokenizerError> {
    let model = file.require_str("tokenizer.ggml.model")?;
    match model {
        "gpt2" => Ok(Tokenizer::Bpe(BpeTokenizer::from_gguf(file)?)),
        "llama" => Ok(Tokenizer::SentencePiece(SpmTokenizer::from_gguf(file)?)),
        other => Err(TokenizerError::UnsupportedModel {
            path: file.path().display().to_string(),
            model: other.to_owned(),
        }),
    }
}

impl Tokenizer {
    fn vocab(&self) -> &Vocab {
        match self {
            Tokenizer::Bpe(t) => &t.vocab,
            Tokenizer::SentencePiece(t) => &t.vocab,
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab().tokens.len()
    }

    pub fn bos(&self) -> Option<TokenId> {
        self.vocab().bos
    }

    pub fn eos(&self) -> Option<TokenId> {
        self.vocab().eos
    }

    /// The id of a token's exact text.
    pub fn token_id(&self, token: &str) -> Option<TokenId> {
        self.vocab().id(token)
    }

    /// Whether `id` is a special (control, user-defined or unknown) token.
    pub fn is_special(&self, id: TokenId) -> bool {
        self.vocab().is_special(id)
    }

    /// Encodes `text`; special-token text becomes the special ids. Adds BOS
    /// when the model asks for it.
    pub fn encode(&self, text: &str) -> Vec<TokenId> {
        self.encode_with(text, self.vocab().add_bos)
    }

    /// Encodes `text` as a continuation: like [`Tokenizer::encode`], but
    /// never adds BOS.
    pub fn encode_continuation(&self, text: &str) -> Vec<TokenId> {
        self.encode_with(text, false)
    }

    fn encode_with(&self, text: &str, add_bos: bool) -> Vec<TokenId> {
        match self {
            Tokenizer::Bpe(t) => t.encode(text, add_bos),
            Tokenizer::SentencePiece(t) => t.encode(text, add_bos),
        }
    }

    /// Appends the bytes of token `id` to `out` (special tokens as their
    /// text). Bytes, not text: one token may hold part of a UTF-8 character.
    pub fn decode_token(&self, id: TokenId, out: &mut Vec<u8>) {
        match self {
            Tokenizer::Bpe(t) => t.decode_token(id, out),
            Tokenizer::SentencePiece(t) => t.decode_token(id, out),
        }
    }

    /// Decodes ids to text (invalid UTF-8 is replaced).
    pub fn decode(&self, ids: &[TokenId]) -> String {
        let mut out = Vec::new();
        for &id in ids {
            self.decode_token(id, &mut out);
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
