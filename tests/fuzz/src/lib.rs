//! What each fuzz target does with its bytes, one function per target.
//!
//! libFuzzer runs them (`fuzz/`, `scripts/fuzz TARGET SECONDS`), and the test
//! suite runs every seed (`fuzz/seeds/TARGET`) and every input that once
//! failed (`fuzz/regressions/TARGET`) through them (`tests/seeds.rs`). Each
//! must return, whatever its bytes: a panic, a hang or an allocation without
//! bound is a bug in the parser it drives.

mod config;
mod files;
mod model_files;
mod plugins;
mod sql;

/// What a target does with one input.
pub type Target = fn(&[u8]);

/// Every target: its name (its fuzz binary and seed folder) and its function.
pub const TARGETS: &[(&str, Target)] = &[
    ("manifest", plugins::manifest),
    ("component", plugins::component),
    ("signature", plugins::signature),
    ("gguf", model_files::gguf),
    ("safetensors", model_files::safetensors),
    ("tokenizer_text", model_files::tokenizer_text),
    ("wordpiece_vocab", model_files::wordpiece_vocab),
    ("chat_template", model_files::chat_template),
    ("models_toml", config::models_toml),
    ("node_config", config::node_config),
    ("guest_sql", sql::guest_sql),
];

/// The target named `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

pub use config::{models_toml, node_config};
pub use model_files::{chat_template, gguf, safetensors, tokenizer_text, wordpiece_vocab};
pub use plugins::{component, manifest, signature};
pub use sql::guest_sql;
