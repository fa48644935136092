use sovra_runtime::{Grants, Invocation};
use sovra_test_artifacts::HELLO;

use crate::support::{invocation, output, runtime, tenant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greets_its_input_and_defaults_to_world() {
    let test = runtime();
    let hello = test.load(HELLO);
    assert_eq!(hello.manifest().name, "hello");
    let greeting = output(
        &test.runtime,
        &hello,
        invocation("acme", Grants::none(), " Ada "),
    )
    .await;
    assert_eq!(greeting, "Hello, Ada!");
    let greeting = output(
        &test.runtime,
        &hello,
        invocation("acme", Grants::none(), ""),
    )
    .await;
    assert_eq!(greeting, "Hello, world!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invocation_is_audited() {
    let test = runtime();
    let hello = test.load(HELLO);
    for name in ["a", "b", "c"] {
        output(&test.runtime, &hello, Invocation::new(tenant("acme"), name)).await;
    }
    output(
        &test.runtime,
        &hello,
        Invocation::new(tenant("globex"), "g"),
    )
    .await;
    let records = test.runtime.audit().recent("acme", 10).unwrap();
    assert_eq!(records.len(), 3);
    for record in &records {
        assert_eq!(record.agent, "hello");
        assert_eq!(record.outcome, "ok");
        assert_eq!(record.agent_digest, hello.digest().to_string());
        assert!(record.denials.is_empty());
    }
    let ids: std::collections::BTreeSet<_> = records.iter().map(|r| &r.invocation_id).collect();
    assert_eq!(ids.len(), 3, "invocation ids are unique");
    assert_eq!(test.runtime.audit().recent("globex", 10).unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_invocation_gets_a_fresh_instance() {
    let test = runtime();
    let hello = test.load(HELLO);
    // Many sequential and concurrent calls on one loaded agent all succeed:
    // nothing from one call's instance is reused by the next.
    let mut tasks = Vec::new();
    for i in 0..32 {
        let runtime = test.runtime.clone();
        let hello = hello.clone();
        tasks.push(tokio::spawn(async move {
            output(
                &runtime,
                &hello,
                Invocation::new(tenant("acme"), format!("n{i}")),
            )
            .await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), format!("Hello, n{i}!"));
    }
}
