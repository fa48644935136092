//! The agent manifest: what an agent says it is and what it asks for.
//!
//! Written by the agent author as `agent.toml` and embedded into the
//! component by the SDK (custom section [`MANIFEST_SECTION`]). A manifest is a
//! *request*: the tenant's grants decide what the agent gets. The host checks
//! that a component imports only what its manifest requests, so that what a
//! reviewer reads is what the code can reach.
//!
//! ```toml
//! name = "notes"
//! version = "0.1.0"
//! world = "agent"
//! description = "Keeps notes in SQL."
//!
//! [capabilities]
//! sql = true
//! models = []
//!
//! [limits]
//! timeout = "2s"
//! max-memory = "32MiB"
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::{parse_bytes, parse_duration};

/// Name of the custom section that carries the manifest inside a component.
pub const MANIFEST_SECTION: &str = "sovra-manifest";

/// Longest manifest accepted.
/// Stops: giant manifests parsed before anything else is checked.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

/// Longest agent name.
pub const MAX_AGENT_NAME_BYTES: usize = 64;

/// Which sovra world a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    /// Exports `sovra:agent/handler`.
    Agent,
    /// Exports `sovra:agent/tool-handler`.
    Tool,
    /// Exports `sovra:agent/control`: runs in episodes at a fixed rate.
    Controller,
    /// Exports `wasi:cli/run` (a WASI command, such as a guest written for
    /// wasi-nn): each invocation runs it with the input on stdin, and its
    /// stdout is the response.
    Command,
    /// Exports `wasi:http/incoming-handler` (an HTTP component, such as a
    /// guest written for Spin): each invocation is a request to it.
    Http,
}

impl World {
    pub fn as_str(self) -> &'static str {
        match self {
            World::Agent => "agent",
            World::Tool => "tool",
            World::Controller => "controller",
            World::Command => "command",
            World::Http => "http",
        }
    }
}

/// Capabilities an agent asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RequestedCapabilities {
    #[serde(default)]
    pub kv: bool,
    #[serde(default)]
    pub sql: bool,
    #[serde(default)]
    pub vector: bool,
    /// Model names the agent wants to use.
    #[serde(default)]
    pub models: BTreeSet<String>,
    /// Tools (tool plugins, by name) the agent wants to call.
    #[serde(default)]
    pub tools: BTreeSet<String>,
}

impl RequestedCapabilities {
    /// Whether the agent asks for `capability` at all.
    pub fn asks(&self, capability: crate::Capability) -> bool {
        match capability {
            crate::Capability::Kv => self.kv,
            crate::Capability::Sql => self.sql,
            crate::Capability::Vector => self.vector,
            crate::Capability::Inference => !self.models.is_empty(),
            crate::Capability::Tools => !self.tools.is_empty(),
        }
    }
}

/// Limits an agent asks for: used when the tenant's grant sets none, and never
/// above the node's ceilings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestedLimits {
    pub timeout: Option<Duration>,
    pub max_memory: Option<u64>,
}

/// A validated agent manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentManifest {
    pub name: String,
    pub version: semver::Version,
    pub world: World,
    pub description: String,
    pub capabilities: RequestedCapabilities,
    pub limits: RequestedLimits,
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {size} bytes, more than the {max} allowed")]
    TooLarge { size: usize, max: usize },
    #[error("manifest is not UTF-8")]
    NotUtf8,
    #[error("manifest is not valid: {0}")]
    Syntax(String),
    #[error("manifest field `{field}` is not valid: {reason}")]
    Field { field: &'static str, reason: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawManifest {
    name: String,
    version: String,
    world: World,
    #[serde(default)]
    description: String,
    #[serde(default)]
    capabilities: RequestedCapabilities,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLimits {
    timeout: Option<String>,
    max_memory: Option<String>,
}

impl AgentManifest {
    /// Parses and validates manifest bytes (TOML).
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                size: bytes.len(),
                max: MAX_MANIFEST_BYTES,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8)?;
        let raw: RawManifest =
            toml::from_str(text).map_err(|e| ManifestError::Syntax(e.message().to_owned()))?;
        validate_agent_name(&raw.name)?;
        let version = semver::Version::parse(&raw.version).map_err(|e| ManifestError::Field {
            field: "version",
            reason: format!("`{}` is not a semantic version: {e}", raw.version),
        })?;
        for model in &raw.capabilities.models {
            if model.is_empty() || model.len() > 128 || model.chars().any(char::is_control) {
                return Err(ManifestError::Field {
                    field: "capabilities.models",
                    reason: format!("`{model}` is not a model name"),
                });
            }
        }
        let limits = RequestedLimits {
            timeout: raw
                .limits
                .timeout
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|reason| ManifestError::Field {
                    field: "limits.timeout",
                    reason,
                })?,
            max_memory: raw
                .limits
                .max_memory
                .as_deref()
                .map(parse_bytes)
                .transpose()
                .map_err(|reason| ManifestError::Field {
                    field: "limits.max-memory",
                    reason,
                })?,
        };
        Ok(AgentManifest {
            name: raw.name,
            version,
            world: raw.world,
            description: raw.description,
            capabilities: raw.capabilities,
            limits,
        })
    }
}

/// Agent names: `[a-z][a-z0-9-]*`, at most [`MAX_AGENT_NAME_BYTES`] bytes.
fn validate_agent_name(name: &str) -> Result<(), ManifestError> {
    let invalid = |reason: &str| ManifestError::Field {
        field: "name",
        reason: format!("`{name}` {reason}"),
    };
    if name.is_empty() || name.len() > MAX_AGENT_NAME_BYTES {
        return Err(invalid("must be 1 to 64 bytes long"));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(invalid("must start with a lowercase letter"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(invalid("may only hold lowercase letters, digits and '-'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_manifest() {
        let manifest = AgentManifest::parse(
            br#"
name = "notes"
version = "1.2.3"
world = "agent"
[capabilities]
sql = true
models = ["smollm2"]
[limits]
timeout = "1500ms"
max-memory = "32MiB"
"#,
        )
        .unwrap();
        assert_eq!(manifest.name, "notes");
        assert!(manifest.capabilities.sql && !manifest.capabilities.kv);
        assert_eq!(manifest.limits.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(manifest.limits.max_memory, Some(32 * 1024 * 1024));
    }

    #[test]
    fn errors_name_the_field() {
        let cases: [(&[u8], &str); 5] = [
            (b"name = \"Bad Name\"\nversion = \"1.0.0\"\nworld = \"agent\"", "name"),
            (b"name = \"a\"\nversion = \"one\"\nworld = \"agent\"", "version"),
            (b"name = \"a\"\nversion = \"1.0.0\"\nworld = \"daemon\"", "daemon"),
            (b"name = \"a\"\nversion = \"1.0.0\"\nworld = \"agent\"\nshell = true", "shell"),
            (
                b"name = \"a\"\nversion = \"1.0.0\"\nworld = \"agent\"\n[limits]\ntimeout = \"soon\"",
                "limits.timeout",
            ),
        ];
        for (text, needle) in cases {
            let err = AgentManifest::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} does not mention {needle}");
        }
    }
}
