use sovra_runtime::{Capability, Grants, InvokeError};
use sovra_test_artifacts::COUNTER;

use crate::support::{grants, runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_each_key_and_lists_them() {
    let test = runtime();
    let counter = test.caller(COUNTER, "acme", grants(true, false, &[]));
    for expected in 1..=3 {
        let out = counter.output("apples").await;
        assert_eq!(out, format!("apples: {expected}"));
    }
    counter.output("pears").await;
    let listing = counter.output("").await;
    assert_eq!(listing, "apples: 3\npears: 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_reach_the_report_with_fields() {
    let test = runtime();
    let counter = test.caller(COUNTER, "acme", grants(true, false, &[]));
    let report = counter.report("x").await;
    assert!(report.result.is_ok());
    assert_eq!(report.logs.len(), 1);
    assert_eq!(report.logs[0].message, "counted");
    assert!(
        report.logs[0]
            .fields
            .contains(&("count".into(), "1".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_kv_grant_it_is_refused_before_running() {
    let test = runtime();
    let counter = test.caller(COUNTER, "acme", Grants::none());
    let error = counter.failure("apples").await;
    match &error {
        InvokeError::NotGranted {
            interface,
            capability,
        } => {
            assert!(interface.starts_with("sovra:agent/kv@0.1"), "{interface}");
            assert_eq!(*capability, Capability::Kv);
        }
        other => panic!("expected NotGranted, got {other:?}"),
    }
    assert!(error.to_string().contains("sovra:agent/kv"), "{error}");
    let audit = test.runtime.audit().recent("acme", 1).unwrap();
    assert_eq!(audit[0].outcome, "not-granted");
    assert_eq!(audit[0].denials, ["import: sovra:agent/kv@0.1.0"]);
    // Nothing was written for the tenant.
    assert!(!test.dir.path().join("tenants/acme").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_are_not_lost() {
    let test = runtime();
    let counter = test.caller(COUNTER, "acme", grants(true, false, &[]));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move { counter.output("hits").await }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let listing = counter.output("").await;
    assert_eq!(listing, "hits: 20");
}
