//! Element-wise operations of a llama layer.

use rayon::prelude::*;

use crate::model::RopeStyle;

/// Elements of one parallel task of an element-wise operation: large enough
/// that a task outweighs handing it to another thread.
const ELEMENTS_PER_TASK: usize = 16 * 1024;

/// `x ← x / rms(x) * weight`.
pub fn rms_norm(x: &mut [f32], weight: &[f32], eps: f32) {
    let mean_square = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let scale = 1.0 / (mean_square + eps).sqrt();
    for (v, w) in x.iter_mut().zip(weight) {
        *v *= scale * w;
    }
}

/// The rotation frequencies of one head: `base^(-2i/head_dim)`.
pub fn rope_frequencies(head_dim: usize, base: f32) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| base.powf(-2.0 * i as f32 / head_dim as f32))
        .collect()
}

/// Rotates each head of `x` (heads × `head_dim`) by position `pos`.
pub fn rope(x: &mut [f32], head_dim: usize, pos: usize, frequencies: &[f32], style: RopeStyle) {
    let half = head_dim / 2;
    let angles: Vec<(f32, f32)> = frequencies
        .iter()
        .map(|f| (pos as f32 * f).sin_cos())
        .collect();
    for head in x.chunks_exact_mut(head_dim) {
        for (i, &(sin, cos)) in angles.iter().enumerate().take(half) {
            let (a, b) = match style {
                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                RopeStyle::Halves => (i, i + half),
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * cos - x1 * sin;
            head[b] = x0 * sin + x1 * cos;
        }
    }
}

/// Dot product with eight independent accumulators, so it vectorizes.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The sum of `f(v)` over `values`, in eight independent lanes, so that
/// it vectorizes (one running total is a chain of dependent additions).
#[inline]
pub fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = values.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for chunk in chunks {
        for l in 0..8 {
            lanes[l] += f(chunk[l]);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `e^x` within 2 ulp over the whole `f32` range (f32's least normal,
/// about 1.2e-38, below -87.3; infinity above 88.7), without branches,
/// calls or conversions to integers, so loops over it vectorize: the
/// argument is split as `x = n·ln2 + r` with `|r| ≤ ln2/2` (Cody-Waite, two
/// parts of ln2), `e^r` comes from a degree-6 polynomial (Cephes `expf`) and
/// `2^n` is put straight into the exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.336_54, 88.722_83);
    // Rounded to the nearest integer by adding and taking away 1.5·2²³
    // (exact for |x·log2 e| < 2²²): `f32::round` is a call to libm's
    // `roundf` on baseline x86-64, which keeps loops from vectorizing.
    const ROUNDING: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + ROUNDING) - ROUNDING;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // n is in -126..=128, so n + 127 is a biased exponent in 1..=255
    // (255 is infinity: 2^128 overflows as expf does). Adding 2²³ puts it in
    // the low mantissa bits exactly; `n as i32` would be a saturating
    // conversion, scalar on baseline x86-64.
    const TWO_TO_23: f32 = 8_388_608.0;
    let biased = (n + (TWO_TO_23 + 127.0)).to_bits() & 0xFF;
    er * f32::from_bits(biased << 23)
}

/// In-place softmax.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for v in x.iter_mut() {
        *v = exp(*v - max);
    }
    let total: f32 = x.iter().sum();
    let inverse = 1.0 / total;
    for v in x.iter_mut() {
        *v *= inverse;
    }
}

/// `gate ← silu(gate) * up`, spread over the threads when it is large
/// (a whole prompt's feed-forward activations).
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    let apply = |(g, u): (&mut [f32], &[f32])| {
        for (g, u) in g.iter_mut().zip(u) {
            *g = *g / (1.0 + exp(-*g)) * u;
        }
    };
    if gate.len() <= ELEMENTS_PER_TASK {
        apply((gate, up));
    } else {
        gate.par_chunks_mut(ELEMENTS_PER_TASK)
            .zip(up.par_chunks(ELEMENTS_PER_TASK))
            .for_each(apply);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_the_standard_library() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x), x.exp());
            let ulp = got.to_bits().abs_diff(want.to_bits());
            assert!(ulp <= 2, "exp({x}) = {got}, std says {want} ({ulp} ulp)");
            x += 0.0137;
        }
        assert!(exp(-1000.0) >= 0.0 && exp(-1000.0) < 1e-37);
        assert_eq!(exp(1000.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(88.8), f32::INFINITY);
        assert!(exp(f32::NEG_INFINITY) < 1e-37);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
    }
}
