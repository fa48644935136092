//! The operator's model file (`models.toml`): which models this node serves,
//! from which files, to which tenants.
//!
//! ```toml
//! [[model]]
//! name = "smollm2"                                  # what agents call it
//! path = "SmolLM2-135M-Instruct.Q4_1.gguf"          # relative to this file
//! kind = "text-generation"
//! tenants = "all"                                   # or ["acme", "globex"]
//! kv-cache-mib = 1024        # optional: KV cache of all its sequences
//! tenant-share-percent = 50  # optional: most of the cache and batch one tenant holds
//!
//! [[model]]
//! name = "minilm"
//! path = "all-MiniLM-L6-v2"                         # a directory: model.safetensors,
//! kind = "embedding"                                # config.json, tokenizer.json
//! tenants = "all"
//!
//! [[model]]
//! name = "digits"
//! path = "digits.onnx"                              # an ONNX graph, run with tract
//! kind = "tensor"
//! tenants = ["acme"]
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::cuda::DeviceChoice;
use crate::engine::{EmbeddingEngine, EngineLimits, TensorEngine, TextEngine};
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
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawModel {
    name: String,
    path: PathBuf,
    kind: String,
    tenants: Tenants,
    kv_cache_mib: Option<u64>,
    tenant_share_percent: Option<u8>,
}

/// Largest KV cache one model may be given, in MiB (the card's memory is
/// the real bound; this catches a value in the wrong unit).
pub const MAX_KV_CACHE_MIB: u64 = 1 << 20;

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
        let mut limits = EngineLimits::default();
        if model.kind != "text-generation"
            && (model.kv_cache_mib.is_some() || model.tenant_share_percent.is_some())
        {
            return Err(invalid(format!(
                "model `{name}`: kv-cache-mib and tenant-share-percent apply to text-generation models only"
            )));
        }
        if let Some(mib) = model.kv_cache_mib {
            if !(1..=MAX_KV_CACHE_MIB).contains(&mib) {
                return Err(invalid(format!(
                    "model `{name}`: kv-cache-mib {mib} is outside 1..={MAX_KV_CACHE_MIB}"
                )));
            }
            limits.kv_cache_bytes = usize::try_from(mib << 20).map_err(|_| {
                invalid(format!(
                    "model `{name}`: kv-cache-mib {mib} does not fit this machine"
                ))
            })?;
        }
        if let Some(percent) = model.tenant_share_percent {
            if !(1..=100).contains(&percent) {
                return Err(invalid(format!(
                    "model `{name}`: tenant-share-percent {percent} is outside 1..=100"
                )));
            }
            limits.tenant_share_percent = percent;
        }
        let service: Arc<dyn crate::ModelService> = match model.kind.as_str() {
            "text-generation" => Arc::new(
                TextEngine::load_with_limits(&name, &file, limits, device).map_err(|error| {
                    ConfigError::Load {
                        path: path.to_owned(),
                        name: name.clone(),
                        error: Box::new(error),
                    }
                })?,
            ),
            "embedding" => Arc::new(EmbeddingEngine::load(&name, &file).map_err(|error| {
                ConfigError::Load {
                    path: path.to_owned(),
                    name: name.clone(),
                    error: Box::new(error),
                }
            })?),
            "tensor" => {
                Arc::new(
                    TensorEngine::load(&name, &file).map_err(|error| ConfigError::Load {
                        path: path.to_owned(),
                        name: name.clone(),
                        error: Box::new(error),
                    })?,
                )
            }
            other => {
                return Err(invalid(format!(
                    "model `{name}`: kind `{other}` is not supported (supported: text-generation, embedding, tensor)"
                )));
            }
        };
        registry
            .register(service, scope)
            .map_err(|e| invalid(e.to_string()))?;
    }
    Ok(registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A models file with one tiny text model and `extra` lines in its table.
    fn load(extra: &str) -> Result<ModelRegistry, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let model =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/tiny/llama-spm.gguf");
        let path = dir.path().join("models.toml");
        std::fs::write(
            &path,
            format!(
                "[[model]]\nname = \"tiny\"\npath = {:?}\nkind = \"text-generation\"\ntenants = \"all\"\n{extra}\n",
                model.to_str().unwrap()
            ),
        )
        .unwrap();
        load_registry_on(&path, DeviceChoice::Cpu)
    }

    #[test]
    fn cache_size_and_tenant_share_are_read_and_checked() {
        let registry = load("kv-cache-mib = 3\ntenant-share-percent = 25").unwrap();
        let service = registry.lookup("anyone", "tiny").unwrap();
        assert_eq!(service.descriptor().name, "tiny");
        for (line, needle) in [
            ("kv-cache-mib = 0", "kv-cache-mib 0 is outside"),
            (
                "tenant-share-percent = 0",
                "tenant-share-percent 0 is outside",
            ),
            (
                "tenant-share-percent = 101",
                "tenant-share-percent 101 is outside",
            ),
            ("kv-cache = 3", "unknown field `kv-cache`"),
        ] {
            let error = load(line).unwrap_err().to_string();
            assert!(error.contains(needle), "{line}: {error}");
        }
    }
}
