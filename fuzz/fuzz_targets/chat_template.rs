//! Chat templates from model files, bounded in work and output.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sovra_fuzz_targets::chat_template(data));
