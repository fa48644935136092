//! Paths of every guest component, built for wasm32-wasip2 by this crate's
//! build script: the example agents (`HELLO`, `COUNTER`, `NOTES`, `CHAT`,
//! `RAG`) and the test-only guests of `tests/guests` (`SPIN`, `PROBE`, ...).
//!
//! [`foreach_guest!`] lists them all, so the test crate can fail to compile
//! when a guest has no test.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));
