//! `sovra-control`: physical AI on sovra. A controller (a Wasm component of
//! the `controller` world, in its sandbox) drives a [`World`] in episodes
//! whose clock the host owns: a fixed tick rate, a deadline per tick,
//! actions clamped to the actuators' limits, the world's safe action
//! whenever the controller's cannot be used, and a typed reason when the
//! episode ends.
//!
//! Guide to the modules: [`world`] is what a controller drives and
//! [`sim`] the simulated worlds (rapier2d); [`episode`] is the loop;
//! [`driver`] is how the loop reaches a controller (sandboxed on a thread
//! of its own, or native for comparison); [`pacing`] is the clock and
//! [`stats`] the tick-time histograms; [`session`] runs one sandboxed
//! episode from start to summary.

pub mod driver;
pub mod episode;
pub mod metrics;
pub mod pacing;
pub mod session;
pub mod sim;
pub mod stats;
pub mod world;

pub use driver::{ControllerReport, Driver, NativeDriver, SandboxedDriver};
pub use episode::{
    EpisodeSpec, EpisodeSummary, SpecError, StopHandle, StopReason, TelemetrySample, TickTimes,
};
pub use metrics::EpisodeMetrics;
pub use pacing::Pacing;
pub use session::{Episode, EpisodeError, EpisodePlan, new_episode_id, run_sandboxed};
pub use world::{Actuator, UnknownWorld, World, WorldOptions, simulated};
