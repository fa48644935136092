//! Data written and acknowledged survives a restart of the runtime.

use sovra_runtime::Runtime;
use sovra_test_artifacts::{COUNTER, NOTES};

use crate::support::{config, grants, invocation, output};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_sql_and_audit_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let runtime = Runtime::new(config(dir.path())).unwrap();
        let counter = runtime.load_file(COUNTER.as_ref(), None).unwrap();
        let notes = runtime.load_file(NOTES.as_ref(), None).unwrap();
        for _ in 0..3 {
            output(
                &runtime,
                &counter,
                invocation("acme", grants(true, false, &[]), "visits"),
            )
            .await;
        }
        output(
            &runtime,
            &notes,
            invocation("acme", grants(false, true, &[]), "add remember me"),
        )
        .await;
        // The runtime is dropped here without any explicit flush.
    }
    let runtime = Runtime::new(config(dir.path())).unwrap();
    let counter = runtime.load_file(COUNTER.as_ref(), None).unwrap();
    let notes = runtime.load_file(NOTES.as_ref(), None).unwrap();
    let visits = output(
        &runtime,
        &counter,
        invocation("acme", grants(true, false, &[]), "visits"),
    )
    .await;
    assert_eq!(visits, "visits: 4");
    let found = output(
        &runtime,
        &notes,
        invocation("acme", grants(false, true, &[]), "find remember"),
    )
    .await;
    assert_eq!(found, "#1 remember me");
    assert_eq!(runtime.audit().recent("acme", 100).unwrap().len(), 6);
}
