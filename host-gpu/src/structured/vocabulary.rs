//! The model's vocabulary as llguidance sees it: a token trie of each
//! token's raw bytes (special tokens marked as toktrie wants, so no text can
//! spell them), and the model's own tokenizer for the text a grammar forces.

use std::sync::Arc;

use llguidance::toktrie::{TokRxInfo, TokTrie, TokenId as TrieToken, TokenizerEnv};

use crate::tokenizer::{TokenId, Tokenizer};

/// A [`TokenizerEnv`] over one model's tokenizer.
pub(super) struct Vocabulary {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl Vocabulary {
    /// The trie of `tokenizer`'s vocabulary; `end_tokens` (at least one) end
    /// a generation, and are what a complete answer may be followed by.
    pub fn new(tokenizer: Arc<Tokenizer>, end_tokens: &[TokenId]) -> Self {
        let words: Vec<Vec<u8>> = (0..tokenizer.vocab_size() as TokenId)
            .map(|id| {
                let mut bytes = Vec::new();
                if tokenizer.is_special(id) {
                    bytes.push(TokTrie::SPECIAL_TOKEN_MARKER);
                }
                tokenizer.decode_token(id, &mut bytes);
                bytes
            })
            .collect();
        let mut info = TokRxInfo::new(words.len() as u32, end_tokens[0]);
        info.tok_bos = tokenizer.bos();
        let trie = TokTrie::from(&info, &words).with_eos_tokens(end_tokens);
        Vocabulary { trie, tokenizer }
    }
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    /// Text as the model's tokenizer writes it; bytes that are not UTF-8
    /// (part of a character) take the trie's longest tokens instead.
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TrieToken> {
        match std::str::from_utf8(s) {
            Ok(text) => self.tokenizer.encode_continuation(text),
            Err(_) => self.trie.greedy_tokenize(s),
        }
    }
}
