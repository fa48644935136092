//! WordPiece tokenizers built from fuzzed tokenizer.json files.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sovra_fuzz_targets::wordpiece_vocab(data));
