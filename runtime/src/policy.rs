//! One grants policy for `sovra run` and `sovra serve`: what an invocation
//! may use is computed in one place from what the agent's manifest asks for
//! ([`RequestedCapabilities`], [`RequestedLimits`](crate::manifest::RequestedLimits)),
//! what its tenant grants ([`Grant`]: an install's grants on a node, the
//! flags of `sovra run`) and the most the host allows ([`Ceilings`]).
//!
//! - [`check_ceilings`]: a grant above the ceilings is refused (a node at
//!   install, `sovra run` before it runs).
//! - [`check_requested`]: a node refuses to grant what the agent does not
//!   ask for (`sovra run` lets a developer grant more; the import checks
//!   keep it harmless).
//! - [`effective`]: capabilities granted and under the ceilings; limits as
//!   granted, else as the manifest asks, else the defaults, never above the
//!   ceilings. The ceilings may have been lowered since an install: the
//!   effective grant follows them.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::capability::{Capability, Grants};
use crate::limits::{Limits, MAX_MEMORY_CEILING, MAX_TIMEOUT};
use crate::manifest::{AgentManifest, RequestedCapabilities};

/// Smallest memory limit anyone may grant.
pub const MIN_MEMORY: u64 = 64 << 10;

/// What a tenant grants an agent. A node stores it as an install's grants
/// (JSON); `sovra run` builds it from its flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    #[serde(default)]
    pub kv: bool,
    #[serde(default)]
    pub sql: bool,
    #[serde(default)]
    pub vector: bool,
    /// Models the agent may name; none means no inference.
    #[serde(default)]
    pub models: BTreeSet<String>,
    /// Tools (the tenant's installed tool plugins, by name) the agent may
    /// call; none means no tools. Each runs under its own install's grants.
    #[serde(default)]
    pub tools: BTreeSet<String>,
    /// Wall-clock limit in milliseconds (default: the manifest's).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Memory limit in bytes (default: the manifest's).
    #[serde(default)]
    pub max_memory: Option<u64>,
}

impl Grant {
    /// Everything `requests` asks for (no limits of its own): what
    /// `sovra run` gives a `--tool`.
    pub fn as_requested(requests: &RequestedCapabilities) -> Self {
        Grant {
            kv: requests.kv,
            sql: requests.sql,
            vector: requests.vector,
            models: requests.models.clone(),
            tools: requests.tools.clone(),
            ..Grant::default()
        }
    }

    fn grants(&self, capability: Capability) -> bool {
        match capability {
            Capability::Kv => self.kv,
            Capability::Sql => self.sql,
            Capability::Vector => self.vector,
            Capability::Inference => !self.models.is_empty(),
            Capability::Tools => !self.tools.is_empty(),
        }
    }
}

/// The most any grant may give on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ceilings {
    pub capabilities: BTreeSet<Capability>,
    pub timeout: Duration,
    pub max_memory: u64,
}

impl Ceilings {
    /// A node's defaults: every capability, 30 s, 256 MiB.
    pub fn node_default() -> Self {
        Ceilings {
            capabilities: ALL_CAPABILITIES.into(),
            timeout: Duration::from_secs(30),
            max_memory: 256 << 20,
        }
    }

    /// `sovra run` on a developer's machine: what the runtime allows at all.
    pub fn local() -> Self {
        Ceilings {
            capabilities: ALL_CAPABILITIES.into(),
            timeout: MAX_TIMEOUT,
            max_memory: MAX_MEMORY_CEILING,
        }
    }
}

const ALL_CAPABILITIES: [Capability; 5] = [
    Capability::Kv,
    Capability::Sql,
    Capability::Vector,
    Capability::Inference,
    Capability::Tools,
];

/// What an invocation runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub grants: Grants,
    pub limits: Limits,
}

/// Why a grant was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{0}")]
    AboveCeiling(String),
    #[error("{0}")]
    NotRequested(String),
}

/// Refuses a grant that gives more than the ceilings allow.
pub fn check_ceilings(grant: &Grant, ceilings: &Ceilings) -> Result<(), PolicyError> {
    for capability in ALL_CAPABILITIES {
        if grant.grants(capability) && !ceilings.capabilities.contains(&capability) {
            return Err(PolicyError::AboveCeiling(format!(
                "this host does not allow granting `{capability}`"
            )));
        }
    }
    if let Some(ms) = grant.timeout_ms
        && (ms == 0 || u128::from(ms) > ceilings.timeout.as_millis())
    {
        return Err(PolicyError::AboveCeiling(format!(
            "timeout {ms}ms is outside 1..={}ms",
            ceilings.timeout.as_millis()
        )));
    }
    if let Some(bytes) = grant.max_memory
        && !(MIN_MEMORY..=ceilings.max_memory).contains(&bytes)
    {
        return Err(PolicyError::AboveCeiling(format!(
            "max_memory {bytes} is outside {MIN_MEMORY}..={} bytes",
            ceilings.max_memory
        )));
    }
    Ok(())
}

/// Refuses a grant of what the agent (`name`) does not ask for.
pub fn check_requested(
    name: &str,
    requests: &RequestedCapabilities,
    grant: &Grant,
) -> Result<(), PolicyError> {
    for capability in ALL_CAPABILITIES {
        if grant.grants(capability) && !requests.asks(capability) {
            return Err(PolicyError::NotRequested(format!(
                "{name} does not request `{capability}`"
            )));
        }
    }
    if let Some(model) = grant.models.iter().find(|m| !requests.models.contains(*m)) {
        return Err(PolicyError::NotRequested(format!(
            "{name} does not request model `{model}`"
        )));
    }
    if let Some(tool) = grant.tools.iter().find(|t| !requests.tools.contains(*t)) {
        return Err(PolicyError::NotRequested(format!(
            "{name} does not request tool `{tool}`"
        )));
    }
    Ok(())
}

