//! Seeded Gaussian sensor noise: the same seed gives the same episode.

/// A small deterministic generator (xorshift64*) with Box-Muller normals.
#[derive(Debug, Clone)]
pub struct SensorNoise {
    state: u64,
    std: f32,
    spare: Option<f32>,
}

impl SensorNoise {
    pub fn new(seed: u64, std: f32) -> Self {
        SensorNoise {
            // xorshift must not start at zero.
            state: seed ^ 0x9E37_79B9_7F4A_7C15 | 1,
            std: if std.is_finite() { std.max(0.0) } else { 0.0 },
            spare: None,
        }
    }

    /// `value` as a sensor reads it.
    pub fn read(&mut self, value: f32) -> f32 {
        if self.std == 0.0 {
            return value;
        }
        value + self.std * self.normal()
    }

    fn uniform(&mut self) -> f32 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let bits = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        // In (0, 1]: the logarithm below stays finite.
        (bits as f32 + 1.0) / (1u64 << 24) as f32
    }

    fn normal(&mut self) -> f32 {
        if let Some(spare) = self.spare.take() {
            return spare;
        }
        let radius = (-2.0 * self.uniform().ln()).sqrt();
        let angle = std::f32::consts::TAU * self.uniform();
        self.spare = Some(radius * angle.sin());
        radius * angle.cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_has_the_asked_spread_and_repeats_with_its_seed() {
        let mut noise = SensorNoise::new(7, 0.5);
        let samples: Vec<f32> = (0..20_000).map(|_| noise.read(1.0)).collect();
        let mean = samples.iter().sum::<f32>() / samples.len() as f32;
        let var = samples.iter().map(|s| (s - mean).powi(2)).sum::<f32>() / samples.len() as f32;
        assert!((mean - 1.0).abs() < 0.02, "{mean}");
        assert!((var.sqrt() - 0.5).abs() < 0.02, "{}", var.sqrt());
        let mut again = SensorNoise::new(7, 0.5);
        assert_eq!(again.read(1.0), samples[0]);
        assert_eq!(SensorNoise::new(7, 0.0).read(1.0), 1.0);
    }
}
