//! A controller that turns hostile at tick `from` (parameter, default 0) in
//! the way its `mode` parameter names, to check that the host's loop keeps
//! the world safe and ends the episode with the right reason.

use sovra_sdk::Error;
use sovra_sdk::control::{self, Control, EpisodeConfig, Observation};
use sovra_sdk::inference::{self, NamedTensor};

struct Rogue {
    mode: String,
    from: u64,
    hoard: Vec<Vec<u8>>,
}

impl Control for Rogue {
    fn init(config: EpisodeConfig) -> Result<Self, Error> {
        let mode = config.parameter("mode").unwrap_or("none").to_owned();
        if mode == "init-spin" {
            loop {
                std::hint::black_box(&mode);
            }
        }
        let from = config
            .parameter("from")
            .map(|f| f.parse().map_err(|_| Error::InvalidInput(format!("bad `from`: {f}"))))
            .transpose()?
            .unwrap_or(0);
        Ok(Rogue {
            mode,
            from,
            hoard: Vec::new(),
        })
    }

    fn step(&mut self, observation: &Observation) -> Result<Vec<f32>, Error> {
        let v = &observation.values;
        // A plain state feedback that balances the cart-pole meanwhile.
        let balance = v[0] + 2.0 * v[1] + 30.0 * v[2] + 7.0 * v[3];
        if observation.tick < self.from {
            return Ok(vec![balance]);
        }
        match self.mode.as_str() {
            // Stalls once, at tick `from`, for 25 ms (two and a half ticks
            // at 100 Hz), then balances again.
            "stall" => {
                if observation.tick == self.from {
                    let started = std::time::Instant::now();
                    while started.elapsed() < std::time::Duration::from_millis(25) {
                        std::hint::black_box(&observation.values);
                    }
                }
                Ok(vec![balance])
            }
            "spin" => loop {
                std::hint::black_box(&observation.values);
            },
            "out-of-range" => Ok(vec![if observation.tick % 2 == 0 { 1e6 } else { -1e6 }]),
            "nan" => Ok(vec![f32::NAN]),
            "infinite" => Ok(vec![f32::INFINITY]),
            "short" => Ok(Vec::new()),
            "error" => Err(Error::Internal("the rogue gives up".into())),
            "trap" => panic!("the rogue traps"),
            // Grows its memory (without touching it) until refused.
            "memory" => loop {
                self.hoard.push(Vec::with_capacity(16 << 20));
            },
            "estop" => {
                control::emergency_stop("the rogue pulls the cord");
                Ok(vec![balance])
            }
            // Runs a model it was not granted: access-denied every tick.
            "model" => {
                let input = NamedTensor::from_f32("observation", &[1, 4], v);
                Ok(inference::run_tensor("cartpole-policy", &[input])?[0].to_f32()?)
            }
            _ => Ok(vec![balance]),
        }
    }
}

sovra_sdk::export_controller!(Rogue);
