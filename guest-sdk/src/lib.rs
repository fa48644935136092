//! `sovra-sdk`: write sovra agents in a few lines.
//!
//! An agent is a `cdylib` crate built with
//! `cargo build --target wasm32-wasip2 --release`. It implements [`Agent`],
//! exports itself with [`export_agent!`], and declares what it wants in an
//! `agent.toml` beside its `Cargo.toml` (embedded into the component, so the
//! host can show and check it):
//!
//! ```rust,ignore
//! use sovra_sdk::{Agent, Error, Request, Response, kv, log};
//!
//! struct Counter;
//!
//! impl Agent for Counter {
//!     fn handle(request: Request) -> Result<Response, Error> {
//!         let count = kv::increment(&format!("count/{}", request.input), 1)?;
//!         log::info(&format!("{} seen {count} times", request.input));
//!         Ok(Response::text(format!("{}: {count}", request.input)))
//!     }
//! }
//!
//! sovra_sdk::export_agent!(Counter);
//! ```
//!
//! ```toml
//! # agent.toml
//! name = "counter"
//! version = "0.1.0"
//! world = "agent"
//! [capabilities]
//! kv = true
//! ```
//!
//! (`agents/` in the sovra repository holds this and other complete agents.)
//!
//! What the host grants is decided by the tenant, not by the agent: a call to
//! a capability the tenant did not grant comes back as
//! [`Error::AccessDenied`], and a component that imports an interface the
//! tenant did not grant is refused before it runs.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "agent",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_agent_world",
        default_bindings_module: "sovra_sdk::bindings",
    });
}

#[doc(hidden)]
pub mod tool_bindings {
    wit_bindgen::generate!({
        world: "tool",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_tool_world",
        default_bindings_module: "sovra_sdk::tool_bindings",
        with: {
            "sovra:agent/types@0.1.0": crate::bindings::sovra::agent::types,
            "sovra:agent/inference@0.1.0": crate::bindings::sovra::agent::inference,
            "sovra:agent/kv@0.1.0": crate::bindings::sovra::agent::kv,
            "sovra:agent/sql@0.1.0": crate::bindings::sovra::agent::sql,
            "sovra:agent/log@0.1.0": crate::bindings::sovra::agent::log,
            "sovra:agent/vector@0.1.0": crate::bindings::sovra::agent::vector,
            "sovra:agent/tools@0.1.0": crate::bindings::sovra::agent::tools,
        },
    });
}

#[doc(hidden)]
pub mod controller_bindings {
    wit_bindgen::generate!({
        world: "controller",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_controller_world",
        default_bindings_module: "sovra_sdk::controller_bindings",
        with: {
            "sovra:agent/types@0.1.0": crate::bindings::sovra::agent::types,
            "sovra:agent/inference@0.1.0": crate::bindings::sovra::agent::inference,
            "sovra:agent/log@0.1.0": crate::bindings::sovra::agent::log,
        },
    });
}

pub mod control;
pub mod inference;
pub mod kv;
pub mod log;
mod request;
pub mod sql;
pub mod tools;
pub mod vector;

pub use bindings::exports::sovra::agent::handler::Guest as Agent;
pub use bindings::exports::sovra::agent::handler::{Request, Response};
pub use bindings::sovra::agent::types::{Error, Pair, ToolInfo};
pub use tool_bindings::exports::sovra::agent::tool_handler::Guest as Tool;

/// Exports `$agent` (a type implementing [`Agent`]) as this component's
/// handler, and embeds the crate's `agent.toml` as the component's manifest.
#[macro_export]
macro_rules! export_agent {
    ($agent:ident) => {
        $crate::bindings::__export_agent_world!($agent with_types_in $crate::bindings);
        $crate::embed_manifest!();
    };
}

/// Exports `$tool` (a type implementing [`Tool`]) and embeds `agent.toml`.
#[macro_export]
macro_rules! export_tool {
    ($tool:ident) => {
        $crate::tool_bindings::__export_tool_world!($tool with_types_in $crate::tool_bindings);
        $crate::embed_manifest!();
    };
}

/// Exports `$controller` (a type implementing [`control::Control`]) as this
/// component's controller, keeping the instance `init` returns for every
/// later `step` of the episode, and embeds `agent.toml`.
#[macro_export]
macro_rules! export_controller {
    ($controller:ident) => {
        struct __SovraController;

        impl $crate::control::__private::Guest for __SovraController {
            fn init(config: $crate::control::EpisodeConfig) -> Result<(), $crate::Error> {
                $crate::control::__private::init::<$controller>(config)
            }

            fn step(
                observation: $crate::control::Observation,
            ) -> Result<Vec<f32>, $crate::Error> {
                $crate::control::__private::step::<$controller>(&observation)
            }
        }

        $crate::controller_bindings::__export_controller_world!(
            __SovraController with_types_in $crate::controller_bindings
        );
        $crate::embed_manifest!();
    };
}

/// Embeds a manifest file into the component as the `sovra-manifest` custom
/// section. [`export_agent!`] calls this with the crate's `agent.toml`.
#[macro_export]
macro_rules! embed_manifest {
    () => {
        $crate::embed_manifest!(concat!(env!("CARGO_MANIFEST_DIR"), "/agent.toml"));
    };
    ($path:expr) => {
        #[used]
        #[unsafe(link_section = "sovra-manifest")]
        static __SOVRA_MANIFEST: [u8; include_bytes!($path).len()] = *include_bytes!($path);
    };
}
