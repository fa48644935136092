use std::time::{Duration, Instant};

use sovra_runtime::{Grants, InvokeError, Limits};
use sovra_test_artifacts::SPIN;

use crate::support::{invocation, runtime, tight_limits, with_bystander};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_times_out_while_others_are_served() {
    let test = runtime();
    let spin = test.load(SPIN);
    let limits = Limits {
        timeout: Duration::from_millis(800),
        ..tight_limits()
    };
    let hostile = sovra_runtime::Invocation {
        limits,
        ..invocation("mallory", Grants::none(), "")
    };
    let started = Instant::now();
    let error = with_bystander(&test, spin, hostile).await;
    assert_eq!(
        error,
        InvokeError::Timeout {
            limit: limits.timeout
        }
    );
    assert_eq!(error.kind(), "timeout");
    // Stopped close to its deadline, not at some later sweep.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let audit = test.runtime.audit().recent("mallory", 1).unwrap();
    assert_eq!(audit[0].outcome, "timeout");
}
