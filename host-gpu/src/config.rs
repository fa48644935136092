//! The operator's model file (`models.toml`): which models this node serves,
//! from which files, to which tenants.
//!
//! ```toml
//! [[model]]
//! name = "smollm2"                                  # what agents call it
//! path = "SmolLM2-135M-Instruct.Q4_1.gguf"          # relative to this file
//! kind = "text-generation"
//! tenants = "all"                                   # or ["acme", "globex"]
//!
//! [[model]]
//! name = "minilm"
//! path = "all-MiniLM-L6-v2"                         # a directory: model.safetensors,
//! kind = "embedding"                                # config.json, tokenizer.json
//! tenants = "all"
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::cuda::DeviceChoice;
use crate::engine::{EmbeddingEngine, EngineLimits, TextEngine};
use crate::{ModelRegistry, TenantScope};

/// Longest model name.
pub const MAX_MODEL_NAME_BYTES: usize = 64;

/// Why the model file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read model file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("model file {path}: model `{name}`: {error}")]
    Load {
        path: PathBuf,
        name: String,
        error: Box<crate::engine::LoadError>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    model: Vec<RawModel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: String,
    path: PathBuf,
    kind: String,
    tenants: Tenants,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Tenants {
    All(String),
    Only(BTreeSet<String>),
}

/// Reads `path` and loads every model it lists (once; shared by all
/// tenants), text models on the first usable GPU or else the CPU.
pub fn load_registry(path: &Path) -> Result<ModelRegistry, ConfigError> {
    load_registry_on(path, DeviceChoice::Auto)
}

/// [`load_registry`] with text models on `device` (`cuda` on a machine
/// without a usable GPU is an error naming why).
pub fn load_registry_on(path: &Path, device: DeviceChoice) -> Result<ModelRegistry, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    let raw: RawFile = toml::from_str(&text).map_err(|e| invalid(e.message().to_owned()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut registry = ModelRegistry::empty();
    for model in raw.model {
        let name = model.name;
        if name.is_empty()
            || name.len() > MAX_MODEL_NAME_BYTES
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(format!(
                "model name `{name}` must be 1-64 of [A-Za-z0-9-_.]"
            )));
        }
        let scope = match model.tenants {
            Tenants::All(all) if all == "all" => TenantScope::All,
            Tenants::All(other) => {
                return Err(invalid(format!(
                    "model `{name}`: tenants must be \"all\" or a list, not `{other}`"
                )));
            }
            Tenants::Only(list) => TenantScope::Only(list),
        };
        let file = base.join(&model.path);
        let service: Arc<dyn crate::ModelService> = match model.kind.as_str() {
            "text-generation" => Arc::new(
                TextEngine::load_with_limits(
                    &name,
                    &file,
                    EngineLimits {
                        device,
                        ..EngineLimits::default()
                    },
                )
                .map_err(|error| ConfigError::Load {
                    path: path.to_owned(),
                    name: name.clone(),
                    error: Box::new(error),
                })?,
            ),
            "embedding" => Arc::new(EmbeddingEngine::load(&name, &file).map_err(|error| {
                ConfigError::Load {
                    path: path.to_owned(),
                    name: name.clone(),
                    error: Box::new(error),
                }
            })?),
            other => {
                return Err(invalid(format!(
                    "model `{name}`: kind `{other}` is not supported (supported: text-generation, embedding)"
                )));
            }
        };
        registry
            .register(service, scope)
            .map_err(|e| invalid(e.to_string()))?;
    }
    Ok(registry)
}
