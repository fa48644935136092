//! Data written and acknowledged survives a restart of the runtime.

use sovra_runtime::Runtime;
use sovra_test_artifacts::{COUNTER, NOTES};

use crate::support::{Caller, config, grants};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_sql_and_audit_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let runtime = Runtime::new(config(dir.path())).unwrap();
        let counter = Caller::load(&runtime, COUNTER, "acme", grants(true, false, &[]));
        let notes = Caller::load(&runtime, NOTES, "acme", grants(false, true, &[]));
        for _ in 0..3 {
            counter.output("visits").await;
        }
        notes.output("add remember me").await;
        // The runtime is dropped here without any explicit flush.
    }
    let runtime = Runtime::new(config(dir.path())).unwrap();
    let counter = Caller::load(&runtime, COUNTER, "acme", grants(true, false, &[]));
    let notes = Caller::load(&runtime, NOTES, "acme", grants(false, true, &[]));
    assert_eq!(counter.output("visits").await, "visits: 4");
    assert_eq!(notes.output("find remember").await, "#1 remember me");
    assert_eq!(runtime.audit().recent("acme", 100).unwrap().len(), 6);
}
