use sovra_runtime::InvokeError;
use sovra_test_artifacts::DEEP_RECURSION;

use crate::support::{runtime, tight_limits, with_bystander};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_recursion_is_a_stack_overflow() {
    let test = runtime();
    let mallory = test.hostile(DEEP_RECURSION, tight_limits());
    let error = with_bystander(&test, &mallory, "").await;
    assert!(
        matches!(error, InvokeError::StackOverflow { .. }),
        "{error:?}"
    );
    assert_eq!(error.kind(), "stack-overflow");
}
