//! Tools: how an agent's `call-tool` reaches another plugin.
//!
//! The embedder says which tool plugins a tenant has through a
//! [`ToolCatalog`] on the [`Invocation`](crate::Invocation) (a node: the
//! tenant's installs; `sovra run`: the components given with `--tool`,
//! [`StaticTools`]). The tenant's grant says which of them an agent may call
//! ([`Grants::tools`]). A call then runs in a fresh sandbox of the tool's own
//! component with the tool's own grants and limits, never the caller's,
//! within the caller's remaining deadline and host-call budget, and with a
//! [`CallChain`] that ties its audit record to the caller's.
//!
//! Each tool describes itself once per component: the host calls its
//! `describe` (under [`TOOL_DESCRIBE_TIMEOUT`]) and compiles its input schema
//! ([`DescribedTool`]), so inputs are checked before the tool runs.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::capability::Grants;
#[cfg(doc)]
use crate::limits::TOOL_DESCRIBE_TIMEOUT;
use crate::limits::{Limits, MAX_TOOL_SCHEMA_BYTES};
use crate::names::TenantId;
use crate::runtime::Agent;

/// What a [`ToolCatalog`] lookup resolves to.
pub type ToolLookup<'a> =
    Pin<Box<dyn Future<Output = Result<Option<InstalledTool>, String>> + Send + 'a>>;

/// Where an invocation finds the tools its tenant has.
pub trait ToolCatalog: Send + Sync + fmt::Debug {
    /// Tool `name` as `tenant` installed it, loaded, with its install's
    /// effective grants and limits; `None` when the tenant has no such tool.
    /// An `Err` is the embedder's own failure (storage, a compile), which
    /// the calling agent sees as `unavailable`.
    fn tool<'a>(&'a self, tenant: &'a TenantId, name: &'a str) -> ToolLookup<'a>;
}

/// A tool plugin, ready to call.
#[derive(Debug, Clone)]
pub struct InstalledTool {
    /// The loaded tool component (world `tool`).
    pub agent: Arc<Agent>,
    /// What the tool's own install grants it.
    pub grants: Grants,
    /// Its own limits (its timeout is cut to the caller's remaining time).
    pub limits: Limits,
}

/// The same tools for every tenant: the catalog of `sovra run` and of tests.
#[derive(Debug, Clone, Default)]
pub struct StaticTools(BTreeMap<String, InstalledTool>);

impl StaticTools {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `tool` under its manifest's name (replacing one of that name).
    pub fn add(&mut self, tool: InstalledTool) {
        self.0.insert(tool.agent.manifest().name.clone(), tool);
    }
}

impl ToolCatalog for StaticTools {
    fn tool<'a>(&'a self, _tenant: &'a TenantId, name: &'a str) -> ToolLookup<'a> {
        let found = self.0.get(name).cloned();
        Box::pin(async move { Ok(found) })
    }
}

/// Where an invocation sits in a chain of tool calls; the host sets it on a
/// tool's own invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallChain {
    pub(crate) parent: String,
    pub(crate) depth: u32,
    pub(crate) host_calls_left: u64,
}

impl CallChain {
    /// The invocation that called this tool.
    pub fn parent(&self) -> &str {
        &self.parent
    }

    /// 1 for a tool an agent called, 2 for a tool that tool called, ...
    pub fn depth(&self) -> u32 {
        self.depth
    }
}

/// A tool as it described itself, with its input schema compiled.
pub(crate) struct DescribedTool {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) input_schema: String,
    schema: jsonschema::Validator,
}

impl fmt::Debug for DescribedTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DescribedTool")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl DescribedTool {
    /// Compiles the schema a tool gave; the error says what is wrong with it.
    pub(crate) fn new(
        name: String,
        description: String,
        input_schema: String,
    ) -> Result<Self, String> {
        if input_schema.len() > MAX_TOOL_SCHEMA_BYTES {
            return Err(format!(
                "its input schema is {} bytes; the limit is {MAX_TOOL_SCHEMA_BYTES}",
                input_schema.len()
            ));
        }
        let value: serde_json::Value = serde_json::from_str(&input_schema)
            .map_err(|e| format!("its input schema is not JSON: {e}"))?;
        // No retrieval of remote or file references: the host never fetches
        // what a tool's schema points at.
        let schema = jsonschema::validator_for(&value)
            .map_err(|e| format!("its input schema is not a valid JSON Schema: {e}"))?;
        Ok(DescribedTool {
            name,
            description,
            input_schema,
            schema,
        })
    }

    /// Checks `input` (JSON text) against the schema; the error names the
    /// first mismatch and where it is.
    pub(crate) fn check_input(&self, input: &str) -> Result<(), String> {
        let value: serde_json::Value =
            serde_json::from_str(input).map_err(|e| format!("the input is not JSON: {e}"))?;
        match self.schema.iter_errors(&value).next() {
            None => Ok(()),
            Some(error) => {
                let at = error.instance_path().to_string();
                let at = if at.is_empty() { "/".to_owned() } else { at };
                Err(format!(
                    "the input does not match tool `{}`'s schema at {at}: {error}",
                    self.name
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calculator() -> DescribedTool {
        DescribedTool::new(
            "calculator".into(),
            "arithmetic".into(),
            r#"{"type": "object", "properties": {"expression": {"type": "string"}},
                "required": ["expression"], "additionalProperties": false}"#
                .into(),
        )
        .unwrap()
    }

    #[test]
    fn inputs_are_checked_against_the_schema() {
        let tool = calculator();
        assert_eq!(tool.check_input(r#"{"expression": "1+1"}"#), Ok(()));
        let missing = tool.check_input("{}").unwrap_err();
        assert!(missing.contains("expression"), "{missing}");
        let wrong_type = tool.check_input(r#"{"expression": 2}"#).unwrap_err();
        assert!(wrong_type.contains("/expression"), "{wrong_type}");
        let extra = tool
            .check_input(r#"{"expression": "1", "shell": "rm"}"#)
            .unwrap_err();
        assert!(extra.contains("shell"), "{extra}");
        let not_json = tool.check_input("expression=1").unwrap_err();
        assert!(not_json.starts_with("the input is not JSON"), "{not_json}");
    }

    #[test]
    fn bad_schemas_are_refused_with_the_reason() {
        let not_json = DescribedTool::new("t".into(), String::new(), "{".into()).unwrap_err();
        assert!(not_json.contains("not JSON"), "{not_json}");
        let invalid =
            DescribedTool::new("t".into(), String::new(), r#"{"type": 12}"#.into()).unwrap_err();
        assert!(invalid.contains("not a valid JSON Schema"), "{invalid}");
        let huge = format!(
            r#"{{"description": "{}"}}"#,
            "x".repeat(MAX_TOOL_SCHEMA_BYTES)
        );
        let too_large = DescribedTool::new("t".into(), String::new(), huge).unwrap_err();
        assert!(too_large.contains("limit"), "{too_large}");
    }

    #[test]
    fn remote_references_are_not_fetched() {
        let remote = DescribedTool::new(
            "t".into(),
            String::new(),
            r#"{"$ref": "http://127.0.0.1:9/schema.json"}"#.into(),
        );
        assert!(remote.is_err(), "a remote $ref must not resolve");
    }
}
