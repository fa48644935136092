//! Host bindings for the `sovra:agent` WIT package, generated once here.
//!
//! Every import is `async` (storage and inference run off the guest's thread)
//! and `trappable`: a host function returns `wasmtime::Result<...>`, where
//! `Err` is reserved for traps (host bugs, broken invariants, exhausted
//! per-invocation budgets) and every failure the guest can handle is an
//! `Ok(Err(error))` carrying the WIT `error` variant.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "agent",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "sovra:agent/inference.generation": crate::host::inference::GenerationStream,
    },
});

/// Bindings of the `tool` world; its imports are the same interfaces as
/// `agent`'s and are linked from there.
pub mod tool {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "tool",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "sovra:agent/types": super::sovra::agent::types,
            "sovra:agent/inference": super::sovra::agent::inference,
            "sovra:agent/kv": super::sovra::agent::kv,
            "sovra:agent/sql": super::sovra::agent::sql,
            "sovra:agent/log": super::sovra::agent::log,
            "sovra:agent/vector": super::sovra::agent::vector,
        },
    });
}

pub use sovra::agent::types::{Error as GuestError, Pair};
