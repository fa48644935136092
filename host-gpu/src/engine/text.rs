//! Turning generated token bytes into streamed text: whole UTF-8 characters
//! only, and nothing that might turn out to be the start of a stop sequence.

/// Text of one sequence on its way out.
#[derive(Debug, Default)]
pub(super) struct TextStream {
    stops: Vec<String>,
    /// Bytes of an incomplete UTF-8 character.
    partial: Vec<u8>,
    /// Text held back because it may begin a stop sequence.
    held: String,
}

/// What one token added.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Piece {
    pub text: String,
    pub stopped: bool,
}

impl TextStream {
    pub(super) fn new(stops: Vec<String>) -> Self {
        TextStream {
            stops,
            ..Self::default()
        }
    }

    /// Adds a token's bytes; returns the text that is now safe to emit.
    pub(super) fn push(&mut self, bytes: &[u8]) -> Piece {
        self.partial.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.partial) {
            Ok(text) => text.len(),
            Err(e) if e.error_len().is_some() => {
                // Invalid bytes (not merely incomplete): replace them.
                let text = String::from_utf8_lossy(&self.partial).into_owned();
                self.partial.clear();
                self.held.push_str(&text);
                0
            }
            Err(e) => e.valid_up_to(),
        };
        if valid > 0 {
            let text = std::str::from_utf8(&self.partial[..valid])
                .expect("checked")
                .to_owned();
            self.partial.drain(..valid);
            self.held.push_str(&text);
        }
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let text = self.held[..at].to_owned();
            self.held.clear();
            return Piece {
                text,
                stopped: true,
            };
        }
        let keep = self
            .stops
            .iter()
            .map(|stop| longest_suffix_prefix(&self.held, stop))
            .max()
            .unwrap_or(0);
        let emit = self.held.len() - keep;
        let text = self.held[..emit].to_owned();
        self.held.drain(..emit);
        Piece {
            text,
            stopped: false,
        }
    }

    /// Everything still held, at the end of generation.
    pub(super) fn finish(&mut self) -> String {
        let mut text = std::mem::take(&mut self.held);
        text.push_str(&String::from_utf8_lossy(&self.partial));
        self.partial.clear();
        text
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    (1..stop.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n)
                && stop.is_char_boundary(n)
                && text.ends_with(&stop[..n])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_characters_across_tokens() {
        let mut stream = TextStream::new(Vec::new());
        let euro = "€".as_bytes();
        assert_eq!(stream.push(&euro[..1]).text, "");
        assert_eq!(stream.push(&euro[1..]).text, "€");
    }

    #[test]
    fn holds_back_possible_stops_and_cuts_at_them() {
        let mut stream = TextStream::new(vec!["END".into()]);
        assert_eq!(stream.push(b"hello E").text, "hello ");
        assert_eq!(stream.push(b"N").text, "");
        assert_eq!(
            stream.push(b"D and more"),
            Piece {
                text: String::new(),
                stopped: true
            }
        );
        let mut stream = TextStream::new(vec!["END".into()]);
        assert_eq!(stream.push(b"EN").text, "");
        assert_eq!(stream.push(b"ough").text, "ENough");
        assert_eq!(stream.push(b" E").text, " ");
        assert_eq!(stream.finish(), "E");
    }
}
