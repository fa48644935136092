//! Spin 1's unversioned `fermyon:spin/llm` is served as Spin 2's is.

use std::path::Path;

use sovra_runtime::AgentManifest;
use sovra_test_artifacts::SPIN1_LLM;

use crate::support::{agent_error, failure, grants, invocation, output, runtime_with_models};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unversioned_spin_llm_interface_infers_and_denies() {
    let Some(test) = runtime_with_models() else {
        return;
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("guests/spin1-llm/agent.toml");
    let manifest = AgentManifest::parse(&std::fs::read(manifest).unwrap()).unwrap();
    let spin1 = test
        .runtime
        .load_file(Path::new(SPIN1_LLM), Some(manifest))
        .unwrap();
    let answer = output(
        &test.runtime,
        &spin1,
        invocation(
            "acme",
            grants(false, false, &["smollm2"]),
            "smollm2 The capital of France is",
        ),
    )
    .await;
    assert!(answer.contains("Paris"), "{answer}");
    let (_, message) = agent_error(
        failure(
            &test.runtime,
            &spin1,
            invocation(
                "acme",
                grants(false, false, &["smollm2"]),
                "no-such-model Hello",
            ),
        )
        .await,
    );
    assert!(message.contains("ModelNotSupported"), "{message}");
}
