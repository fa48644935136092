//! GPT-2's reversible map between bytes and printable characters, so that
//! byte-level BPE vocabularies can be stored as text (a space is `Ġ`).

use std::sync::OnceLock;

struct ByteMap {
    to_char: [char; 256],
    to_byte: std::collections::HashMap<char, u8>,
}

fn map() -> &'static ByteMap {
    static MAP: OnceLock<ByteMap> = OnceLock::new();
    MAP.get_or_init(|| {
        let printable =
            |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        let mut to_char = ['\0'; 256];
        let mut next = 256u32;
        for b in 0..=255u8 {
            to_char[b as usize] = if printable(b) {
                char::from(b)
            } else {
                let c = char::from_u32(next).expect("256..=323 are chars");
                next += 1;
                c
            };
        }
        let to_byte = to_char
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        ByteMap { to_char, to_byte }
    })
}

/// The vocabulary text of raw bytes.
pub(super) fn encode(bytes: &[u8]) -> String {
    let map = map();
    bytes.iter().map(|&b| map.to_char[b as usize]).collect()
}

/// The raw bytes of vocabulary text; `None` if a character is not in the map.
pub(super) fn decode(text: &str, out: &mut Vec<u8>) -> Option<()> {
    let map = map();
    for c in text.chars() {
        out.push(*map.to_byte.get(&c)?);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let text = super::encode(&all);
        assert_eq!(text.chars().count(), 256);
        assert!(text.starts_with('Ā'), "byte 0 maps to U+0100");
        assert_eq!(super::encode(b" "), "Ġ");
        let mut back = Vec::new();
        super::decode(&text, &mut back).unwrap();
        assert_eq!(back, all);
    }
}
