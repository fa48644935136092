//! Tenant A can never read or change tenant B's data, through kv or sql.

use sovra_runtime::AgentErrorKind;
use sovra_runtime::InvokeError;
use sovra_test_artifacts::PROBE;

use crate::support::{failure, grants, invocation, output, runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_never_see_each_others_data() {
    let test = runtime();
    let probe = test.load(PROBE);
    let all = || grants(true, true, &["m"]);
    let run = |tenant: &'static str, input: &'static str| {
        output(&test.runtime, &probe, invocation(tenant, all(), input))
    };

    run("alice", "kv-set:secret=alice-only").await;
    run("alice", "sql-exec:CREATE TABLE diary (entry TEXT)").await;
    run("alice", "sql-exec:INSERT INTO diary VALUES ('dear diary')").await;

    // Bob sees none of it, by key, by prefix or by table.
    assert_eq!(run("bob", "kv-get:secret").await, "<none>");
    assert_eq!(run("bob", "kv-list:").await, "");
    let error = failure(
        &test.runtime,
        &probe,
        invocation("bob", all(), "sql-query:SELECT * FROM diary"),
    )
    .await;
    match error {
        InvokeError::Agent(error) => {
            assert_eq!(error.kind, AgentErrorKind::InvalidInput);
            assert!(error.message.contains("no such table"), "{}", error.message);
        }
        other => panic!("expected no such table, got {other:?}"),
    }
    // Bob's writes under the same names land in his own store only.
    run("bob", "kv-set:secret=bob-was-here").await;
    run("bob", "sql-exec:CREATE TABLE diary (entry TEXT)").await;
    run("bob", "sql-exec:DELETE FROM diary").await;
    assert_eq!(run("alice", "kv-get:secret").await, "alice-only");
    assert_eq!(
        run("alice", "sql-query:SELECT entry FROM diary").await,
        "dear diary"
    );

    // Each tenant has its own database file.
    assert!(test.dir.path().join("tenants/alice/tenant.db").exists());
    assert!(test.dir.path().join("tenants/bob/tenant.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tenants_stay_separate() {
    let test = runtime();
    let probe = test.load(PROBE);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let runtime = test.runtime.clone();
        let probe = probe.clone();
        tasks.push(tokio::spawn(async move {
            let tenant = format!("tenant{i}");
            let set = format!("kv-set:owner={tenant}");
            output(
                &runtime,
                &probe,
                invocation(&tenant, grants(true, true, &["m"]), &set),
            )
            .await;
            output(
                &runtime,
                &probe,
                invocation(&tenant, grants(true, true, &["m"]), "kv-get:owner"),
            )
            .await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), format!("tenant{i}"));
    }
}
