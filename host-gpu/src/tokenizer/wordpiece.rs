//! BERT's WordPiece tokenizer, from a Hugging Face `tokenizer.json`:
//! BertNormalizer (clean text, spaced CJK characters, accents stripped,
//! lowercase), BertPreTokenizer (whitespace and punctuation), greedy
//! longest-match WordPiece with `##` continuations, then `[CLS] … [SEP]`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use fancy_regex::Regex;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use super::{TokenId, TokenizerError};

/// Longest word WordPiece splits; longer ones become `[UNK]`.
const MAX_WORD_CHARS: usize = 100;

/// A WordPiece tokenizer.
#[derive(Debug)]
pub struct WordPieceTokenizer {
    vocab: HashMap<String, TokenId>,
    unknown: TokenId,
    cls: TokenId,
    sep: TokenId,
    lowercase: bool,
}

fn is_punctuation(c: char) -> bool {
    static PUNCT: OnceLock<Regex> = OnceLock::new();
    if c.is_ascii() {
        return c.is_ascii_punctuation();
    }
    let re = PUNCT.get_or_init(|| Regex::new(r"^\p{P}$").expect("compiles"));
    let mut buf = [0u8; 4];
    re.is_match(c.encode_utf8(&mut buf)).unwrap_or(false)
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

impl WordPieceTokenizer {
    /// Reads a `tokenizer.json` whose model is WordPiece.
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        let invalid = |what: String| TokenizerError::Invalid {
            path: path.display().to_string(),
            what,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| invalid(format!("cannot read: {e}")))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let model = &json["model"];
        if model["type"] != "WordPiece" {
            return Err(TokenizerError::UnsupportedModel {
                path: path.display().to_string(),
                model: model["type"].as_str().unwrap_or("?").to_owned(),
            });
        }
        let vocab: HashMap<String, TokenId> = model["vocab"]
            .as_object()
            .ok_or_else(|| invalid("model.vocab is not an object".into()))?
            .iter()
            .map(|(token, id)| {
                Ok((
                    token.clone(),
                    id.as_u64()
                        .ok_or_else(|| invalid(format!("bad id for `{token}`")))?
                        as TokenId,
                ))
            })
            .collect::<Result<_, TokenizerError>>()?;
        let id = |token: &str| {
            vocab
                .get(token)
                .copied()
                .ok_or_else(|| invalid(format!("the vocabulary has no `{token}`")))
        };
        Ok(WordPieceTokenizer {
            unknown: id(model["unk_token"].as_str().unwrap_or("[UNK]"))?,
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            lowercase: json["normalizer"]["lowercase"].as_bool().unwrap_or(true),
            vocab,
        })
    }

    /// BertNormalizer: drop control characters, space out CJK characters,
    /// strip accents and lowercase (both when `lowercase` is set).
    fn normalize(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            if c == '\0' || c == '\u{FFFD}' || (c.is_control() && !c.is_whitespace()) {
                continue;
            }
            if c.is_whitespace() {
                out.push(' ');
            } else if is_cjk(c) {
                out.push(' ');
                out.push(c);
                out.push(' ');
            } else {
                out.push(c);
            }
        }
        if self.lowercase {
            out.nfd()
                .filter(|c| !is_combining_mark(*c))
                .collect::<String>()
                .to_lowercase()
        } else {
            out
        }
    }

    /// `[CLS]`, the WordPiece ids of `text`, `[SEP]`, at most `max_len` in all.
    pub fn encode(&self, text: &str, max_len: usize) -> Vec<TokenId> {
        let mut ids = vec![self.cls];
        let normalized = self.normalize(text);
        for word in normalized.split(' ').filter(|w| !w.is_empty()) {
            // Punctuation characters are words of their own.
            let mut start = 0;
            for (at, c) in word.char_indices() {
                if is_punctuation(c) {
                    self.word_pieces(&word[start..at], &mut ids);
                    self.word_pieces(&word[at..at + c.len_utf8()], &mut ids);
                    start = at + c.len_utf8();
                }
            }
            self.word_pieces(&word[start..], &mut ids);
        }
        ids.truncate(max_len.saturating_sub(1).max(1));
        ids.push(self.sep);
        ids
    }

    fn word_pieces(&self, word: &str, out: &mut Vec<TokenId>) {
        if word.is_empty() {
            return;
        }
        if word.chars().count() > MAX_WORD_CHARS {
            out.push(self.unknown);
            return;
        }
        let mut pieces = Vec::new();
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len();
            let mut found = None;
            while end > start {
                let piece = if start == 0 {
                    word[start..end].to_owned()
                } else {
                    format!("##{}", &word[start..end])
                };
                if let Some(&id) = self.vocab.get(&piece) {
                    found = Some(id);
                    break;
                }
                end -= 1;
                while !word.is_char_boundary(end) {
                    end -= 1;
                }
            }
            match found {
                Some(id) => {
                    pieces.push(id);
                    start = end;
                }
                None => {
                    out.push(self.unknown);
                    return;
                }
            }
        }
        out.extend(pieces);
    }
}
