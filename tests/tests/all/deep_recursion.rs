use sovra_runtime::{Grants, Invocation, InvokeError};
use sovra_test_artifacts::DEEP_RECURSION;

use crate::support::{invocation, runtime, tight_limits, with_bystander};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_recursion_is_a_stack_overflow() {
    let test = runtime();
    let agent = test.load(DEEP_RECURSION);
    let hostile = Invocation {
        limits: tight_limits(),
        ..invocation("mallory", Grants::none(), "")
    };
    let error = with_bystander(&test, agent, hostile).await;
    assert!(
        matches!(error, InvokeError::StackOverflow { .. }),
        "{error:?}"
    );
    assert_eq!(error.kind(), "stack-overflow");
}
