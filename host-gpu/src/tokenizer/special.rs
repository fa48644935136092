//! Finding special tokens (`<|im_start|>` and the like) in text, so they
//! become their own ids instead of being spelled out by BPE.

use super::TokenId;

/// Special tokens, longest first so that a token that is a prefix of another
/// never wins over it.
#[derive(Debug, Default)]
pub(super) struct SpecialTokens {
    tokens: Vec<(String, TokenId)>,
}

/// A stretch of text: either ordinary text or one special token.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Segment<'t> {
    Text(&'t str),
    Special(TokenId),
}

impl SpecialTokens {
    pub(super) fn new(mut tokens: Vec<(String, TokenId)>) -> Self {
        tokens.retain(|(text, _)| !text.is_empty());
        tokens.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        SpecialTokens { tokens }
    }

    /// Splits `text` into ordinary text and special tokens, in order.
    pub(super) fn segments<'t>(&self, text: &'t str, mut segment: impl FnMut(Segment<'t>)) {
        let mut start = 0;
        let mut at = 0;
        while at < text.len() {
            let rest = &text[at..];
            let found = rest
                .starts_with('<')
                .then(|| {
                    self.tokens
                        .iter()
                        .find(|(token, _)| rest.starts_with(token.as_str()))
                })
                .flatten()
                .or_else(|| {
                    // Specials not starting with '<' are rare; check them all.
                    self.tokens.iter().find(|(token, _)| {
                        !token.starts_with('<') && rest.starts_with(token.as_str())
                    })
                });
            match found {
                Some((token, id)) => {
                    if start < at {
                        segment(Segment::Text(&text[start..at]));
                    }
                    segment(Segment::Special(*id));
                    at += token.len();
                    start = at;
                }
                None => at += rest.chars().next().map_or(1, char::len_utf8),
            }
        }
        if start < text.len() {
            segment(Segment::Text(&text[start..]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_longest_specials_in_order() {
        let specials = SpecialTokens::new(vec![
            ("<a>".into(), 1),
            ("<a>b".into(), 2),
            ("<c>".into(), 3),
        ]);
        let mut out = Vec::new();
        specials.segments("x<a>b<a>y<c>", |s| out.push(format!("{s:?}")));
        assert_eq!(
            out,
            [
                "Text(\"x\")",
                "Special(2)",
                "Special(1)",
                "Text(\"y\")",
                "Special(3)"
            ]
        );
    }
}
