//! The classic controller: PID on the pole's angle and PD on the cart,
//! gains from the episode's parameters, and its own emergency stop.

use sovra_control::{Pacing, StopReason};
use sovra_runtime::Grants;
use sovra_test_artifacts::CARTPOLE_PID;

use crate::support::{plan, runtime};

#[test]
fn the_pid_controller_balances_the_pole_for_ten_seconds() {
    let test = runtime();
    let mut plan = plan("cartpole", 100, 10.0, Pacing::Lockstep, &[]);
    plan.world_options.sensor_noise = 0.002;
    let episode = test
        .episode(CARTPOLE_PID, "acme", Grants::none(), &plan)
        .unwrap();
    let summary = &episode.summary;
    assert_eq!(summary.stop, StopReason::Completed, "{summary:#?}");
    assert_eq!(summary.ticks, 1000);
    let worst = summary
        .world_report
        .iter()
        .find(|(name, _)| name == "max_abs_angle_rad")
        .unwrap()
        .1;
    assert!(worst <= 0.11, "{summary:#?}");
    // Its `init` logged, tagged by the host.
    assert!(
        episode.controller.logs[0]
            .message
            .contains("PID on cartpole at 100 Hz"),
        "{:?}",
        episode.controller.logs
    );
}

#[test]
fn its_gains_come_from_the_episode_and_bad_ones_fail_init() {
    let test = runtime();
    let plan_with = |gain: &str| {
        plan(
            "cartpole",
            100,
            5.0,
            Pacing::Lockstep,
            &[("kp_theta", gain), ("kd_theta", "0")],
        )
    };
    // No proportional or derivative action on the angle: the pole falls.
    let episode = test
        .episode(CARTPOLE_PID, "acme", Grants::none(), &plan_with("0"))
        .unwrap();
    assert!(
        matches!(
            episode.summary.stop,
            StopReason::EmergencyStop { .. } | StopReason::WorldFailed { .. }
        ),
        "{:?}",
        episode.summary.stop
    );
    let episode = test
        .episode(CARTPOLE_PID, "acme", Grants::none(), &plan_with("lots"))
        .unwrap();
    match episode.summary.stop {
        StopReason::InitFailed { error } => assert!(error.contains("kp_theta"), "{error}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn it_stops_the_episode_itself_beyond_recovery_and_the_world_is_left_safe() {
    let test = runtime();
    // The pole starts at 0.1 rad: past this limit from the first tick.
    let plan = plan(
        "cartpole",
        100,
        1.0,
        Pacing::Lockstep,
        &[("limit_theta", "0.05")],
    );
    let episode = test
        .episode(CARTPOLE_PID, "acme", Grants::none(), &plan)
        .unwrap();
    let summary = &episode.summary;
    match &summary.stop {
        StopReason::EmergencyStop { reason } => {
            assert!(reason.contains("beyond recovery"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        (summary.ticks, summary.safe_actions, summary.emergency_stops),
        (1, 1, 1)
    );
}
