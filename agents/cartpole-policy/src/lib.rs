//! A policy-network controller: every tick, the cart-pole's observation goes
//! through the `cartpole-policy` ONNX model on the host, and its output is
//! the force. It checks at `init` that the model is there and takes the
//! world's four observations, so a missing grant fails the episode before
//! the first tick.

use sovra_sdk::Error;
use sovra_sdk::control::{Control, EpisodeConfig, Observation};
use sovra_sdk::inference::{self, NamedTensor};

const MODEL: &str = "cartpole-policy";
const CHANNELS: [&str; 4] = ["x", "x_dot", "theta", "theta_dot"];

struct Policy {
    /// Where each of the model's inputs is in the observation.
    channels: [usize; 4],
    input: Vec<f32>,
}

impl Control for Policy {
    fn init(config: EpisodeConfig) -> Result<Self, Error> {
        if !inference::list_models().iter().any(|m| m.name == MODEL) {
            return Err(Error::AccessDenied(format!(
                "the tenant has not granted the `{MODEL}` model"
            )));
        }
        let mut channels = [0; 4];
        for (slot, name) in channels.iter_mut().zip(CHANNELS) {
            *slot = config.observation(name)?;
        }
        if config.actuators.len() != 1 {
            return Err(Error::InvalidInput("the policy drives one actuator".into()));
        }
        Ok(Policy {
            channels,
            input: vec![0.0; 4],
        })
    }

    fn step(&mut self, observation: &Observation) -> Result<Vec<f32>, Error> {
        for (value, &channel) in self.input.iter_mut().zip(&self.channels) {
            *value = observation.values[channel];
        }
        let input = NamedTensor::from_f32("observation", &[1, 4], &self.input);
        let outputs = inference::run_tensor(MODEL, &[input])?;
        let force = outputs
            .first()
            .ok_or_else(|| Error::Internal("the policy gave no output".into()))?
            .to_f32()?;
        Ok(force)
    }
}

sovra_sdk::export_controller!(Policy);
