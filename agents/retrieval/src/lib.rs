//! `retrieval`: a tool that finds the passages of the tenant's documents
//! closest to a query, in the vector memory `rag` ingests into (collection
//! `documents`, embedded with `minilm`).
//!
//! Input `{"query": "refunds", "k": 2}`, output
//! `{"passages": [{"id": "...", "text": "...", "score": 0.8}]}`.

use serde_json::{Value, json};
use sovra_sdk::{Error, Tool, ToolInfo, vector};

const COLLECTION: &str = "documents";
const EMBEDDER: &str = "minilm";
/// Passages returned unless asked for fewer.
const DEFAULT_K: u64 = 3;
/// The most passages one call returns.
const MAX_K: u64 = 10;

struct Retrieval;

impl Tool for Retrieval {
    fn describe() -> ToolInfo {
        ToolInfo {
            name: "retrieval".into(),
            description: "Finds the passages of the tenant's documents closest to a query.".into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "minLength": 1},
                    "k": {"type": "integer", "minimum": 1, "maximum": MAX_K}
                },
                "required": ["query"],
                "additionalProperties": false
            })
            .to_string(),
        }
    }

    fn call(input: String) -> Result<String, Error> {
        let input: Value = serde_json::from_str(&input)
            .map_err(|e| Error::InvalidInput(format!("input is not JSON: {e}")))?;
        let query = input["query"]
            .as_str()
            .ok_or_else(|| Error::InvalidInput("`query` must be a string".into()))?;
        let k = input["k"].as_u64().unwrap_or(DEFAULT_K).min(MAX_K) as u32;
        let hits = vector::query_text(COLLECTION, query, EMBEDDER, k)?;
        let passages: Vec<Value> = hits
            .iter()
            .map(|hit| json!({"id": hit.id, "text": hit.text, "score": hit.score}))
            .collect();
        Ok(json!({ "passages": passages }).to_string())
    }
}

sovra_sdk::export_tool!(Retrieval);
