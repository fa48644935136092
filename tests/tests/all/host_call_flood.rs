use sovra_runtime::limits::{MAX_HOST_CALLS, MAX_LOG_LINES};
use sovra_runtime::{Grants, Invocation, InvokeError, Limits};
use sovra_test_artifacts::HOST_CALL_FLOOD;

use crate::support::{invocation, invoke, runtime, tight_limits, with_bystander};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_call_flood_hits_the_call_budget() {
    let test = runtime();
    let agent = test.load(HOST_CALL_FLOOD);
    let limits = Limits {
        timeout: std::time::Duration::from_secs(20),
        ..tight_limits()
    };
    let hostile = Invocation {
        limits,
        ..invocation("mallory", Grants::none(), "")
    };
    let error = with_bystander(&test, agent, hostile).await;
    assert_eq!(
        error,
        InvokeError::HostCallLimit {
            limit: MAX_HOST_CALLS
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_log_lines_are_bounded() {
    let test = runtime();
    let agent = test.load(HOST_CALL_FLOOD);
    let limits = Limits {
        timeout: std::time::Duration::from_secs(20),
        ..tight_limits()
    };
    let report = invoke(
        &test.runtime,
        &agent,
        Invocation {
            limits,
            ..invocation("mallory", Grants::none(), "")
        },
    )
    .await;
    assert!(matches!(
        report.result,
        Err(InvokeError::HostCallLimit { .. })
    ));
    assert_eq!(report.logs.len(), MAX_LOG_LINES);
    assert_eq!(
        report.logs.len() + report.dropped_logs,
        MAX_HOST_CALLS as usize
    );
}
