//! Simulated worlds on rapier2d: what controllers are developed and tested
//! against before they drive a machine.

mod arm;
mod cartpole;
mod noise;

pub use arm::TwoLinkArm;
pub use cartpole::CartPole;
pub use noise::SensorNoise;

use std::time::Duration;

/// The longest physics step: a slower control rate takes several.
/// Stops: a 10 Hz episode integrating the pole in 100 ms steps.
const MAX_PHYSICS_STEP: Duration = Duration::from_millis(2);

/// Physics steps and their length for one tick of `dt`.
fn substeps(dt: Duration) -> (u32, f32) {
    let steps = dt.as_nanos().div_ceil(MAX_PHYSICS_STEP.as_nanos()).max(1) as u32;
    (steps, dt.as_secs_f32() / steps as f32)
}
