//! A hostile controller against the host-owned loop: however it fails (late,
//! spinning, out of range, NaN, wrongly sized, erroring, trapping, hoarding
//! memory), the world gets clamped or safe actions, the episode ends with
//! the reason that names the fault, and another tenant's episode on the
//! same node keeps its rate.

use std::time::Duration;

use sovra_control::{EpisodeError, Pacing, StopHandle, StopReason};
use sovra_runtime::{ControllerSetup, Grants};
use sovra_test_artifacts::{CARTPOLE_PID, ROGUE_CONTROLLER};

use crate::support::{TestRuntime, grants, plan, runtime, tenant};

fn rogue(test: &TestRuntime, mode: &str, from: u32, seconds: f64) -> sovra_control::Episode {
    let from = from.to_string();
    let plan = plan(
        "cartpole",
        100,
        seconds,
        Pacing::Lockstep,
        &[("mode", mode), ("from", &from)],
    );
    test.episode(
        ROGUE_CONTROLLER,
        "mallory",
        grants(false, false, &["digits"]),
        &plan,
    )
    .unwrap()
}

#[test]
fn a_controller_that_stalls_once_misses_only_the_ticks_it_stalled_through() {
    // Lockstep: the next tick starts as soon as one is given up on, so
    // each must still give the controller (busy with the abandoned tick)
    // its whole deadline, not count a miss at once.
    let test = runtime();
    let episode = rogue(&test, "stall", 20, 1.0);
    let summary = &episode.summary;
    assert_eq!(summary.stop, StopReason::Completed, "{summary:#?}");
    assert_eq!(summary.ticks, 100, "{summary:#?}");
    assert!(
        (1..=3).contains(&summary.missed_ticks),
        "a 25 ms stall spans two or three 10 ms deadlines: {summary:#?}"
    );
    assert_eq!(summary.safe_actions, summary.missed_ticks, "{summary:#?}");
}

#[test]
fn a_spinning_controller_misses_its_deadlines_while_a_neighbour_keeps_its_rate() {
    let test = runtime();
    let neighbour = {
        let runtime = test.runtime.clone();
        let agent = test.load(CARTPOLE_PID);
        std::thread::spawn(move || {
            let plan = plan("cartpole", 100, 2.0, Pacing::RealTime, &[]);
            let setup = ControllerSetup::new(tenant("acme"), Grants::none());
            sovra_control::run_sandboxed(
                &runtime,
                agent,
                setup,
                &sovra_control::new_episode_id(),
                &plan,
                &StopHandle::default(),
                &mut |_| {},
            )
            .unwrap()
        })
    };
    let mut plan = plan(
        "cartpole",
        100,
        2.0,
        Pacing::RealTime,
        &[("mode", "spin"), ("from", "20")],
    );
    plan.spec.miss_limit = 10;
    let episode = test
        .episode(
            ROGUE_CONTROLLER,
            "mallory",
            grants(false, false, &["digits"]),
            &plan,
        )
        .unwrap();
    let summary = &episode.summary;
    assert_eq!(
        summary.stop,
        StopReason::DeadlineMissed { consecutive: 10 },
        "{summary:#?}"
    );
    assert_eq!(summary.ticks, 30 + summary.late_ticks, "{summary:#?}");
    assert_eq!((summary.missed_ticks, summary.safe_actions), (10, 10));
    // Ten ticks of 10 ms, give or take the spin's interruption: the loop
    // never waited for the guest.
    assert!(summary.wall_time_s < 0.5, "{summary:#?}");

    let neighbour = neighbour.join().unwrap().summary;
    assert_eq!(neighbour.stop, StopReason::Completed, "{neighbour:#?}");
    assert_eq!(neighbour.ticks, 200);
    assert_eq!(neighbour.missed_ticks, 0, "{neighbour:#?}");
    // Its ticks started on time (a generous bound for a shared CI machine;
    // the benchmark measures the real figure).
    assert!(neighbour.jitter.p99_us < 2_000, "{neighbour:#?}");
}

#[test]
fn out_of_range_actions_are_clamped_and_counted() {
    let test = runtime();
    let episode = rogue(&test, "out-of-range", 40, 0.5);
    let summary = &episode.summary;
    assert_eq!(summary.stop, StopReason::Completed, "{summary:#?}");
    assert_eq!(summary.clamped_actions, 10);
    assert_eq!(summary.safe_actions, 0);

    // Operator limits narrower than the motor's: every action is within them.
    let mut plan = plan(
        "cartpole",
        100,
        0.5,
        Pacing::Lockstep,
        &[("mode", "out-of-range")],
    );
    plan.spec.limits = vec![("force".into(), -5.0, 5.0)];
    plan.spec.telemetry_every = 1;
    let mut actions = Vec::new();
    let setup = ControllerSetup::new(tenant("mallory"), Grants::none());
    let episode = sovra_control::run_sandboxed(
        &test.runtime,
        test.load(ROGUE_CONTROLLER),
        setup,
        &sovra_control::new_episode_id(),
        &plan,
        &StopHandle::default(),
        &mut |sample| actions.push(sample.action[0]),
    );
    // The rogue asks for the `cartpole-policy` model: not granted.
    assert!(
        matches!(episode, Err(EpisodeError::Controller(_))),
        "{episode:?}"
    );
    let setup = ControllerSetup::new(tenant("mallory"), grants(false, false, &["digits"]));
    let episode = sovra_control::run_sandboxed(
        &test.runtime,
        test.load(ROGUE_CONTROLLER),
        setup,
        &sovra_control::new_episode_id(),
        &plan,
        &StopHandle::default(),
        &mut |sample| actions.push(sample.action[0]),
    )
    .unwrap();
    assert_eq!(episode.summary.clamped_actions, 50);
    assert_eq!(actions.len(), 50);
    assert!(actions.iter().all(|a| a.abs() == 5.0), "{actions:?}");
}

