//! SentencePiece BPE (`tokenizer.ggml.model = llama`), as llama.cpp runs it:
//! spaces become `▁`, a space is prefixed to each stretch of text that starts
//! the prompt or follows a special token, and adjacent symbols merge by the
//! highest vocabulary score (leftmost first) while their concatenation is a
//! token. Characters no token covers fall back to `<0xXX>` byte tokens.
//!
//! Checked against llama.cpp and `sentencepiece` itself on a trained test
//! vocabulary (`host-gpu/tests/reference/spm_tokenizer_ids.json`).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::special::Segment;
use super::vocab::{TOKEN_TYPE_BYTE, Vocab, array, invalid};
use super::{TokenId, TokenizerError};
use crate::gguf::{GgufFile, MetadataValue};

/// SentencePiece's visible space.
const SPACE: char = '\u{2581}';

/// A SentencePiece tokenizer.
#[derive(Debug)]
pub struct SpmTokenizer {
    pub(super) vocab: Vocab,
    scores: Vec<f32>,
    /// The `<0xXX>` token of each byte, where the vocabulary has one.
    byte_ids: Vec<Option<TokenId>>,
    add_space_prefix: bool,
}

/// One symbol of the text being merged: a byte range, linked to its live
/// neighbours. A symbol merged into its left neighbour has `len == 0`.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of symbols `left` and its right neighbour.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// Combined length when queued; a mismatch later means it went stale.
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Highest score first, then leftmost.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl SpmTokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.{tokens,scores,token_type}`.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, TokenizerError> {
        let vocab = Vocab::from_gguf(file, true)?;
        let scores: Vec<f32> = array(file, "tokenizer.ggml.scores", |v| {
            v.as_f64().map(|s| s as f32)
        })?;
        if scores.len() != vocab.tokens.len() {
            return Err(invalid(
                file,
                format!("{} scores for {} tokens", scores.len(), vocab.tokens.len()),
            ));
        }
        let byte_ids = (0..=255u8)
            .map(|b| {
                vocab
                    .id(&format!("<0x{b:02X}>"))
                    .filter(|&id| vocab.types[id as usize] == TOKEN_TYPE_BYTE)
            })
            .collect();
        Ok(SpmTokenizer {
            add_space_prefix: file
                .get("tokenizer.ggml.add_space_prefix")
                .and_then(MetadataValue::as_bool)
                .unwrap_or(true),
            vocab,
            scores,
            byte_ids,
        })
    }

    /// Encodes `text`; special-token text becomes the special ids. Adds BOS
    /// when the model asks for it.
    pub(super) fn encode(&self, text: &str, add_bos: bool) -> Vec<TokenId> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        if add_bos {
            ids.extend(self.vocab.bos);
        }
        let mut after_special = true;
        let mut escaped = String::new();
        self.vocab.special.segments(text, |segment| match segment {
            Segment::Special(id) => {
                ids.push(id);
                after_special = true;
            }
            Segment::Text(text) => {
                escaped.clear();
                if self.add_space_prefix && after_special {
                    escaped.push(SPACE);
                }
                escaped.extend(text.chars().map(|c| if c == ' ' { SPACE } else { c }));
                self.encode_escaped(&escaped, &mut ids);
                after_special = false;
            }
        });
        ids
    }

    /// Merges the characters of `text` by score, then emits each symbol's
    /// token, or its bytes where no token covers it.
    fn encode_escaped(&self, text: &str, out: &mut Vec<TokenId>) {
        let mut symbols: Vec<Symbol> = text
            .char_indices()
            .enumerate()
            .map(|(i, (start, c))| Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: None,
            })
            .collect();
        let count = symbols.len();
        for (i, symbol) in symbols.iter_mut().enumerate() {
            symbol.next = (i + 1 < count).then_some(i + 1);
        }
        let mut queue = BinaryHeap::new();
        for left in 1..count {
            self.push_bigram(text, &symbols, left - 1, left, &mut queue);
        }
        while let Some(bigram) = queue.pop() {
            let (left, right) = (symbols[bigram.left], symbols[bigram.right]);
            if left.len == 0 || right.len == 0 || left.len + right.len != bigram.len {
                continue;
            }
            symbols[bigram.left].len += right.len;
            symbols[bigram.right].len = 0;
            symbols[bigram.left].next = right.next;
            if let Some(next) = right.next {
                symbols[next].prev = Some(bigram.left);
            }
            if let Some(prev) = left.prev {
                self.push_bigram(text, &symbols, prev, bigram.left, &mut queue);
            }
            if let Some(next) = right.next {
                self.push_bigram(text, &symbols, bigram.left, next, &mut queue);
            }
        }
        let mut at = (count > 0).then_some(0);
        while let Some(i) = at {
            let symbol = symbols[i];
            let piece = &text[symbol.start..symbol.start + symbol.len];
            match self.vocab.id(piece) {
                Some(id) => out.push(id),
                None => out.extend(
                    piece
                        .bytes()
                        .filter_map(|b| self.byte_ids[b as usize].or(self.vocab.unknown)),
                ),
            }
            at = symbol.next;
        }
    }

    fn push_bigram(
        &self,
        text: &str,
        symbols: &[Symbol],
        left: usize,
        right: usize,
        queue: &mut BinaryHeap<Bigram>,
    ) {
        let start = symbols[left].start;
        let len = symbols[left].len + symbols[right].len;
        if let Some(id) = self.vocab.id(&text[start..start + len]) {
            queue.push(Bigram {
                score: self.scores[id as usize],
                left,
                right,
                len,
            });
        }
    }

    /// Appends the bytes of token `id` to `out`: `▁` as a space, byte tokens
    /// as their byte, special tokens as their text.
    pub(super) fn decode_token(&self, id: TokenId, out: &mut Vec<u8>) {
        let Some(token) = self.vocab.tokens.get(id as usize) else {
            return;
        };
        if let Some(byte) = self.byte_of(id) {
            out.push(byte);
        } else if self.vocab.is_special(id) {
            out.extend_from_slice(token.as_bytes());
        } else {
            for c in token.chars() {
                let c = if c == SPACE { ' ' } else { c };
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            }
        }
    }

    fn byte_of(&self, id: TokenId) -> Option<u8> {
        if self.vocab.types.get(id as usize) != Some(&TOKEN_TYPE_BYTE) {
            return None;
        }
        let hex = self.vocab.tokens[id as usize]
            .strip_prefix("<0x")?
            .strip_suffix('>')?;
        u8::from_str_radix(hex, 16).ok()
    }
}
