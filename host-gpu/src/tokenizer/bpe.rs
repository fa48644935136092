//! Byte-level BPE (GPT-2 style), from a GGUF's token list and merges.

use std::collections::HashMap;

use super::pretokenize::{Pretokenizer, SUPPORTED};
use super::special::Segment;
use super::vocab::{Vocab, invalid, strings};
use super::{TokenId, TokenizerError, bytes};
use crate::gguf::{GgufFile, MetadataValue};

/// A byte-level BPE tokenizer.
#[derive(Debug)]
pub struct BpeTokenizer {
    pub(super) vocab: Vocab,
    /// Merge rank of each pair of token ids (lower merges first).
    ranks: HashMap<(TokenId, TokenId), u32>,
    /// The id each pair merges into.
    merged: HashMap<(TokenId, TokenId), TokenId>,
    /// Ids of the single-byte tokens; a vocabulary may lack some bytes
    /// (SmolLM2 has no token for most control characters).
    byte_ids: Vec<Option<TokenId>>,
    pretokenizer: Pretokenizer,
}

impl BpeTokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.{tokens,merges,token_type,pre}`.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, TokenizerError> {
        let vocab = Vocab::from_gguf(file, false)?;
        let merges = strings(file, "tokenizer.ggml.merges")?;
        let pre = file
            .get("tokenizer.ggml.pre")
            .and_then(MetadataValue::as_str)
            .unwrap_or("default");
        let pretokenizer =
            Pretokenizer::for_name(pre).ok_or_else(|| TokenizerError::UnsupportedPretokenizer {
                path: file.path().display().to_string(),
                pre: pre.to_owned(),
                supported: SUPPORTED,
            })?;
        let mut ranks = HashMap::with_capacity(merges.len());
        let mut merged = HashMap::with_capacity(merges.len());
        for (rank, merge) in merges.iter().enumerate() {
            let (left, right) = merge.split_once(' ').ok_or_else(|| {
                invalid(file, format!("merge {rank} `{merge}` is not two tokens"))
            })?;
            let (Some(l), Some(r), Some(m)) = (
                vocab.id(left),
                vocab.id(right),
                vocab.id(&format!("{left}{right}")),
            ) else {
                return Err(invalid(
                    file,
                    format!("merge {rank} `{merge}` names tokens not in the vocabulary"),
                ));
            };
            ranks.entry((l, r)).or_insert(rank as u32);
            merged.entry((l, r)).or_insert(m);
        }
        let byte_ids = (0..=255u8)
            .map(|b| vocab.id(&bytes::encode(&[b])))
            .collect();
        Ok(BpeTokenizer {
            vocab,
            ranks,
            merged,
            byte_ids,
            pretokenizer,
        })
    }

    /// Encodes `text`; special-token text becomes the special ids. Adds BOS
    /// when the model asks for it.
    pub(super) fn encode(&self, text: &str) -> Vec<TokenId> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        if self.vocab.add_bos {
            ids.extend(self.vocab.bos);
        }
        self.vocab.special.segments(text, |segment| match segment {
            Segment::Special(id) => ids.push(id),
            Segment::Text(text) => self
                .pretokenizer
                .split(text, |piece| self.encode_piece(piece, &mut ids)),
        });
        ids
    }

    /// BPE on one pre-token: start from single bytes, then repeatedly merge
    /// the adjacent pair with the lowest rank.
    fn encode_piece(&self, piece: &str, out: &mut Vec<TokenId>) {
        if let Some(id) = self.vocab.id(&bytes::encode(piece.as_bytes())) {
            out.push(id);
            return;
        }
        let mut symbols: Vec<TokenId> = piece
            .bytes()
            .filter_map(|b| self.byte_ids[b as usize].or(self.vocab.unknown))
            .collect();
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(i, pair)| self.ranks.get(&(pair[0], pair[1])).map(|&rank| (rank, i)))
                .min();
            let Some((_, i)) = best else { break };
            symbols[i] = self.merged[&(symbols[i], symbols[i + 1])];
            symbols.remove(i + 1);
        }
        out.extend(symbols);
    }

    /// Appends the bytes of token `id` to `out` (special tokens as their text).
    pub(super) fn decode_token(&self, id: TokenId, out: &mut Vec<u8>) {
        let Some(token) = self.vocab.tokens.get(id as usize) else {
            return;
        };
        if self.vocab.is_special(id) || bytes::decode(token, out).is_none() {
            out.extend_from_slice(token.as_bytes());
        }
    }
}
