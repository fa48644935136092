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

/// How far below the largest logit, in units of the temperature, a token
/// may be to be sorted for top-k or top-p at first (a weight of 1/64 of
/// the largest); each time those tokens fall short, the gap grows by
/// [`GAP_STEP`], and after [`MAX_WIDENINGS`] takes in every token. A
/// language model's next-token distribution has its nucleus within it: a
/// sort of tens of tokens, not of the whole vocabulary (a millisecond for
/// SmolLM2's 49,152).
const FIRST_GAP: f32 = 4.158_883; // ln 64
const GAP_STEP: f32 = 2.0;
const MAX_WIDENINGS: i32 = 6;

/// Tokens summed together when drawing from the whole distribution.
const WALK_CHUNK: usize = 512;

/// Per-sequence sampler state.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: Sampling,
    rng: SplitMix64,
    /// Every token's weight, `e^((logit - max) / temperature)`, where
    /// the sum of all of them is needed.
    weights: Vec<f32>,
    /// The sums of the weights of each chunk of tokens, drawing from all.
    chunk_sums: Vec<f32>,
    /// (token, logit and then weight) of the tokens sorted for top-k or
    /// top-p.
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    /// `fallback_seed` is used when the request names none.
    pub fn new(params: Sampling, fallback_seed: u64) -> Self {
        let seed = params.seed.unwrap_or(fallback_seed);
        Sampler {
            params,
            rng: SplitMix64(seed),
            weights: Vec::new(),
            chunk_sums: Vec::new(),
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
        let max = largest(logits);
        if max == f32::INFINITY {
            // An infinite logit takes all the probability.
            return logits.iter().position(|&l| l == max).unwrap_or(0) as u32;
        }
        if !max.is_finite() {
            // Nothing but -inf and NaN: no probability to share.
            return argmax(logits);
        }
        let temperature = self.params.temperature;
        // A token's weight: its probability times the sum of all weights
        // (0 for a NaN logit, which no draw should land on).
        let weight = |l: f32| {
            let w = crate::cpu::exp((l - max) / temperature);
            if w.is_nan() { 0.0 } else { w }
        };
        let vocab = logits.len();
        let top_k = match self.params.top_k as usize {
            0 => vocab,
            k => k.min(vocab),
        };
        let top_p = self.params.top_p;
        if top_k == vocab && top_p >= 1.0 {
            return self.sample_all(logits, weight);
        }
        // Only the tokens of highest logits are sorted: those at most
        // `gap` below the largest, the gap widened until they hold the top
        // k, or reach top-p. They are exactly the head of the whole
        // vocabulary sorted (a floor keeps every tie), so the choice is the
        // one a full sort allows.
        let total_weight = if top_k == vocab {
            self.fill_weights(logits, weight);
            crate::cpu::lane_sum(&self.weights, |w| w)
        } else {
            0.0
        };
        // Highest logit first; the lower id first on ties.
        let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let candidates = &mut self.candidates;
        let mut kept;
        let mut widenings = 0;
        loop {
            let last = widenings == MAX_WIDENINGS;
            let floor = if last {
                f32::NEG_INFINITY
            } else {
                max - FIRST_GAP * temperature * GAP_STEP.powi(widenings)
            };
            widenings += 1;
            candidates.clear();
            candidates.extend(
                logits
                    .iter()
                    .enumerate()
                    .filter(|&(_, &l)| l >= floor)
                    .map(|(i, &l)| (i as u32, l)),
            );
            if top_k < vocab {
                if candidates.len() < top_k && !last {
                    continue;
                }
                if top_k < candidates.len() {
                    candidates.select_nth_unstable_by(top_k - 1, order);
                    candidates.truncate(top_k);
                }
            }
            candidates.sort_unstable_by(order);
            for c in candidates.iter_mut() {
                c.1 = weight(c.1);
            }
            let total = if top_k < vocab {
                candidates.iter().map(|c| c.1).sum()
            } else {
                total_weight
            };
            kept = candidates.len();
            let mut reached = top_p >= 1.0;
            if top_p < 1.0 {
                let mut cumulative = 0.0;
                for (i, c) in candidates.iter().enumerate() {
                    cumulative += c.1 / total;
                    if cumulative >= top_p {
                        kept = i + 1;
                        reached = true;
                        break;
                    }
                }
            }
            // Top-p not reached by these tokens: the rest of the
            // vocabulary may be needed too.
            if reached || top_k < vocab || last {
                break;
            }
        }
        let kept = &candidates[..kept];
        let mass: f32 = kept.iter().map(|c| c.1).sum();
        // In (0, mass]: a draw of 0 would take the first token whatever
        // its weight.
        let mut target = (1.0 - self.rng.next_f32()) * mass;
        for c in kept {
            target -= c.1;
            if target <= 0.0 {
                return c.0;
            }
        }
        kept.last().map_or_else(|| argmax(logits), |c| c.0)
    }

    /// Every token's weight into `self.weights` (a plain loop over the
    /// logits, which vectorizes).
    fn fill_weights(&mut self, logits: &[f32], weight: impl Fn(f32) -> f32) {
        self.weights.resize(logits.len(), 0.0);
        for (w, &l) in self.weights.iter_mut().zip(logits) {
            *w = weight(l);
        }
    }

    /// A draw from the whole distribution: no order needed. The weights are
    /// summed in chunks, so that finding where the draw lands walks the
    /// chunks and then one chunk, not every token.
    fn sample_all(&mut self, logits: &[f32], weight: impl Fn(f32) -> f32) -> u32 {
        self.fill_weights(logits, weight);
        let weights = &self.weights;
        let sums = &mut self.chunk_sums;
        sums.clear();
        sums.extend(
            weights
                .chunks(WALK_CHUNK)
                .map(|chunk| crate::cpu::lane_sum(chunk, |w| w)),
        );
        let total: f32 = sums.iter().sum();
        // In (0, total]: a draw of 0 would take token 0 whatever its weight.
        let mut target = (1.0 - self.rng.next_f32()) * total;
        let mut start = sums.len();
        for (c, &sum) in sums.iter().enumerate() {
            if target <= sum {
                start = c * WALK_CHUNK;
                break;
            }
            target -= sum;
        }
        // From the chunk the draw lands in on (a chunk's sum and its
        // tokens' running sum round apart, so the walk may run on).
        for (i, &w) in weights.iter().enumerate().skip(start) {
            target -= w;
            if target <= 0.0 {
                return i as u32;
            }
        }
        // Rounding left a sliver past the last token.
        argmax(logits)
    }
}

