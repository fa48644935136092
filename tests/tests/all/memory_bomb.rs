use sovra_runtime::{Grants, Invocation, InvokeError};
use sovra_test_artifacts::MEMORY_BOMB;

use crate::support::{invocation, runtime, tight_limits, with_bystander};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_growth_stops_at_the_limit() {
    let test = runtime();
    let bomb = test.load(MEMORY_BOMB);
    let limits = tight_limits();
    let hostile = Invocation {
        limits,
        ..invocation("mallory", Grants::none(), "")
    };
    let error = with_bystander(&test, bomb, hostile).await;
    match error {
        InvokeError::MemoryLimit { requested, limit } => {
            assert_eq!(limit, limits.max_memory);
            assert!(requested > limit);
        }
        other => panic!("expected MemoryLimit, got {other:?}"),
    }
}
