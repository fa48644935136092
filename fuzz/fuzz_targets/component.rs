//! The component inspector and submission checks, on mutated real components.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sovra_fuzz_targets::component(data));
