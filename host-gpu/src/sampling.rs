//! Choosing the next token from logits: repeat penalty, then greedy or
//! temperature sampling with top-k and top-p, from a seeded generator so the
//! same seed gives the same text.

use crate::Sampling;

/// Recent tokens the repeat penalty looks at.
pub const REPEAT_WINDOW: usize = 64;

/// SplitMix64: small, fast, and reproducible across platforms (the
/// sampler's generator, and the one the checks draw their inputs from).
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Per-sequence sampler state.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: Sampling,
    rng: SplitMix64,
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    /// `fallback_seed` is used when the request names none.
    pub fn new(params: Sampling, fallback_seed: u64) -> Self {
        let seed = params.seed.unwrap_or(fallback_seed);
        Sampler {
            params,
            rng: SplitMix64(seed),
            candidates: Vec::new(),
        }
    }

    /// Whether the choice is the plain arg-max of the logits (greedy, no
    /// repeat penalty), which a device can make without sending them back.
    pub fn is_greedy(&self) -> bool {
        self.params.temperature <= 0.0 && self.params.repeat_penalty == 1.0
    }

    /// Picks the next token. `recent` are the sequence's latest tokens
    /// (prompt and generated), for the repeat penalty.
    pub fn sample(&mut self, logits: &mut [f32], recent: &[u32]) -> u32 {
        let penalty = self.params.repeat_penalty;
        if penalty != 1.0 {
            let start = recent.len().saturating_sub(REPEAT_WINDOW);
            let mut seen = recent[start..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
                }
            }
        }
        if self.params.temperature <= 0.0 {
            return argmax(logits);
        }
        let candidates = &mut self.candidates;
        candidates.clear();
        candidates.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        let top_k = self.params.top_k as usize;
        if top_k > 0 && top_k < candidates.len() {
            candidates.select_nth_unstable_by(top_k - 1, |a, b| b.1.total_cmp(&a.1));
            candidates.truncate(top_k);
        }
        candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        let max = candidates[0].1;
        let mut total = 0.0;
        for c in candidates.iter_mut() {
            c.1 = ((c.1 - max) / self.params.temperature).exp();
            total += c.1;
        }
        let mut kept = candidates.len();
        if self.params.top_p < 1.0 {
            let mut cumulative = 0.0;
            for (i, c) in candidates.iter().enumerate() {
                cumulative += c.1 / total;
                if cumulative >= self.params.top_p {
                    kept = i + 1;
                    break;
                }
            }
        }
        let kept = &candidates[..kept];
        let mass: f32 = kept.iter().map(|c| c.1).sum();
        let mut target = self.rng.next_f32() * mass;
        for c in kept {
            target -= c.1;
            if target <= 0.0 {
                return c.0;
            }
        }
        kept[kept.len() - 1].0
    }
}

/// The greedy choice: the index of the largest logit in `f32::total_cmp`
/// order, the first on ties (what a device's arg-max must give too).
pub fn argmax(logits: &[f32]) -> u32 {
    logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
        .map_or(0, |(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        (0..100).map(|i| (i as f32 * 0.37).sin() * 3.0).collect()
    }

    #[test]
    fn greedy_takes_the_maximum() {
        let mut sampler = Sampler::new(Sampling::default(), 1);
        let l = logits();
        let best = argmax(&l);
        assert_eq!(sampler.sample(&mut l.clone(), &[]), best);
    }

    #[test]
    fn same_seed_same_choices_and_top_k_bounds_them() {
        let params = Sampling {
            temperature: 1.0,
            top_k: 5,
            seed: Some(42),
            ..Sampling::default()
        };
        let mut order: Vec<u32> = (0..100).collect();
        let l = logits();
        order.sort_by(|a, b| l[*b as usize].total_cmp(&l[*a as usize]));
        let top5 = &order[..5];
        let run = || {
            let mut sampler = Sampler::new(params.clone(), 7);
            (0..50)
                .map(|_| sampler.sample(&mut logits(), &[]))
                .collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, run());
        assert!(first.iter().all(|t| top5.contains(t)));
        assert!(
            first
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                > 1
        );
    }

    #[test]
    fn repeat_penalty_discourages_recent_tokens() {
        let mut l = vec![0.0f32; 10];
        l[3] = 2.0;
        l[4] = 1.9;
        let params = Sampling {
            repeat_penalty: 1.5,
            ..Sampling::default()
        };
        assert_eq!(Sampler::new(params, 0).sample(&mut l, &[3]), 4);
    }
}
