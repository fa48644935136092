use sovra_runtime::limits::MAX_CAPTURED_OUTPUT;
use sovra_runtime::{InvokeError, StreamName};
use sovra_test_artifacts::HUGE_OUTPUT;

use crate::support::{runtime, tight_limits, with_bystander};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_floods_stop_at_the_capture_limit() {
    let test = runtime();
    let mallory = test.hostile(HUGE_OUTPUT, tight_limits());
    let error = with_bystander(&test, &mallory, "").await;
    match error {
        InvokeError::OutputLimit(exceeded) => {
            assert_eq!(exceeded.stream, StreamName::Stdout);
            assert_eq!(exceeded.limit, MAX_CAPTURED_OUTPUT);
        }
        other => panic!("expected OutputLimit, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_is_bounded_too_and_what_fits_is_kept() {
    let test = runtime();
    let mallory = test.hostile(HUGE_OUTPUT, tight_limits());
    let report = mallory.report("stderr").await;
    match report.result {
        Err(InvokeError::OutputLimit(exceeded)) => assert_eq!(exceeded.stream, StreamName::Stderr),
        other => panic!("expected OutputLimit, got {other:?}"),
    }
    assert_eq!(report.stderr.len(), MAX_CAPTURED_OUTPUT);
    assert!(report.stderr.starts_with(b"all work and no play"));
    assert!(report.stdout.is_empty());
}
