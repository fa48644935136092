//! Reaching with the two-link arm: each tick, inverse kinematics turns the
//! target into joint angles (elbow down), and a PD loop per joint drives
//! them there. Link lengths and gains come from the episode's parameters
//! (`link1`, `link2`, `kp`, `kd`), with defaults for the simulated arm.

use sovra_sdk::Error;
use sovra_sdk::control::{Control, EpisodeConfig, Observation};

struct Reach {
    channels: [usize; 6],
    link1: f32,
    link2: f32,
    kp: f32,
    kd: f32,
}

fn number(config: &EpisodeConfig, key: &str, default: f32) -> Result<f32, Error> {
    match config.parameter(key) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .ok()
            .filter(|v: &f32| v.is_finite() && *v > 0.0)
            .ok_or_else(|| Error::InvalidInput(format!("parameter `{key}` is not a positive number: {text}"))),
    }
}

/// The angle in (-π, π].
fn wrap(angle: f32) -> f32 {
    let tau = std::f32::consts::TAU;
    let wrapped = angle.rem_euclid(tau);
    if wrapped > std::f32::consts::PI { wrapped - tau } else { wrapped }
}

impl Control for Reach {
    fn init(config: EpisodeConfig) -> Result<Self, Error> {
        let mut channels = [0; 6];
        for (slot, name) in channels
            .iter_mut()
            .zip(["q1", "q2", "q1_dot", "q2_dot", "target_x", "target_y"])
        {
            *slot = config.observation(name)?;
        }
        Ok(Reach {
            channels,
            link1: number(&config, "link1", 1.0)?,
            link2: number(&config, "link2", 0.8)?,
            kp: number(&config, "kp", 30.0)?,
            kd: number(&config, "kd", 8.0)?,
        })
    }

    fn step(&mut self, observation: &Observation) -> Result<Vec<f32>, Error> {
        let [q1, q2, q1_dot, q2_dot, tx, ty] = self.channels.map(|c| observation.values[c]);
        let (l1, l2) = (self.link1, self.link2);
        // The law of cosines gives the elbow; out-of-reach targets are
        // approached as close as the arm stretches.
        let reach = (tx * tx + ty * ty).sqrt().clamp((l1 - l2).abs() + 1e-3, l1 + l2 - 1e-3);
        let cos_elbow = ((reach * reach - l1 * l1 - l2 * l2) / (2.0 * l1 * l2)).clamp(-1.0, 1.0);
        let elbow = -cos_elbow.acos();
        let shoulder = ty.atan2(tx) - (l2 * elbow.sin()).atan2(l1 + l2 * elbow.cos());
        let torque1 = self.kp * wrap(shoulder - q1) - self.kd * q1_dot;
        let torque2 = self.kp * wrap(elbow - q2) - self.kd * q2_dot;
        Ok(vec![torque1, torque2])
    }
}

sovra_sdk::export_controller!(Reach);
