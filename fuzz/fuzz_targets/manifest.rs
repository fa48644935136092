//! Agent manifests (`agent.toml`, embedded in components).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sovra_fuzz_targets::manifest(data));
