//! GGUF files and the tokenizers built from them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sovra_fuzz_targets::gguf(data));
