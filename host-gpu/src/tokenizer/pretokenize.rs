//! llama.cpp's pre-tokenizers: how text is split into pieces before BPE
//! merges, chosen by the GGUF's `tokenizer.ggml.pre`.

use fancy_regex::Regex;

/// GPT-2's split (letters, numbers, punctuation runs, contractions, and
/// whitespace not followed by a non-space).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Llama 3's split (numbers in groups of up to three, newline runs apart).
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's split: Llama 3's with single digits.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Pre-tokenizer names this engine knows.
pub const SUPPORTED: &str = "gpt2, smollm, starcoder, llama-bpe, llama3, qwen2, default";

/// A pre-tokenizer: an optional split into single digits, then a regex split.
#[derive(Debug)]
pub struct Pretokenizer {
    split_digits: bool,
    pattern: Regex,
}

impl Pretokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value, if known.
    pub fn for_name(name: &str) -> Option<Self> {
        let (split_digits, pattern) = match name {
            "gpt2" | "default" | "mpt" | "olmo" => (false, GPT2),
            "smollm" | "starcoder" | "refact" => (true, GPT2),
            "llama-bpe" | "llama3" | "smaug-bpe" => (false, LLAMA3),
            "qwen2" => (false, QWEN2),
            _ => return None,
        };
        Some(Pretokenizer {
            split_digits,
            pattern: Regex::new(pattern).expect("built-in patterns compile"),
        })
    }

    /// Calls `piece` for each piece of `text`, in order.
    pub fn split<'t>(&self, text: &'t str, mut piece: impl FnMut(&'t str)) {
        if self.split_digits {
            let mut rest_start = 0;
            for (at, c) in text.char_indices() {
                if c.is_numeric() && is_number(c) {
                    self.split_regex(&text[rest_start..at], &mut piece);
                    piece(&text[at..at + c.len_utf8()]);
                    rest_start = at + c.len_utf8();
                }
            }
            self.split_regex(&text[rest_start..], &mut piece);
        } else {
            self.split_regex(text, &mut piece);
        }
    }

    fn split_regex<'t>(&self, text: &'t str, piece: &mut impl FnMut(&'t str)) {
        let mut at = 0;
        while at < text.len() {
            match self.pattern.find_from_pos(text, at) {
                Ok(Some(m)) if m.end() > at => {
                    if m.start() > at {
                        piece(&text[at..m.start()]);
                    }
                    piece(m.as_str());
                    at = m.end();
                }
                // No match, or a pathological backtracking limit: keep the
                // rest as one piece rather than losing it.
                _ => {
                    piece(&text[at..]);
                    return;
                }
            }
        }
    }
}

/// `\p{N}`: decimal digits, letter numbers and other numbers.
fn is_number(c: char) -> bool {
    static NUMBER: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let re = NUMBER.get_or_init(|| Regex::new(r"^\p{N}$").expect("compiles"));
    let mut buf = [0u8; 4];
    re.is_match(c.encode_utf8(&mut buf)).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(pre: &str, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        Pretokenizer::for_name(pre)
            .unwrap()
            .split(text, |p| out.push(p.to_owned()));
        out
    }

    #[test]
    fn gpt2_keeps_the_space_with_the_next_word() {
        assert_eq!(
            pieces("gpt2", "Hello world  !!"),
            ["Hello", " world", " ", " !!"]
        );
        assert_eq!(pieces("gpt2", "it's 2024"), ["it", "'s", " 2024"]);
    }

    #[test]
    fn smollm_splits_every_digit() {
        assert_eq!(
            pieces("smollm", "in 2024!"),
            ["in", " ", "2", "0", "2", "4", "!"]
        );
    }
}