/// What an invocation of the agent with `manifest` runs with under `grant`
/// and `ceilings`.
pub fn effective(manifest: &AgentManifest, grant: &Grant, ceilings: &Ceilings) -> Effective {
    let allowed =
        |capability| grant.grants(capability) && ceilings.capabilities.contains(&capability);
    let defaults = Limits::default();
    Effective {
        grants: Grants {
            kv: allowed(Capability::Kv),
            sql: allowed(Capability::Sql),
            vector: allowed(Capability::Vector),
            models: if allowed(Capability::Inference) {
                grant.models.clone()
            } else {
                BTreeSet::new()
            },
            tools: if allowed(Capability::Tools) {
                grant.tools.clone()
            } else {
                BTreeSet::new()
            },
        },
        limits: Limits {
            timeout: grant
                .timeout_ms
                .map(Duration::from_millis)
                .or(manifest.limits.timeout)
                .unwrap_or(defaults.timeout)
                .min(ceilings.timeout),
            max_memory: grant
                .max_memory
                .or(manifest.limits.max_memory)
                .unwrap_or(defaults.max_memory)
                .min(ceilings.max_memory),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(extra: &str) -> AgentManifest {
        AgentManifest::parse(
            format!(
                "name = \"a\"\nversion = \"1.0.0\"\nworld = \"agent\"\n\
                 [capabilities]\nkv = true\nmodels = [\"m\"]\n{extra}"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn limits_come_from_the_grant_else_the_manifest_else_the_defaults_under_the_ceilings() {
        let asks = manifest("[limits]\ntimeout = \"1500ms\"\nmax-memory = \"32MiB\"");
        let plain = manifest("");
        let node = Ceilings::node_default();
        let granted = Grant {
            timeout_ms: Some(700),
            ..Grant::default()
        };
        assert_eq!(
            effective(&asks, &Grant::default(), &node).limits.timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(
            effective(&asks, &Grant::default(), &node).limits.max_memory,
            32 << 20
        );
        assert_eq!(
            effective(&asks, &granted, &node).limits.timeout,
            Duration::from_millis(700)
        );
        assert_eq!(
            effective(&plain, &Grant::default(), &node).limits,
            Limits::default()
        );
        let low = Ceilings {
            timeout: Duration::from_millis(1000),
            max_memory: 16 << 20,
            ..Ceilings::node_default()
        };
        let capped = effective(&asks, &Grant::default(), &low).limits;
        assert_eq!(
            (capped.timeout, capped.max_memory),
            (Duration::from_millis(1000), 16 << 20)
        );
    }

    #[test]
    fn capabilities_need_the_grant_and_the_ceiling() {
        let asks = manifest("");
        let grant = Grant {
            kv: true,
            models: ["m".to_owned()].into(),
            ..Grant::default()
        };
        let all = effective(&asks, &grant, &Ceilings::node_default()).grants;
        assert!(all.kv && all.allows_model("m") && !all.sql);
        let no_inference = Ceilings {
            capabilities: [Capability::Kv].into(),
            ..Ceilings::node_default()
        };
        let cut = effective(&asks, &grant, &no_inference).grants;
        assert!(cut.kv && cut.models.is_empty());
        assert!(check_ceilings(&grant, &no_inference).is_err());
        assert!(check_ceilings(&grant, &Ceilings::node_default()).is_ok());
    }

    #[test]
    fn grants_beyond_the_requests_or_the_ranges_are_refused_by_name() {
        let asks = manifest("");
        let sql = Grant {
            sql: true,
            ..Grant::default()
        };
        let error = check_requested("a", &asks.capabilities, &sql).unwrap_err();
        assert!(error.to_string().contains("`sql`"), "{error}");
        let other_model = Grant {
            models: ["x".to_owned()].into(),
            ..Grant::default()
        };
        let error = check_requested("a", &asks.capabilities, &other_model).unwrap_err();
        assert!(error.to_string().contains("model `x`"), "{error}");
        let a_tool = Grant {
            tools: ["calculator".to_owned()].into(),
            ..Grant::default()
        };
        let error = check_requested("a", &asks.capabilities, &a_tool).unwrap_err();
        assert!(error.to_string().contains("`tools`"), "{error}");
        let asks_tools = manifest("tools = [\"calculator\"]");
        assert!(check_requested("a", &asks_tools.capabilities, &a_tool).is_ok());
        let other_tool = Grant {
            tools: ["shell".to_owned()].into(),
            ..Grant::default()
        };
        let error = check_requested("a", &asks_tools.capabilities, &other_tool).unwrap_err();
        assert!(error.to_string().contains("tool `shell`"), "{error}");
        assert_eq!(
            effective(&asks_tools, &a_tool, &Ceilings::node_default())
                .grants
                .tools,
            a_tool.tools
        );
        for bad in [
            Grant {
                timeout_ms: Some(0),
                ..Grant::default()
            },
            Grant {
                timeout_ms: Some(31_000),
                ..Grant::default()
            },
            Grant {
                max_memory: Some(1),
                ..Grant::default()
            },
            Grant {
                max_memory: Some(1 << 40),
                ..Grant::default()
            },
        ] {
            assert!(
                matches!(
                    check_ceilings(&bad, &Ceilings::node_default()),
                    Err(PolicyError::AboveCeiling(_))
                ),
                "{bad:?}"
            );
        }
    }
}
