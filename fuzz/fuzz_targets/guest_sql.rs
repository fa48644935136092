//! Guest SQL through the authorizer, against a real tenant database.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sovra_fuzz_targets::guest_sql(data));
