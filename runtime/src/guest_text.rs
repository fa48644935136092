//! Guest-supplied text made safe to show: every control character (C0, DEL,
//! C1) and every Unicode bidirectional override is written as an escape, so
//! that a guest can neither drive the operator's terminal (`ESC[2J` clears
//! it) nor forge a line of the host's own log (`\n level=ERROR ...`) nor
//! reorder what a line appears to say. Applied where guest text enters the
//! host (log messages and fields) and where captured output is printed.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal or a log line as it is.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with each unsafe character escaped (`\n`, `\r`, `\t`, `\x1b`,
/// `\u{202e}`); borrowed when there is nothing to escape.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if (c as u32) < 0x80 && is_unsafe(c) => {
                let _ = write!(escaped, "\\x{:02x}", c as u32);
            }
            c if is_unsafe(c) => {
                let _ = write!(escaped, "\\u{{{:x}}}", c as u32);
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// Captured output as lines fit to print: invalid UTF-8 replaced, each line
/// escaped (the line breaks themselves are kept, one line per item).
pub fn escaped_lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|line| escape_controls(line).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_bidi_characters_are_escaped_and_plain_text_is_borrowed() {
        assert!(matches!(
            escape_controls("plain text, é ü 日本"),
            Cow::Borrowed(_)
        ));
        assert_eq!(escape_controls("\u{1b}[2Jcleared"), "\\x1b[2Jcleared");
        assert_eq!(
            escape_controls("ok\nlevel=ERROR tenant=other msg=\"forged\"\r"),
            "ok\\nlevel=ERROR tenant=other msg=\"forged\"\\r"
        );
        assert_eq!(
            escape_controls("a\u{7f}\u{0}\u{85}b"),
            "a\\x7f\\x00\\u{85}b"
        );
        assert_eq!(
            escape_controls("evil\u{202e}txt.exe"),
            "evil\\u{202e}txt.exe"
        );
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let escaped = escape_controls(&c.to_string()).into_owned();
            assert!(
                !escaped.chars().any(char::is_control),
                "{c:?} -> {escaped:?}"
            );
        }
        assert_eq!(
            escaped_lines(b"one\x1b]0;title\x07\ntwo\r\n\xff"),
            ["one\\x1b]0;title\\x07", "two", "\u{fffd}"]
        );
    }
}
