//! The real tokenizers fed fuzzed text and token ids.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sovra_fuzz_targets::tokenizer_text(data));
