//! The operator's models.toml.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sovra_fuzz_targets::models_toml(data));
