//! The second world: the two-link arm reaches each target in turn under
//! the inverse-kinematics PD controller.

use sovra_control::{Pacing, StopReason};
use sovra_runtime::Grants;
use sovra_test_artifacts::ARM_REACH;

use crate::support::{plan, runtime};

#[test]
fn the_arm_reaches_its_targets() {
    let test = runtime();
    let mut plan = plan("arm", 200, 8.0, Pacing::Lockstep, &[]);
    plan.world_options.sensor_noise = 0.001;
    let episode = test
        .episode(ARM_REACH, "acme", Grants::none(), &plan)
        .unwrap();
    let summary = &episode.summary;
    assert_eq!(summary.stop, StopReason::Completed, "{summary:#?}");
    let figure = |name: &str| {
        summary
            .world_report
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
    };
    // Settled on each target for the second half of its two seconds.
    assert!(figure("settled_error_m") < 0.05, "{summary:#?}");
    assert!(figure("mean_error_m") < 0.5, "{summary:#?}");
}
