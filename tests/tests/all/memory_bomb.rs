use sovra_runtime::InvokeError;
use sovra_test_artifacts::MEMORY_BOMB;

use crate::support::{runtime, tight_limits, with_bystander};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_growth_stops_at_the_limit() {
    let test = runtime();
    let limits = tight_limits();
    let mallory = test.hostile(MEMORY_BOMB, limits);
    let error = with_bystander(&test, &mallory, "").await;
    match error {
        InvokeError::MemoryLimit { requested, limit } => {
            assert_eq!(limit, limits.max_memory);
            assert!(requested > limit);
        }
        other => panic!("expected MemoryLimit, got {other:?}"),
    }
}
