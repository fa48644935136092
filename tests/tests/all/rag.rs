//! The `rag` agent: documents embedded into the tenant's vector memory with
//! all-MiniLM-L6-v2, retrieved by similarity, answered by SmolLM2.

use std::time::Duration;

use sovra_runtime::{AgentErrorKind, Capability, Invocation, InvokeError, Limits};
use sovra_test_artifacts::RAG;

use crate::support::{
    HANDBOOK, assert_cites_the_refunds_passage, failure, grants, invocation, invoke,
    runtime_with_models,
};

fn ask(tenant: &str, input: &str) -> Invocation {
    let mut invocation = Invocation {
        limits: Limits {
            timeout: Duration::from_secs(120),
            ..Limits::default()
        },
        ..invocation(tenant, grants(false, false, &["minilm", "smollm2"]), input)
    };
    invocation.grants.vector = true;
    invocation
        .metadata
        .push(("source".into(), "handbook".into()));
    invocation
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_from_the_tenants_own_documents_and_cites_them() {
    let Some(test) = runtime_with_models() else {
        return;
    };
    let rag = test.load(RAG);

    let ingested = invoke(&test.runtime, &rag, ask("acme", HANDBOOK)).await;
    // The embeddings are accounted as the tokens the passages came to.
    let embedded: Vec<_> = ingested
        .usage
        .iter()
        .map(|u| (u.model.as_str(), u.generated_tokens))
        .collect();
    assert_eq!(embedded, [("minilm", 0)], "{:?}", ingested.usage);
    assert!(
        ingested.usage[0].prompt_tokens >= 3 * 8,
        "{:?}",
        ingested.usage
    );
    assert_eq!(
        ingested.result.unwrap().output,
        "ingested 3 passages from handbook"
    );

    let answer = invoke(
        &test.runtime,
        &rag,
        ask("acme", "How long do refunds take?"),
    )
    .await;
    let response = answer.result.unwrap();
    assert_cites_the_refunds_passage(&response);

    // Another tenant has no documents: nothing leaks across.
    let other = invoke(
        &test.runtime,
        &rag,
        ask("globex", "How long do refunds take?"),
    )
    .await;
    assert_eq!(
        other.result.unwrap().output,
        "I have no documents to answer from yet."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_memory_needs_its_grant_and_allowed_models() {
    let Some(test) = runtime_with_models() else {
        return;
    };
    let rag = test.load(RAG);
    let mut no_vector = ask("acme", "hello");
    no_vector.grants.vector = false;
    match failure(&test.runtime, &rag, no_vector).await {
        InvokeError::NotGranted { capability, .. } => assert_eq!(capability, Capability::Vector),
        other => panic!("expected NotGranted, got {other:?}"),
    }
    let mut no_embedder = ask("acme", HANDBOOK);
    no_embedder.grants.models = ["smollm2".to_owned()].into();
    match failure(&test.runtime, &rag, no_embedder).await {
        InvokeError::Agent(error) => {
            assert_eq!(error.kind, AgentErrorKind::AccessDenied);
            assert!(error.message.contains("minilm"), "{}", error.message);
        }
        other => panic!("expected access-denied, got {other:?}"),
    }
}
