//! Tenant A can never read or change tenant B's data, through kv or sql.

use sovra_runtime::AgentErrorKind;
use sovra_runtime::InvokeError;
use sovra_test_artifacts::PROBE;

use crate::support::{grants, runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_never_see_each_others_data() {
    let test = runtime();
    let alice = test.caller(PROBE, "alice", grants(true, true, &["m"]));
    let bob = alice.as_tenant("bob");

    alice.output("kv-set:secret=alice-only").await;
    alice
        .output("sql-exec:CREATE TABLE diary (entry TEXT)")
        .await;
    alice
        .output("sql-exec:INSERT INTO diary VALUES ('dear diary')")
        .await;

    // Bob sees none of it, by key, by prefix or by table.
    assert_eq!(bob.output("kv-get:secret").await, "<none>");
    assert_eq!(bob.output("kv-list:").await, "");
    match bob.failure("sql-query:SELECT * FROM diary").await {
        InvokeError::Agent(error) => {
            assert_eq!(error.kind, AgentErrorKind::InvalidInput);
            assert!(error.message.contains("no such table"), "{}", error.message);
        }
        other => panic!("expected no such table, got {other:?}"),
    }
    // Bob's writes under the same names land in his own store only.
    bob.output("kv-set:secret=bob-was-here").await;
    bob.output("sql-exec:CREATE TABLE diary (entry TEXT)").await;
    bob.output("sql-exec:DELETE FROM diary").await;
    assert_eq!(alice.output("kv-get:secret").await, "alice-only");
    assert_eq!(
        alice.output("sql-query:SELECT entry FROM diary").await,
        "dear diary"
    );

    // Each tenant has its own database file.
    assert!(test.dir.path().join("tenants/alice/tenant.db").exists());
    assert!(test.dir.path().join("tenants/bob/tenant.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tenants_stay_separate() {
    let test = runtime();
    let probe = test.caller(PROBE, "tenant0", grants(true, true, &["m"]));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let tenant = format!("tenant{i}");
        let caller = probe.as_tenant(&tenant);
        tasks.push(tokio::spawn(async move {
            caller.output(&format!("kv-set:owner={tenant}")).await;
            caller.output("kv-get:owner").await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), format!("tenant{i}"));
    }
}
