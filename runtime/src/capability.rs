//! Capabilities: what a component's imports reach, what a tenant grants, and
//! the check between the two.
//!
//! Deny by default. An import is either a sovra interface (needing a grant),
//! part of the sandboxed WASI slice every agent gets, or refused outright.
//! The tenant's [`Grants`] come from the invocation context; the agent's
//! manifest only asks.

use std::collections::BTreeSet;
use std::fmt;

/// The sovra WIT package and the version range this host serves.
pub const SOVRA_PACKAGE: &str = "sovra:agent";
const SOVRA_MAJOR_MINOR: (u64, u64) = (0, 1);

/// The `wasi:nn` version this host implements (wasmtime-wasi-nn 48's).
pub const WASI_NN_VERSION: &str = "0.2.0-rc-2024-10-28";

/// A capability a tenant can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    /// `sovra:agent/kv`: the tenant's key/value store.
    Kv,
    /// `sovra:agent/sql`: the tenant's SQL database.
    Sql,
    /// `sovra:agent/inference`: models on the tenant's allowlist.
    Inference,
    /// `sovra:agent/vector`: the tenant's vector memory.
    Vector,
    /// `sovra:agent/tools`: tool plugins on the tenant's grant.
    Tools,
}

impl Capability {
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Kv => "kv",
            Capability::Sql => "sql",
            Capability::Inference => "inference",
            Capability::Vector => "vector",
            Capability::Tools => "tools",
        }
    }

    /// Parses a grant name as used on the command line (`kv`, `sql`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "kv" => Some(Capability::Kv),
            "sql" => Some(Capability::Sql),
            "inference" => Some(Capability::Inference),
            "vector" => Some(Capability::Vector),
            "tools" => Some(Capability::Tools),
            _ => None,
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a component import needs from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportNeed {
    /// Always available: sovra `types` and `log`, and the sandboxed WASI slice.
    Always,
    /// Available only when the tenant granted the capability.
    Grant(Capability),
    /// Available to controllers only, in their episodes (`safety`).
    Controller,
}

/// An import the host never provides.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the component imports `{interface}`, which sovra does not provide to agents{hint}")]
pub struct UnsupportedImport {
    pub interface: String,
    hint: &'static str,
}

impl UnsupportedImport {
    pub(crate) fn new(interface: &str, hint: &'static str) -> Self {
        UnsupportedImport {
            interface: interface.to_owned(),
            hint,
        }
    }
}

/// Classifies one component-level import name such as `sovra:agent/kv@0.1.0`.
pub fn classify_import(interface: &str) -> Result<ImportNeed, UnsupportedImport> {
    let unsupported = |hint| UnsupportedImport::new(interface, hint);
    let (path, version) = interface.split_once('@').unwrap_or((interface, ""));
    let (package, name) = path.split_once('/').unwrap_or((path, ""));
    let version = semver::Version::parse(version).ok();
    match package {
        SOVRA_PACKAGE => {
            if version.is_none_or(|v| (v.major, v.minor) != SOVRA_MAJOR_MINOR) {
                return Err(unsupported(" (this host serves sovra:agent@0.1.x)"));
            }
            match name {
                "types" | "log" => Ok(ImportNeed::Always),
                "safety" => Ok(ImportNeed::Controller),
                "kv" => Ok(ImportNeed::Grant(Capability::Kv)),
                "sql" => Ok(ImportNeed::Grant(Capability::Sql)),
                "inference" => Ok(ImportNeed::Grant(Capability::Inference)),
                "vector" => Ok(ImportNeed::Grant(Capability::Vector)),
                "tools" => Ok(ImportNeed::Grant(Capability::Tools)),
                _ => Err(unsupported("")),
            }
        }
        // `wasi:sockets` is linked with every use refused (no socket is ever
        // created): language runtimes such as CPython import it regardless.
        "wasi:io" | "wasi:clocks" | "wasi:random" | "wasi:cli" | "wasi:filesystem"
        | "wasi:sockets" => {
            if version.is_none_or(|v| (v.major, v.minor) != (0, 2)) {
                return Err(unsupported(" (this host serves WASI 0.2)"));
            }
            Ok(ImportNeed::Always)
        }
        // Guests written for wasi-nn: the tenant's tensor models, by name.
        "wasi:nn" => {
            if version.as_ref().map(ToString::to_string).as_deref() != Some(WASI_NN_VERSION) {
                return Err(unsupported(
                    " (this host serves wasi:nn@0.2.0-rc-2024-10-28, as wasmtime 48 does)",
                ));
            }
            match name {
                "tensor" | "graph" | "inference" | "errors" => {
                    Ok(ImportNeed::Grant(Capability::Inference))
                }
                _ => Err(unsupported("")),
            }
        }
        // An HTTP handler's request and response types; no request ever
        // leaves the node (`outgoing-handler` is refused).
        "wasi:http" if name == "types" => {
            if version.is_none_or(|v| (v.major, v.minor) != (0, 2)) {
                return Err(unsupported(" (this host serves WASI 0.2)"));
            }
            Ok(ImportNeed::Always)
        }
        "wasi:http" => Err(unsupported(
            " (agents have no network access; use sovra:agent/inference for models)",
        )),
        // Guests written for Spin: its LLM interface, over the tenant's models.
        "fermyon:spin" => {
            let spin_1 = !interface.contains('@');
            let spin_2 = version
                .as_ref()
                .is_some_and(|v| *v == semver::Version::new(2, 0, 0));
            if name == "llm" && (spin_1 || spin_2) {
                Ok(ImportNeed::Grant(Capability::Inference))
            } else {
                Err(unsupported(
                    " (of Spin's interfaces sovra serves only fermyon:spin/llm, @2.0.0 or Spin 1's)",
                ))
            }
        }
        _ => Err(unsupported("")),
    }
}

