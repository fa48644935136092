use sovra_runtime::Grants;
use sovra_test_artifacts::HELLO;

use crate::support::runtime;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greets_its_input_and_defaults_to_world() {
    let test = runtime();
    let hello = test.caller(HELLO, "acme", Grants::none());
    assert_eq!(hello.agent().manifest().name, "hello");
    assert_eq!(hello.output(" Ada ").await, "Hello, Ada!");
    assert_eq!(hello.output("").await, "Hello, world!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invocation_is_audited() {
    let test = runtime();
    let hello = test.caller(HELLO, "acme", Grants::none());
    for name in ["a", "b", "c"] {
        hello.output(name).await;
    }
    hello.as_tenant("globex").output("g").await;
    let records = test.runtime.audit().recent("acme", 10).unwrap();
    assert_eq!(records.len(), 3);
    for record in &records {
        assert_eq!(record.agent, "hello");
        assert_eq!(record.outcome, "ok");
        assert_eq!(record.agent_digest, hello.agent().digest().to_string());
        assert!(record.denials.is_empty());
    }
    let ids: std::collections::BTreeSet<_> = records.iter().map(|r| &r.invocation_id).collect();
    assert_eq!(ids.len(), 3, "invocation ids are unique");
    assert_eq!(test.runtime.audit().recent("globex", 10).unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_invocation_gets_a_fresh_instance() {
    let test = runtime();
    let hello = test.caller(HELLO, "acme", Grants::none());
    // Many sequential and concurrent calls on one loaded agent all succeed:
    // nothing from one call's instance is reused by the next.
    let mut tasks = Vec::new();
    for i in 0..32 {
        let hello = hello.clone();
        tasks.push(tokio::spawn(
            async move { hello.output(&format!("n{i}")).await },
        ));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), format!("Hello, n{i}!"));
    }
}
