use std::time::{Duration, Instant};

use sovra_runtime::{Grants, InvokeError, Limits};
use sovra_test_artifacts::SPIN;

use crate::support::{runtime, tight_limits, with_bystander};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_times_out_while_others_are_served() {
    let test = runtime();
    let limits = Limits {
        timeout: Duration::from_millis(800),
        ..tight_limits()
    };
    let mallory = test.hostile(SPIN, limits);
    let started = Instant::now();
    let error = with_bystander(&test, &mallory, "").await;
    assert_eq!(
        error,
        InvokeError::Timeout {
            limit: limits.timeout
        }
    );
    assert_eq!(error.kind(), "timeout");
    // Stopped close to its deadline, not at some later sweep.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let audit = test.runtime.audit().recent("mallory", 1).unwrap();
    assert_eq!(audit[0].outcome, "timeout");
}

/// A tenant that fills every slot with guests spinning to their deadline
/// does not keep another tenant's calls waiting for its time slices: each of
/// the victim's calls gets the next turn at an execution slot. The bound is
/// a sanity bound, far above what fair turns give (a few milliseconds); the
/// figures are in `scripts/bench-fair-share`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_flooding_every_slot_with_spinners_does_not_starve_another() {
    let test = runtime();
    let limits = Limits {
        timeout: Duration::from_millis(2500),
        ..tight_limits()
    };
    let mallory = test.hostile(SPIN, limits);
    let victim = test.caller(sovra_test_artifacts::HELLO, "victim", Grants::none());
    let mut attackers = Vec::new();
    for _ in 0..8 {
        let mallory = mallory.clone();
        attackers.push(tokio::spawn(async move { mallory.report("").await.result }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let report = victim.report("Bo").await;
        assert_eq!(report.result.unwrap().output, "Hello, Bo!");
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        attackers.iter().all(|a| !a.is_finished()),
        "the victim's calls all ran while the spinners held their slots"
    );
    assert!(
        slowest < Duration::from_millis(400),
        "slowest victim call {slowest:?}"
    );
    for attacker in attackers {
        assert!(matches!(
            attacker.await.unwrap(),
            Err(InvokeError::Timeout { .. })
        ));
    }
}
