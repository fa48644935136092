//! Tools: other plugins this agent may call (the tenant installs them and
//! grants them to this agent; the manifest lists them under
//! `capabilities.tools`).
//!
//! Each call runs the tool in a sandbox of its own, under its own grants;
//! its input is checked against the tool's JSON Schema first.
//!
//! ```rust,ignore
//! let sum = sovra_sdk::tools::call("calculator", r#"{"expression": "2 + 3 * 4"}"#)?;
//! ```

use crate::bindings::sovra::agent::tools as wit;
use crate::{Error, ToolInfo};

/// The tools this agent may call, as each describes itself.
pub fn list() -> Vec<ToolInfo> {
    wit::list_tools()
}

/// Calls tool `name` with `input` (JSON text); returns its output (JSON text).
pub fn call(name: &str, input: &str) -> Result<String, Error> {
    wit::call_tool(name, input)
}
