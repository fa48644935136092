//! Byte-level BPE (GPT-2 style), from a GGUF's token list and merges.

use std::collections::HashMap;

use super::pretokenize::{Pretokenizer, SUPPORTED};
use super::special::{Segment, SpecialTokens};
use super::{TokenId, TokenizerError, bytes};
use crate::gguf::{GgufFile, MetadataValue};

/// GGUF token types that mark special tokens.
const TOKEN_TYPE_CONTROL: u64 = 3;
const TOKEN_TYPE_USER_DEFINED: u64 = 4;

/// A byte-level BPE tokenizer.
#[derive(Debug)]
pub struct BpeTokenizer {
    tokens: Vec<String>,
    ids: HashMap<String, TokenId>,
    /// Merge rank of each pair of token ids (lower merges first).
    ranks: HashMap<(TokenId, TokenId), u32>,
    /// The id each pair merges into.
    merged: HashMap<(TokenId, TokenId), TokenId>,
    /// Ids of the single-byte tokens; a vocabulary may lack some bytes
    /// (SmolLM2 has no token for most control characters).
    byte_ids: Vec<Option<TokenId>>,
    /// Stands in for a byte the vocabulary lacks; without one it is dropped.
    unknown: Option<TokenId>,
    special: SpecialTokens,
    is_special: Vec<bool>,
    pretokenizer: Pretokenizer,
    bos: Option<TokenId>,
    eos: Option<TokenId>,
    add_bos: bool,
}

fn strings(file: &GgufFile, key: &str) -> Result<Vec<String>, TokenizerError> {
    let invalid = |what: String| TokenizerError::Invalid {
        path: file.path().display().to_string(),
        what,
    };
    let values = file
        .get(key)
        .and_then(MetadataValue::as_array)
        .ok_or_else(|| invalid(format!("`{key}` is missing or not an array")))?;
    values
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| invalid(format!("`{key}` holds a non-string")))
        })
        .collect()
}

impl BpeTokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.{tokens,merges,token_type,pre}`.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, TokenizerError> {
        let path = file.path().display().to_string();
        let invalid = |what: String| TokenizerError::Invalid {
            path: path.clone(),
            what,
        };
        let tokens = strings(file, "tokenizer.ggml.tokens")?;
        let merges = strings(file, "tokenizer.ggml.merges")?;
        let pre = file
            .get("tokenizer.ggml.pre")
            .and_then(MetadataValue::as_str)
            .unwrap_or("default");
        let pretokenizer =
            Pretokenizer::for_name(pre).ok_or_else(|| TokenizerError::UnsupportedPretokenizer {
                path: path.clone(),
                pre: pre.to_owned(),
                supported: SUPPORTED,
            })?;
        let types: Vec<u64> = match file
            .get("tokenizer.ggml.token_type")
            .and_then(MetadataValue::as_array)
        {
            Some(values) => values.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(invalid(format!(
                "{} token types for {} tokens",
                types.len(),
                tokens.len()
            )));
        }
        let ids: HashMap<String, TokenId> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as TokenId))
            .collect();
        let id_of = |token: &str| ids.get(token).copied();

        let mut ranks = HashMap::with_capacity(merges.len());
        let mut merged = HashMap::with_capacity(merges.len());
        for (rank, merge) in merges.iter().enumerate() {
            let (left, right) = merge
                .split_once(' ')
                .ok_or_else(|| invalid(format!("merge {rank} `{merge}` is not two tokens")))?;
            let (Some(l), Some(r), Some(m)) =
                (id_of(left), id_of(right), id_of(&format!("{left}{right}")))
            else {
                return Err(invalid(format!(
                    "merge {rank} `{merge}` names tokens not in the vocabulary"
                )));
            };
            ranks.entry((l, r)).or_insert(rank as u32);
            merged.entry((l, r)).or_insert(m);
        }
        let byte_ids: Vec<Option<TokenId>> =
            (0..=255u8).map(|b| id_of(&bytes::encode(&[b]))).collect();

        let is_special: Vec<bool> = types
            .iter()
            .map(|&t| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
            .collect();
        let special = SpecialTokens::new(
            tokens
                .iter()
                .zip(&is_special)
                .enumerate()
                .filter(|(_, (_, special))| **special)
                .map(|(id, (text, _))| (text.clone(), id as TokenId))
                .collect(),
        );
        let id_key = |key: &str| -> Result<Option<TokenId>, TokenizerError> {
            match file.get(key).and_then(MetadataValue::as_u64) {
                None => Ok(None),
                Some(id) if (id as usize) < tokens.len() => Ok(Some(id as TokenId)),
                Some(id) => Err(invalid(format!("`{key}` {id} is outside the vocabulary"))),
            }
        };
        Ok(BpeTokenizer {
            unknown: id_key("tokenizer.ggml.unknown_token_id")?,
            bos: id_key("tokenizer.ggml.bos_token_id")?,
            eos: id_key("tokenizer.ggml.eos_token_id")?,
            add_bos: file
                .get("tokenizer.ggml.add_bos_token")
                .and_then(MetadataValue::as_bool)
                .unwrap_or(false),
            tokens,
            ids,
            ranks,
            merged,
            byte_ids,
            special,
            is_special,
            pretokenizer,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn bos(&self) -> Option<TokenId> {
        self.bos
    }

    pub fn eos(&self) -> Option<TokenId> {
        self.eos
    }

    /// The id of a token's exact text.
    pub fn token_id(&self, token: &str) -> Option<TokenId> {
        self.ids.get(token).copied()
    }

    /// Whether `id` is a special (control) token.
    pub fn is_special(&self, id: TokenId) -> bool {
        self.is_special.get(id as usize).copied().unwrap_or(false)
    }

    /// Encodes `text`; special-token text becomes the special ids. Adds BOS
    /// when the model asks for it.
    pub fn encode(&self, text: &str) -> Vec<TokenId> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        if self.add_bos {
            ids.extend(self.bos);
        }
        self.special.segments(text, |segment| match segment {
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
        if let Some(&id) = self.ids.get(&bytes::encode(piece.as_bytes())) {
            out.push(id);
            return;
        }
        let mut symbols: Vec<TokenId> = piece
            .bytes()
            .filter_map(|b| self.byte_ids[b as usize].or(self.unknown))
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
    /// Bytes, not text: one token may hold part of a UTF-8 character.
    pub fn decode_token(&self, id: TokenId, out: &mut Vec<u8>) {
        let Some(token) = self.tokens.get(id as usize) else {
            return;
        };
        if self.is_special(id) || bytes::decode(token, out).is_none() {
            out.extend_from_slice(token.as_bytes());
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
