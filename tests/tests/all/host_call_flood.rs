use sovra_runtime::limits::{MAX_HOST_CALLS, MAX_LOG_LINES};
use sovra_runtime::{InvokeError, Limits};
use sovra_test_artifacts::HOST_CALL_FLOOD;

use crate::support::{runtime, tight_limits, with_bystander};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_call_flood_hits_the_call_budget() {
    let test = runtime();
    let limits = Limits {
        timeout: std::time::Duration::from_secs(20),
        ..tight_limits()
    };
    let mallory = test.hostile(HOST_CALL_FLOOD, limits);
    let error = with_bystander(&test, &mallory, "").await;
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
    let limits = Limits {
        timeout: std::time::Duration::from_secs(20),
        ..tight_limits()
    };
    let mallory = test.hostile(HOST_CALL_FLOOD, limits);
    let report = mallory.report("").await;
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