/// What a tenant (or the operator for it) granted for one invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub kv: bool,
    pub sql: bool,
    pub vector: bool,
    /// Models the agent may name. Empty means no inference.
    pub models: BTreeSet<String>,
    /// Tools (installed tool plugins, by name) the agent may call. Empty
    /// means no tools.
    pub tools: BTreeSet<String>,
}

impl Grants {
    /// No capability at all (logging and the WASI slice only).
    pub fn none() -> Self {
        Self::default()
    }

    pub fn allows(&self, capability: Capability) -> bool {
        match capability {
            Capability::Kv => self.kv,
            Capability::Sql => self.sql,
            Capability::Inference => !self.models.is_empty(),
            Capability::Vector => self.vector,
            Capability::Tools => !self.tools.is_empty(),
        }
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.models.contains(model)
    }

    pub fn allows_tool(&self, tool: &str) -> bool {
        self.tools.contains(tool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_imports() {
        assert_eq!(
            classify_import("sovra:agent/log@0.1.0"),
            Ok(ImportNeed::Always)
        );
        assert_eq!(
            classify_import("sovra:agent/kv@0.1.3"),
            Ok(ImportNeed::Grant(Capability::Kv))
        );
        assert_eq!(
            classify_import("sovra:agent/tools@0.1.0"),
            Ok(ImportNeed::Grant(Capability::Tools))
        );
        assert_eq!(
            classify_import("wasi:cli/environment@0.2.4"),
            Ok(ImportNeed::Always)
        );
        assert_eq!(
            classify_import("wasi:nn/graph@0.2.0-rc-2024-10-28"),
            Ok(ImportNeed::Grant(Capability::Inference))
        );
        for spin in ["fermyon:spin/llm@2.0.0", "fermyon:spin/llm"] {
            assert_eq!(
                classify_import(spin),
                Ok(ImportNeed::Grant(Capability::Inference))
            );
        }
        assert_eq!(
            classify_import("wasi:http/types@0.2.4"),
            Ok(ImportNeed::Always)
        );
        // Linked, every use refused (see `host::wasi`).
        assert_eq!(
            classify_import("wasi:sockets/tcp@0.2.9"),
            Ok(ImportNeed::Always)
        );
        for refused in [
            "wasi:sockets/tcp@0.3.0",
            "wasi:nn/graph@0.2.0-rc-2024-08-19",
            "wasi:nn/graph@0.2.0",
            "fermyon:spin/key-value@2.0.0",
            "fermyon:spin/llm@3.0.0",
            "wasi:http/incoming-handler@0.2.0",
            "wasi:http/outgoing-handler@0.2.0",
            "sovra:agent/kv@0.2.0",
            "sovra:agent/shell@0.1.0",
            "wasi:cli/environment@0.3.0",
            "acme:evil/backdoor",
        ] {
            let err = classify_import(refused).unwrap_err();
            assert!(err.to_string().contains(refused), "{err}");
        }
    }

    #[test]
    fn grants_deny_by_default() {
        let grants = Grants::none();
        assert!(!grants.allows(Capability::Kv));
        assert!(!grants.allows(Capability::Sql));
        assert!(!grants.allows(Capability::Inference));
        let grants = Grants {
            models: ["m".into()].into(),
            ..Grants::none()
        };
        assert!(grants.allows(Capability::Inference));
        assert!(grants.allows_model("m") && !grants.allows_model("n"));
    }
}
