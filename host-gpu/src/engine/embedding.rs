//! The embedding service: a sentence encoder and its tokenizer, loaded once.

use std::path::Path;

use super::LoadError;
use crate::model::BertModel;
use crate::service::{Embeddings, ModelService, RequestContext};
use crate::tokenizer::WordPieceTokenizer;
use crate::{InferenceError, ModelDescriptor, ModelKind};

/// Tokens per text (sentence-transformers' `max_seq_length` for MiniLM);
/// longer texts are truncated, as sentence-transformers does.
pub const MAX_EMBED_TOKENS: usize = 256;

/// Tokens embedded together in one pass (texts are grouped up to it).
/// Bounds the activations one pass holds (about 12 MiB for MiniLM).
pub const MAX_BATCH_TOKENS: usize = 2048;

/// Bytes of one text.
/// Stops: huge texts tokenized only to be truncated.
pub const MAX_EMBED_TEXT_BYTES: usize = 64 * 1024;

/// A loaded embedding model.
#[derive(Debug)]
pub struct EmbeddingEngine {
    descriptor: ModelDescriptor,
    tokenizer: WordPieceTokenizer,
    model: BertModel,
}

impl EmbeddingEngine {
    /// Loads `dir` (`model.safetensors`, `config.json`, `tokenizer.json`).
    pub fn load(name: &str, dir: &Path) -> Result<Self, LoadError> {
        let model = BertModel::load(dir)?;
        let tokenizer = WordPieceTokenizer::from_file(&dir.join("tokenizer.json"))?;
        Ok(EmbeddingEngine {
            descriptor: ModelDescriptor::new(
                name,
                ModelKind::Embedding,
                MAX_EMBED_TOKENS.min(model.max_positions()) as u32,
                model.hidden() as u32,
            ),
            tokenizer,
            model,
        })
    }

    /// The token ids a text is embedded from.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        self.tokenizer
            .encode(text, self.descriptor.context_length as usize)
    }
}

impl ModelService for EmbeddingEngine {
    fn descriptor(&self) -> &ModelDescriptor {
        &self.descriptor
    }

    fn embed(
        &self,
        _context: &RequestContext,
        texts: Vec<String>,
    ) -> Result<Embeddings, InferenceError> {
        if let Some(text) = texts.iter().find(|t| t.len() > MAX_EMBED_TEXT_BYTES) {
            return Err(InferenceError::LimitExceeded(format!(
                "a text is {} bytes; the limit is {MAX_EMBED_TEXT_BYTES}",
                text.len()
            )));
        }
        let tokenized: Vec<Vec<u32>> = texts.iter().map(|text| self.tokenize(text)).collect();
        let mut vectors = Vec::with_capacity(texts.len());
        let mut batch: Vec<&[u32]> = Vec::new();
        let mut tokens = 0;
        for ids in &tokenized {
            if tokens + ids.len() > MAX_BATCH_TOKENS && !batch.is_empty() {
                vectors.extend(self.model.embed_batch(&batch));
                batch.clear();
                tokens = 0;
            }
            batch.push(ids);
            tokens += ids.len();
        }
        if !batch.is_empty() {
            vectors.extend(self.model.embed_batch(&batch));
        }
        let tokens = tokenized.iter().map(Vec::len).sum::<usize>();
        Ok(Embeddings {
            vectors,
            tokens: u32::try_from(tokens).unwrap_or(u32::MAX),
        })
    }
}
