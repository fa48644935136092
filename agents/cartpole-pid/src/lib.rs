//! A classic controller for the cart-pole: PID on the pole's angle plus PD
//! on the cart's position (the sign of the position terms is the
//! cart-pole's: to come back left, the cart first swings the pole left).
//! Gains come from the episode's parameters (`kp_theta`, `ki_theta`,
//! `kd_theta`, `kp_x`, `kd_x`), with defaults tuned for the simulated
//! cart-pole. The controller stops the episode itself if the pole tilts
//! past `limit_theta` (default 0.6 rad): no feedback brings it back there.

use sovra_sdk::Error;
use sovra_sdk::control::{self, Control, EpisodeConfig, Observation};
use sovra_sdk::log;

struct Pid {
    x: usize,
    x_dot: usize,
    theta: usize,
    theta_dot: usize,
    gains: Gains,
    integral: f32,
    dt: f32,
}

struct Gains {
    kp_theta: f32,
    ki_theta: f32,
    kd_theta: f32,
    kp_x: f32,
    kd_x: f32,
    limit_theta: f32,
}

fn gain(config: &EpisodeConfig, key: &str, default: f32) -> Result<f32, Error> {
    match config.parameter(key) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .ok()
            .filter(|v: &f32| v.is_finite())
            .ok_or_else(|| Error::InvalidInput(format!("parameter `{key}` is not a number: {text}"))),
    }
}

impl Control for Pid {
    fn init(config: EpisodeConfig) -> Result<Self, Error> {
        let gains = Gains {
            kp_theta: gain(&config, "kp_theta", 40.0)?,
            ki_theta: gain(&config, "ki_theta", 0.5)?,
            kd_theta: gain(&config, "kd_theta", 8.0)?,
            kp_x: gain(&config, "kp_x", 1.0)?,
            kd_x: gain(&config, "kd_x", 2.5)?,
            limit_theta: gain(&config, "limit_theta", 0.6)?,
        };
        log::info(&format!(
            "PID on {} at {} Hz",
            config.world_name, config.rate_hz
        ));
        Ok(Pid {
            x: config.observation("x")?,
            x_dot: config.observation("x_dot")?,
            theta: config.observation("theta")?,
            theta_dot: config.observation("theta_dot")?,
            gains,
            integral: 0.0,
            dt: 1.0 / config.rate_hz.max(1) as f32,
        })
    }

    fn step(&mut self, observation: &Observation) -> Result<Vec<f32>, Error> {
        let v = &observation.values;
        let (x, x_dot, theta, theta_dot) = (v[self.x], v[self.x_dot], v[self.theta], v[self.theta_dot]);
        let g = &self.gains;
        if theta.abs() > g.limit_theta {
            control::emergency_stop(&format!("the pole tilts {theta:.2} rad: beyond recovery"));
            return Ok(vec![0.0]);
        }
        self.integral = (self.integral + theta * self.dt).clamp(-1.0, 1.0);
        let force = g.kp_theta * theta + g.ki_theta * self.integral + g.kd_theta * theta_dot
            + g.kp_x * x
            + g.kd_x * x_dot;
        Ok(vec![force])
    }
}

sovra_sdk::export_controller!(Pid);
