//! Controllers: components that drive a world (a robot, a machine, a
//! simulator) at a fixed rate. The host owns the clock: it calls
//! [`Control::init`] once, then [`Control::step`] every tick with what the
//! world's sensors read, and clamps the actions to the operator's limits.
//!
//! ```rust,ignore
//! use sovra_sdk::control::{Control, EpisodeConfig, Observation};
//! use sovra_sdk::Error;
//!
//! struct Hold { gain: f32 }
//!
//! impl Control for Hold {
//!     fn init(_config: EpisodeConfig) -> Result<Self, Error> {
//!         Ok(Hold { gain: 10.0 })
//!     }
//!     fn step(&mut self, observation: &Observation) -> Result<Vec<f32>, Error> {
//!         Ok(vec![-self.gain * observation.values[0]])
//!     }
//! }
//!
//! sovra_sdk::export_controller!(Hold);
//! ```
//!
//! with `world = "controller"` in `agent.toml`.

pub use crate::controller_bindings::exports::sovra::agent::control::{
    Actuator, EpisodeConfig, Observation,
};

use crate::Error;

/// A controller's state for one episode.
pub trait Control: Sized + 'static {
    /// Sets the controller up for the episode `config` describes.
    fn init(config: EpisodeConfig) -> Result<Self, Error>;

    /// One tick: one action per actuator, in `config.actuators`' order.
    fn step(&mut self, observation: &Observation) -> Result<Vec<f32>, Error>;
}

/// Asks the host to stop the episode: it applies the world's safe action
/// and ends the episode with `emergency-stop` once this tick is done.
pub fn emergency_stop(reason: &str) {
    crate::controller_bindings::sovra::agent::safety::emergency_stop(reason);
}

impl EpisodeConfig {
    /// The position of the observation channel `name`.
    pub fn observation(&self, name: &str) -> Result<usize, Error> {
        self.observations
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| Error::InvalidInput(format!("the world has no observation `{name}`")))
    }

    /// The value of parameter `key`, if the episode was given one.
    pub fn parameter(&self, key: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.as_str())
    }
}

#[doc(hidden)]
pub mod __private {
    use std::any::Any;
    use std::cell::RefCell;

    pub use crate::controller_bindings::exports::sovra::agent::control::Guest;

    use super::{Control, EpisodeConfig, Observation};
    use crate::Error;

    thread_local! {
        /// The instance `init` built; a component is single-threaded.
        static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    pub fn init<C: Control>(config: EpisodeConfig) -> Result<(), Error> {
        let controller = C::init(config)?;
        STATE.with(|state| *state.borrow_mut() = Some(Box::new(controller)));
        Ok(())
    }

    pub fn step<C: Control>(observation: &Observation) -> Result<Vec<f32>, Error> {
        STATE.with(|state| {
            let mut state = state.borrow_mut();
            let controller = state
                .as_mut()
                .and_then(|c| c.downcast_mut::<C>())
                .ok_or_else(|| Error::Internal("step before init".into()))?;
            controller.step(observation)
        })
    }
}
