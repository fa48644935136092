//! Tensor models (ONNX) through the sandbox: a guest sees what tensors a
//! model takes and gives, runs the digits classifier on a real image and
//! gets numpy's answer, and a call whose tensors do not fit is its own
//! `invalid-input`.

use sovra_runtime::AgentErrorKind;
use sovra_test_artifacts::PROBE;

use crate::support::{agent_error, digits_reference_image, grants, runtime_with_models};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_classifies_a_digit_with_an_onnx_model() {
    let Some(test) = runtime_with_models() else {
        return;
    };
    let probe = test.caller(PROBE, "acme", grants(true, true, &["digits"]));
    assert_eq!(
        probe.output("tensor-info:digits").await,
        "pixels[0, 64] probabilities[0, 10]"
    );
    let (image, class) = digits_reference_image();
    assert_eq!(
        probe.output(&format!("classify:{image}")).await,
        class.to_string()
    );

    // The probe's `tensor` call sends `x` of shape [2]: named, not run.
    let (kind, message) = agent_error(probe.failure("tensor:digits").await);
    assert_eq!(kind, AgentErrorKind::InvalidInput, "{message}");
    assert!(message.contains("`pixels`"), "{message}");

    // Without the model's grant it is denied, and not described.
    let ungranted = probe.with_grants(grants(true, true, &["minilm"]));
    assert_eq!(ungranted.output("tensor-info:digits").await, "");
    let (kind, _) = agent_error(ungranted.failure(&format!("classify:{image}")).await);
    assert_eq!(kind, AgentErrorKind::AccessDenied);
}
