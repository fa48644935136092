//! The example `retrieval` tool: passages from the tenant's own vector
//! memory (as `rag` ingests them), closest first, never another tenant's.

use std::time::Duration;

use sovra_runtime::{Grants, Limits};
use sovra_test_artifacts::{RAG, RETRIEVAL};

use crate::support::{grants, runtime_with_models};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_the_closest_passages_of_the_tenants_documents() {
    let Some(test) = runtime_with_models() else {
        return;
    };
    let memory = Grants {
        vector: true,
        ..grants(false, false, &["minilm"])
    };
    let limits = Limits {
        timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let rag = test.caller(RAG, "acme", memory.clone()).with_limits(limits);
    rag.output(
        "ingest The office is open from 9am to 5pm on weekdays.\n\n\
         Refunds are processed within five business days.",
    )
    .await;
    let tool = test.caller(RETRIEVAL, "acme", memory).with_limits(limits);
    let found: serde_json::Value = serde_json::from_str(
        &tool
            .output(r#"{"query": "when do I get my money back", "k": 1}"#)
            .await,
    )
    .unwrap();
    let passages = found["passages"].as_array().unwrap();
    assert_eq!(passages.len(), 1);
    assert!(
        passages[0]["text"].as_str().unwrap().starts_with("Refunds"),
        "{found}"
    );
    // Another tenant's memory is its own (empty) one.
    let elsewhere: serde_json::Value = serde_json::from_str(
        &tool
            .as_tenant("globex")
            .output(r#"{"query": "refunds"}"#)
            .await,
    )
    .unwrap();
    assert_eq!(elsewhere["passages"], serde_json::json!([]));
}
