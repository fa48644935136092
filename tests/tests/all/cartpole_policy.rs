//! The policy-network controller: balances the simulated cart-pole by
//! running the `cartpole-policy` ONNX model every tick through the sandbox,
//! and is refused (before any tick) without the model's grant.

use sovra_control::{EpisodeError, Pacing, StopReason};
use sovra_runtime::{Capability, Grants, InvokeError};
use sovra_test_artifacts::CARTPOLE_POLICY;

use crate::support::{grants, plan, runtime_with_models};

fn report(episode: &sovra_control::Episode, name: &str) -> f64 {
    episode
        .summary
        .world_report
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no `{name}` in {:?}", episode.summary.world_report))
}

#[test]
fn the_policy_network_balances_the_pole_for_ten_seconds() {
    let Some(test) = runtime_with_models() else {
        return;
    };
    let mut plan = plan("cartpole", 100, 10.0, Pacing::Lockstep, &[]);
    plan.world_options.sensor_noise = 0.002;
    let episode = test
        .episode(
            CARTPOLE_POLICY,
            "acme",
            grants(false, false, &["cartpole-policy"]),
            &plan,
        )
        .unwrap();
    let summary = &episode.summary;
    assert_eq!(summary.stop, StopReason::Completed, "{summary:#?}");
    assert_eq!(summary.ticks, 1000);
    assert_eq!(
        summary.safe_actions + summary.missed_ticks,
        0,
        "{summary:#?}"
    );
    // Started at 0.1 rad, it never tilts further and ends upright.
    assert!(
        report(&episode, "max_abs_angle_rad") <= 0.11,
        "{summary:#?}"
    );
    assert!(
        report(&episode, "final_angle_rad").abs() < 0.05,
        "{summary:#?}"
    );
    assert!(report(&episode, "max_abs_x_m") < 2.0, "{summary:#?}");
}

#[test]
fn without_the_model_grant_the_policy_is_refused_before_it_runs() {
    let Some(test) = runtime_with_models() else {
        return;
    };
    let plan = plan("cartpole", 100, 1.0, Pacing::Lockstep, &[]);
    // No inference at all: refused at instantiation, on its imports.
    match test.episode(CARTPOLE_POLICY, "acme", Grants::none(), &plan) {
        Err(EpisodeError::Controller(InvokeError::NotGranted { capability, .. })) => {
            assert_eq!(capability, Capability::Inference)
        }
        other => panic!("{other:?}"),
    }
    // Another model granted, not this one: its `init` sees the model is not
    // there, and no tick runs.
    let episode = test
        .episode(
            CARTPOLE_POLICY,
            "acme",
            grants(false, false, &["digits"]),
            &plan,
        )
        .unwrap();
    match &episode.summary.stop {
        StopReason::InitFailed { error } => assert!(error.contains("cartpole-policy"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(episode.summary.ticks, 0);
}