/// The largest of `values` (NaNs skipped), in eight lanes so that it
/// vectorizes (`f32::max` in a fold does not).
fn largest(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = values.chunks_exact(8);
    let mut max = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    for chunk in chunks {
        for l in 0..8 {
            if chunk[l] > lanes[l] {
                lanes[l] = chunk[l];
            }
        }
    }
    for lane in lanes {
        if lane > max {
            max = lane;
        }
    }
    max
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

    /// Logits like a language model's over a large vocabulary: a few
    /// strong candidates over a long, low tail.
    fn vocabulary_logits(vocab: usize, seed: u64) -> Vec<f32> {
        let mut random = SplitMix64(seed);
        (0..vocab)
            .map(|_| {
                let u = random.next_f32();
                12.0 * u.powi(12) - 3.0 + random.next_f32()
            })
            .collect()
    }

    /// The tokens top-k and top-p allow, by sorting the whole vocabulary
    /// (the definition the sampler's shortcut must keep to).
    fn allowed(logits: &[f32], temperature: f32, top_k: usize, top_p: f32) -> Vec<u32> {
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        if top_k > 0 {
            order.truncate(top_k);
        }
        let max = logits[order[0] as usize];
        let weights: Vec<f64> = order
            .iter()
            .map(|&t| (((logits[t as usize] - max) / temperature) as f64).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut cumulative = 0.0;
        for (i, w) in weights.iter().enumerate() {
            cumulative += w / total;
            if cumulative >= top_p as f64 {
                order.truncate(i + 1);
                break;
            }
        }
        order
    }

    fn draws(params: Sampling, logits: &[f32], n: usize) -> Vec<u32> {
        let mut sampler = Sampler::new(params, 3);
        (0..n)
            .map(|_| sampler.sample(&mut logits.to_vec(), &[]))
            .collect()
    }

    #[test]
    fn draws_follow_the_softmax_of_the_logits() {
        let logits = [2.0f32, 1.0, 0.5, 0.0, -1.0, -3.0];
        let temperature = 0.8;
        let n = 40_000;
        let params = Sampling {
            temperature,
            seed: Some(11),
            ..Sampling::default()
        };
        let mut counts = [0usize; 6];
        for t in draws(params, &logits, n) {
            counts[t as usize] += 1;
        }
        let weights: Vec<f64> = logits
            .iter()
            .map(|&l| ((l - 2.0) as f64 / temperature as f64).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        for (i, (&count, w)) in counts.iter().zip(&weights).enumerate() {
            let expected = w / total;
            let seen = count as f64 / n as f64;
            // Five standard deviations of a binomial share.
            let spread = 5.0 * (expected * (1.0 - expected) / n as f64).sqrt();
            assert!(
                (seen - expected).abs() <= spread,
                "token {i}: drawn {seen:.4}, softmax {expected:.4}"
            );
        }
    }

    #[test]
    fn top_p_and_top_k_allow_exactly_what_a_full_sort_allows() {
        for (seed, top_k, top_p) in [
            (1, 0, 0.9),
            (2, 0, 0.5),
            (3, 40, 1.0),
            (4, 40, 0.9),
            (5, 3, 0.99),
        ] {
            let logits = vocabulary_logits(49_152, seed);
            let temperature = 0.7;
            let allowed = allowed(&logits, temperature, top_k as usize, top_p);
            let params = Sampling {
                temperature,
                top_k,
                top_p,
                seed: Some(seed),
                ..Sampling::default()
            };
            let drawn: std::collections::BTreeSet<u32> =
                draws(params, &logits, 3_000).into_iter().collect();
            assert!(
                drawn.iter().all(|t| allowed.contains(t)),
                "seed {seed}: drew outside the {} allowed tokens",
                allowed.len()
            );
            // Small nuclei are drawn in full.
            if allowed.len() <= 20 {
                assert_eq!(
                    drawn.len(),
                    allowed.len(),
                    "seed {seed}: {allowed:?} vs {drawn:?}"
                );
            }
        }
    }

    #[test]
    fn a_nucleus_past_the_first_gap_widens_the_sort() {
        // Logits falling evenly by 0.02: the first gap (ln 64 below the
        // top) holds 208 tokens and 98.4% of the weight; top-p 0.995 needs
        // about 265.
        let logits: Vec<f32> = (0..1000).map(|i| -0.02 * i as f32).collect();
        let allowed = allowed(&logits, 1.0, 0, 0.995);
        assert!(allowed.len() > 250, "{}", allowed.len());
        let params = Sampling {
            temperature: 1.0,
            top_p: 0.995,
            seed: Some(5),
            ..Sampling::default()
        };
        let drawn = draws(params, &logits, 20_000);
        assert!(drawn.iter().all(|t| allowed.contains(t)));
        assert!(
            drawn.iter().any(|&t| t > 208),
            "never drew past the first gap"
        );
    }

    #[test]
    fn draws_across_chunks_follow_the_softmax() {
        // Heavy tokens in four different chunks of the walk.
        let mut logits = vec![-8.0f32; 2048];
        for (i, l) in [(100, 3.0), (700, 2.0), (1500, 1.0), (2047, 0.5)] {
            logits[i] = l;
        }
        let n = 40_000;
        let params = Sampling {
            temperature: 1.0,
            seed: Some(3),
            ..Sampling::default()
        };
        let drawn = draws(params, &logits, n);
        let total: f64 = logits.iter().map(|&l| (l as f64 - 3.0).exp()).sum();
        for i in [100, 700, 1500, 2047] {
            let expected = (logits[i] as f64 - 3.0).exp() / total;
            let seen = drawn.iter().filter(|&&t| t == i as u32).count() as f64 / n as f64;
            let spread = 5.0 * (expected * (1.0 - expected) / n as f64).sqrt();
            assert!(
                (seen - expected).abs() <= spread,
                "token {i}: {seen:.4} vs {expected:.4}"
            );
        }
    }

    #[test]
    fn infinite_and_nan_logits_give_a_token_not_a_panic() {
        // A repeat penalty near 0 can push a logit to +inf.
        let mut logits = vocabulary_logits(1000, 9);
        logits[7] = f32::INFINITY;
        logits[8] = f32::NAN;
        for (top_k, top_p) in [(0, 1.0), (0, 0.9), (2, 1.0), (2, 0.9)] {
            let params = Sampling {
                temperature: 0.7,
                top_k,
                top_p,
                seed: Some(1),
                ..Sampling::default()
            };
            assert!(draws(params, &logits, 50).iter().all(|&t| t == 7));
        }
        // A NaN logit is never drawn.
        let mut logits = vec![0.0f32; 600];
        logits[3] = f32::NAN;
        for top_p in [1.0, 0.9] {
            let params = Sampling {
                temperature: 1.0,
                top_p,
                seed: Some(2),
                ..Sampling::default()
            };
            assert!(!draws(params, &logits, 5_000).contains(&3));
        }
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
