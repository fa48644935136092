//! A guest written for wasi-nn (a WASI command, no sovra SDK) runs
//! unmodified: `load-by-name` reaches only the tenant's allowed tensor
//! models, `compute` runs them as `run-tensor` does, model bytes from the
//! guest are refused, and the host holds a bounded amount of its tensors.

use std::path::Path;
use std::sync::Arc;

use sovra_runtime::{Agent, AgentErrorKind, AgentManifest, Grants, InvokeError, World};
use sovra_test_artifacts::NN_CLASSIFY;

use crate::support::{
    agent_error, digits_reference_image, failure, grants, invocation, output, runtime_with_models,
};

/// The guest with the manifest supplied beside it (it carries none).
fn load(runtime: &sovra_runtime::Runtime) -> Arc<Agent> {
    let manifest_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("guests/nn-classify/agent.toml");
    let manifest = AgentManifest::parse(&std::fs::read(manifest_path).unwrap()).unwrap();
    let agent = runtime
        .load_file(Path::new(NN_CLASSIFY), Some(manifest))
        .expect("a wasi-nn command loads");
    assert_eq!(agent.manifest().world, World::Command);
    agent
}

/// What the guest answers `input` with, called by a tenant that allows `digits`.
async fn classify(runtime: &sovra_runtime::Runtime, nn: &Agent, input: &str) -> String {
    let allowed = grants(false, false, &["digits"]);
    output(runtime, nn, invocation("acme", allowed, input)).await
}

/// The digits reference image as the guest's input, and its class.
fn reference_input() -> (String, String) {
    let (image, class) = digits_reference_image();
    (format!("digits {image}"), class.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasi_nn_guest_classifies_with_an_allowed_named_model() {
    let Some(test) = runtime_with_models() else {
        return;
    };
    let nn = load(&test.runtime);
    let (input, class) = reference_input();
    assert_eq!(classify(&test.runtime, &nn, &input).await.trim(), class);

    // A shape the model does not take: wasi-nn's invalid-argument, naming it.
    let (kind, message) = agent_error(
        failure(
            &test.runtime,
            &nn,
            invocation("acme", grants(false, false, &["digits"]), "digits 1,2,3"),
        )
        .await,
    );
    assert_eq!(kind, AgentErrorKind::Internal, "{message}");
    assert!(
        message.contains("InvalidArgument") && message.contains("pixels"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_nn_reaches_only_allowed_tensor_models_and_never_guest_bytes() {
    let Some(test) = runtime_with_models() else {
        return;
    };
    let nn = load(&test.runtime);
    let (image, _) = digits_reference_image();
    let digits = || grants(false, false, &["digits"]);

    // Guest-supplied weights: refused, and audited as a denial.
    let (_, message) = agent_error(
        failure(
            &test.runtime,
            &nn,
            invocation("acme", digits(), "load-bytes"),
        )
        .await,
    );
    assert!(
        message.contains("Security") && message.contains("load-by-name"),
        "{message}"
    );
    let audit = test.runtime.audit().recent("acme", 1).unwrap();
    assert_eq!(
        audit[0].denials,
        ["wasi:nn load of guest-supplied model bytes"]
    );

    // A model not on the tenant's allowlist, existing or not: the same denial.
    for model in ["cartpole-policy", "no-such-model"] {
        let (_, message) = agent_error(
            failure(
                &test.runtime,
                &nn,
                invocation("acme", digits(), &format!("{model} {image}")),
            )
            .await,
        );
        assert!(
            message.contains("Security") && message.contains(model),
            "{message}"
        );
    }

    // An allowed model that is not a tensor model.
    let with_text = grants(false, false, &["digits", "smollm2"]);
    let (_, message) = agent_error(
        failure(
            &test.runtime,
            &nn,
            invocation("acme", with_text, &format!("smollm2 {image}")),
        )
        .await,
    );
    assert!(message.contains("UnsupportedOperation"), "{message}");

    // No inference grant at all: refused before the guest runs.
    let refused = failure(
        &test.runtime,
        &nn,
        invocation("acme", Grants::none(), &format!("digits {image}")),
    )
    .await;
    assert!(
        matches!(refused, InvokeError::NotGranted { .. }),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_make_the_host_hoard_tensors() {
    let Some(test) = runtime_with_models() else {
        return;
    };
    let nn = load(&test.runtime);
    let error = failure(
        &test.runtime,
        &nn,
        invocation("mallory", grants(false, false, &["digits"]), "hoard"),
    )
    .await;
    match error {
        InvokeError::HostCallResultLimit { call, limit, .. } => {
            assert_eq!(call, "wasi:nn/tensor.constructor");
            assert_eq!(limit, sovra_runtime::limits::MAX_NN_TENSOR_BYTES as u64);
        }
        other => panic!("expected the tensor bound, got {other:?}"),
    }
    // The node goes on serving.
    let (input, class) = reference_input();
    assert_eq!(classify(&test.runtime, &nn, &input).await.trim(), class);
}
