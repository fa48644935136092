//! Host bindings for the `sovra:agent` WIT package, generated once here.
//!
//! Every import is `async` (storage and inference run off the guest's thread)
//! and `trappable`. A function whose WIT result is `result<T, error>` returns
//! `Result<T, HostError>`, and [`crate::host::error::convert`] decides once
//! whether each error reaches the guest as its WIT `error` value or traps;
//! any other function returns `wasmtime::Result<T>`, whose `Err` traps.

use crate::host::HostError;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "agent",
    imports: { default: async | trappable },
    exports: { default: async },
    trappable_error_type: { "sovra:agent/types.error" => HostError },
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
            "sovra:agent/tools": super::sovra::agent::tools,
        },
    });
}

/// Bindings of the `controller` world: `safety` is its own; the rest are
/// linked from `agent`'s.
pub mod controller {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "controller",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "sovra:agent/types": super::sovra::agent::types,
            "sovra:agent/inference": super::sovra::agent::inference,
            "sovra:agent/log": super::sovra::agent::log,
        },
    });
}

pub use sovra::agent::types::{Error as GuestError, Pair, ToolInfo};

/// Bindings of `wasi:nn` (0.2.0-rc-2024-10-28, as wasmtime-wasi-nn 48 has it),
/// for guests written for wasi-nn; implemented over sovra's tensor models in
/// [`crate::host::nn`].
pub mod nn {
    wasmtime::component::bindgen!({
        path: "wit-nn",
        world: "ml",
        imports: { default: async | trappable },
        with: {
            "wasi:nn/tensor.tensor": crate::host::nn::NnTensor,
            "wasi:nn/graph.graph": crate::host::nn::NnGraph,
            "wasi:nn/inference.graph-execution-context": crate::host::nn::NnExecution,
            "wasi:nn/errors.error": crate::host::nn::NnError,
        },
    });
}

/// Bindings of Fermyon Spin's LLM interface, as Spin 2 and later
/// (`fermyon:spin/llm@2.0.0`) and Spin 1 (unversioned) have it, for guests
/// written for Spin; implemented over sovra's engine in
/// [`crate::host::spin_llm`].
pub mod spin {
    wasmtime::component::bindgen!({
        path: "wit-spin",
        world: "spin-llm",
        imports: { default: async | trappable },
    });
}
