//! What a controller drives: a [`World`] has named observation channels, a
//! set of actuators with physical limits and a safe action, and advances by
//! one tick at a time under the loop's clock. The simulators in
//! [`crate::sim`] implement it; a robot's driver would too.

use std::time::Duration;

use serde::Serialize;

/// One actuator: the range its commands physically take, and the command
/// applied when the controller's action cannot be used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Actuator {
    pub name: &'static str,
    pub min: f32,
    pub max: f32,
}

/// A world a controller drives, one tick at a time.
pub trait World: Send {
    /// Its name, as `--world` takes it.
    fn name(&self) -> &'static str;

    /// Observation channel names, in the order [`World::observe`] fills them.
    fn observations(&self) -> &'static [&'static str];

    /// Actuators, in the order [`World::advance`] takes commands.
    fn actuators(&self) -> &'static [Actuator];

    /// Reads the sensors (noise included) into `values`, one per channel.
    fn observe(&mut self, values: &mut [f32]);

    /// The command that keeps the world safe now (zero force, brakes on),
    /// used on a missed tick, a fault or an emergency stop; one per
    /// actuator, within its limits.
    fn safe_action(&self, action: &mut [f32]);

    /// Applies `action` (already clamped) for `dt`, and advances the world.
    fn advance(&mut self, action: &[f32], dt: Duration);

    /// Why the world cannot go on (the pole fell, a joint overspeeds), if so.
    fn failure(&self) -> Option<String>;

    /// Figures of the run so far, for the episode summary.
    fn report(&self) -> Vec<(&'static str, f64)>;
}

/// How a world is set up for one episode.
#[derive(Debug, Clone, PartialEq)]
pub struct WorldOptions {
    /// Standard deviation of the Gaussian noise added to every sensor
    /// reading, in each channel's unit.
    pub sensor_noise: f32,
    /// Seed of the noise and of any random start.
    pub seed: u64,
}

impl Default for WorldOptions {
    fn default() -> Self {
        WorldOptions {
            sensor_noise: 0.0,
            seed: 1,
        }
    }
}

/// The worlds this build simulates, by name.
pub const WORLDS: &[&str] = &["cartpole", "arm"];

/// An unknown world name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no world named `{0}` (this node simulates: {list})", list = WORLDS.join(", "))]
pub struct UnknownWorld(pub String);

/// The simulated world called `name`.
pub fn simulated(name: &str, options: &WorldOptions) -> Result<Box<dyn World>, UnknownWorld> {
    match name {
        "cartpole" => Ok(Box::new(crate::sim::CartPole::new(options))),
        "arm" => Ok(Box::new(crate::sim::TwoLinkArm::new(options))),
        other => Err(UnknownWorld(other.to_owned())),
    }
}
