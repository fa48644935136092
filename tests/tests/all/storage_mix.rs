//! Many invocations of one tenant writing to all of its stores at once: kv
//! increments and sets on the host connection race SQL inserts on the guest
//! connection and vector upserts. Every write must succeed (writers wait for
//! each other's locks) and every count must come out exact.

use std::time::Duration;

use sovra_runtime::Grants;
use sovra_test_artifacts::STORAGE_MIX;

use crate::support::{keyed_connection, runtime};

/// Writes of each kind, all started at once.
const EACH: usize = 200;

fn all_stores() -> Grants {
    Grants {
        kv: true,
        sql: true,
        vector: true,
        ..Grants::none()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_to_every_store_all_succeed_with_exact_counts() {
    let test = runtime();
    let acme = test.caller(STORAGE_MIX, "acme", all_stores());
    let mut calls = Vec::new();
    for i in 0..EACH {
        for input in [
            "incr:hits".to_owned(),
            format!("set:key/{i}=v{i}"),
            format!("insert:row {i}"),
            format!("upsert:id{i}"),
        ] {
            let acme = acme.clone();
            calls.push(tokio::spawn(async move {
                let report = acme.report(&input).await;
                (input, report.result.map(|r| r.output))
            }));
        }
    }
    let mut failures = Vec::new();
    let mut increments = Vec::new();
    for call in calls {
        let (input, result) = call.await.unwrap();
        match result {
            Ok(out) if input == "incr:hits" => increments.push(out.parse::<usize>().unwrap()),
            Ok(_) => {}
            Err(error) => failures.push(format!("{input}: {error}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    increments.sort_unstable();
    assert_eq!(
        increments,
        (1..=EACH).collect::<Vec<_>>(),
        "each increment saw its own value"
    );
    assert_eq!(acme.output("count:").await, format!("{EACH},{EACH}"));
    assert_eq!(acme.output("incr:hits").await, (EACH + 1).to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_held_past_the_busy_timeout_is_unavailable_not_the_agents_fault() {
    let test = runtime();
    let acme = test.caller(STORAGE_MIX, "acme", all_stores());
    acme.output("incr:hits").await;
    // Another writer (an operator's sqlite3, a stuck backup) holds the
    // tenant's write lock for longer than writers wait.
    let path = test.dir.path().join("tenants/acme/tenant.db");
    let holder = keyed_connection(test.dir.path(), &path, "tenant/acme");
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let waits = acme.with_timeout(Duration::from_secs(20));
    let report = waits.report("incr:hits").await;
    holder.execute_batch("ROLLBACK").unwrap();
    match report.result {
        Err(sovra_runtime::InvokeError::Unavailable(message)) => {
            assert!(message.contains("busy"), "{message}");
            assert!(!message.contains(&*path.to_string_lossy()), "{message}");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    // Once the lock is gone, writes go through and nothing was lost.
    assert_eq!(acme.output("incr:hits").await, "2");
}
