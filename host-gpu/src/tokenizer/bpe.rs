//! Byte-level BPE (GPT-2 style), from a GGUF's token list and merges.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

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
    pub(super) fn encode(&self, text: &str, add_bos: bool) -> Vec<TokenId> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        if add_bos {
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
    /// the adjacent pair with the lowest rank (the leftmost of equals).
    ///
    /// The pairs wait in a heap and the symbols form a linked list, so a
    /// piece of n bytes takes O(n log n), not O(n²): one long run of
    /// letters in a prompt (or in text a grammar forces) cannot stall the
    /// caller.
    fn encode_piece(&self, piece: &str, out: &mut Vec<TokenId>) {
        if let Some(id) = self.vocab.id(&bytes::encode(piece.as_bytes())) {
            out.push(id);
            return;
        }
        let mut symbols: Vec<Symbol> = piece
            .bytes()
            .filter_map(|b| self.byte_ids[b as usize].or(self.vocab.unknown))
            .enumerate()
            .map(|(i, id)| Symbol {
                id,
                prev: i.checked_sub(1),
                next: Some(i + 1),
            })
            .collect();
        if let Some(last) = symbols.last_mut() {
            last.next = None;
        }
        // (rank, left symbol): the lowest rank first, then the leftmost.
        let mut pairs = BinaryHeap::new();
        let rank_at = |symbols: &[Symbol], left: usize| {
            let right = symbols[left].next?;
            self.ranks
                .get(&(symbols[left].id, symbols[right].id))
                .copied()
        };
        for left in 0..symbols.len() {
            if let Some(rank) = rank_at(&symbols, left) {
                pairs.push(Reverse((rank, left)));
            }
        }
        while let Some(Reverse((rank, left))) = pairs.pop() {
            // A pair changed since it was queued (either side merged) is
            // stale; its symbols' current pairs were queued when they changed.
            if symbols[left].id == MERGED_AWAY || rank_at(&symbols, left) != Some(rank) {
                continue;
            }
            let Some(right) = symbols[left].next else {
                continue;
            };
            symbols[left].id = self.merged[&(symbols[left].id, symbols[right].id)];
            symbols[left].next = symbols[right].next;
            symbols[right].id = MERGED_AWAY;
            if let Some(next) = symbols[right].next {
                symbols[next].prev = Some(left);
            }
            if let Some(prev) = symbols[left].prev
                && let Some(rank) = rank_at(&symbols, prev)
            {
                pairs.push(Reverse((rank, prev)));
            }
            if let Some(rank) = rank_at(&symbols, left) {
                pairs.push(Reverse((rank, left)));
            }
        }
        let mut at = (!symbols.is_empty()).then_some(0);
        while let Some(i) = at {
            out.push(symbols[i].id);
            at = symbols[i].next;
        }
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

/// A symbol of a piece being merged, in a list of the piece's symbols.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    /// Its token, or [`MERGED_AWAY`] once merged into the symbol before it.
    id: TokenId,
    prev: Option<usize>,
    next: Option<usize>,
}

/// The id of a symbol merged into its left neighbour (no token has it).
const MERGED_AWAY: TokenId = TokenId::MAX;
