//! Packaging agents written in any language: the WIT world an `agent.toml`
//! calls for ([`world`]), to build a component against with any toolchain
//! (componentize-py, componentize-js, cargo), and embedding the manifest into
//! the built component ([`embed`]), where the runtime reads it whatever
//! language the agent was written in.

pub mod embed;
pub mod world;

pub use embed::embed_manifest;
pub use world::{SOVRA_WIT_FILES, WorldFiles, world_files};

use crate::error::LoadError;
use crate::manifest::ManifestError;

/// Why a component could not be packed with its manifest.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("the manifest is not valid: {0}")]
    Manifest(#[from] ManifestError),
    #[error("the component cannot be packed: {0}")]
    Component(LoadError),
    #[error(
        "the component already carries a manifest (a Rust agent's `export_agent!` embeds \
         agent.toml itself); pack the component as its toolchain built it"
    )]
    AlreadyPacked,
}