#[test]
fn unusable_actions_get_safe_actions_and_stop_the_episode() {
    let test = runtime();
    for (mode, detail) in [("nan", "NaN"), ("infinite", "inf"), ("short", "0 values")] {
        let episode = rogue(&test, mode, 5, 1.0);
        let summary = &episode.summary;
        match &summary.stop {
            StopReason::InvalidAction {
                consecutive: 10,
                detail: text,
            } => assert!(text.contains(detail), "{mode}: {text}"),
            other => panic!("{mode}: {other:?}"),
        }
        assert_eq!(summary.ticks, 15, "{mode}");
        assert_eq!(
            (summary.invalid_actions, summary.safe_actions),
            (10, 10),
            "{mode}"
        );
    }
}

#[test]
fn errors_traps_and_memory_bombs_end_the_episode_with_their_kind() {
    let test = runtime();
    let episode = rogue(&test, "error", 3, 1.0);
    match &episode.summary.stop {
        StopReason::GuestError {
            consecutive: 10,
            error,
        } => {
            assert!(error.contains("gives up"), "{error}")
        }
        other => panic!("{other:?}"),
    }
    // A model the tenant did not grant: denied every tick.
    let episode = rogue(&test, "model", 0, 1.0);
    match &episode.summary.stop {
        StopReason::GuestError { error, .. } => assert!(error.contains("allowlist"), "{error}"),
        other => panic!("{other:?}"),
    }
    for (mode, fault) in [("trap", "trap"), ("memory", "memory-limit")] {
        let episode = rogue(&test, mode, 3, 1.0);
        let summary = &episode.summary;
        match &summary.stop {
            StopReason::GuestFault { fault: kind, .. } => assert_eq!(kind, fault, "{mode}"),
            other => panic!("{mode}: {other:?}"),
        }
        // Its faulting tick got the safe action; the world went on no further.
        assert_eq!((summary.ticks, summary.safe_actions), (4, 1), "{mode}");
    }
}

#[test]
fn an_emergency_stop_applies_the_safe_action_and_ends_the_episode() {
    let test = runtime();
    let episode = rogue(&test, "estop", 7, 1.0);
    let summary = &episode.summary;
    assert_eq!(
        summary.stop,
        StopReason::EmergencyStop {
            reason: "the rogue pulls the cord".into()
        }
    );
    assert_eq!(
        (summary.ticks, summary.safe_actions, summary.emergency_stops),
        (8, 1, 1)
    );
}

#[test]
fn an_init_that_never_returns_is_interrupted() {
    let test = runtime();
    let episode = rogue(&test, "init-spin", 0, 1.0);
    match &episode.summary.stop {
        StopReason::InitFailed { error } => assert!(error.contains("timed out"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(episode.summary.ticks, 0);
}

#[test]
fn a_running_episode_stops_when_asked() {
    let test = runtime();
    let stop = StopHandle::default();
    let stopper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            stop.stop();
        })
    };
    let plan = plan("cartpole", 100, 60.0, Pacing::RealTime, &[]);
    let setup = ControllerSetup::new(tenant("mallory"), grants(false, false, &["digits"]));
    let episode = sovra_control::run_sandboxed(
        &test.runtime,
        test.load(ROGUE_CONTROLLER),
        setup,
        &sovra_control::new_episode_id(),
        &plan,
        &stop,
        &mut |_| {},
    )
    .unwrap();
    stopper.join().unwrap();
    assert_eq!(episode.summary.stop, StopReason::Stopped);
    assert!(episode.summary.ticks < 100, "{}", episode.summary.ticks);
}

#[test]
fn episode_specs_outside_the_world_or_the_node_are_refused() {
    let test = runtime();
    let refused = |edit: &dyn Fn(&mut sovra_control::EpisodePlan)| {
        let mut plan = plan("cartpole", 100, 1.0, Pacing::Lockstep, &[]);
        edit(&mut plan);
        test.episode(
            ROGUE_CONTROLLER,
            "mallory",
            grants(false, false, &["digits"]),
            &plan,
        )
        .unwrap_err()
        .to_string()
    };
    let message = refused(&|p| p.spec.limits = vec![("thrust".into(), -1.0, 1.0)]);
    assert!(
        message.contains("no actuator `thrust`") && message.contains("force"),
        "{message}"
    );
    let message = refused(&|p| p.spec.limits = vec![("force".into(), -50.0, 50.0)]);
    assert!(message.contains("exceed"), "{message}");
    let message = refused(&|p| p.spec.limits = vec![("force".into(), 1.0, f32::NAN)]);
    assert!(message.contains("finite"), "{message}");
    let message = refused(&|p| p.spec.rate_hz = 100_000);
    assert!(message.contains("rate"), "{message}");
    let message = refused(&|p| p.spec.miss_limit = 0);
    assert!(message.contains("miss limit"), "{message}");
    let message = refused(&|p| p.world = "moon-lander".into());
    assert!(
        message.contains("moon-lander") && message.contains("cartpole"),
        "{message}"
    );
}
