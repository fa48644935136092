//! A tool for the tool-call limits, as its input says:
//! - `{"mode": "recurse"}`: calls itself with the same input and returns
//!   `{"depth": N}`, one more than the call it made (so a chain that ends
//!   returns its length), or passes the innermost error on;
//! - `{"mode": "spin"}`: loops until stopped;
//! - `{"mode": "count"}`: increments `calls` in the tenant's kv (under this
//!   tool's own grant) and returns the count.

use sovra_sdk::{Error, Tool, ToolInfo, kv, tools};

struct Nested;

impl Tool for Nested {
    fn describe() -> ToolInfo {
        ToolInfo {
            name: "nested-tool".into(),
            description: "Recurses, spins or counts.".into(),
            input_schema: r#"{"type": "object", "properties": {"mode": {"enum": ["recurse", "spin", "count"]}}, "required": ["mode"], "additionalProperties": false}"#.into(),
        }
    }

    fn call(input: String) -> Result<String, Error> {
        if input.contains("recurse") {
            let inner = tools::call("nested-tool", &input)?;
            let depth: u32 = inner
                .trim_start_matches(r#"{"depth":"#)
                .trim_end_matches('}')
                .parse()
                .unwrap_or(0);
            return Ok(format!(r#"{{"depth":{}}}"#, depth + 1));
        }
        if input.contains("spin") {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        let count = kv::increment("calls", 1)?;
        Ok(format!(r#"{{"calls":{count}}}"#))
    }
}

sovra_sdk::export_tool!(Nested);
