//! Dense f32 layers, `y = x · Wᵀ + b`, for the sentence encoders (their
//! weights are f32 in the file).
//!
//! A row at a time, each weight is loaded once per multiply-add and the
//! loads, not the arithmetic, set the pace. Here a register block of
//! [`ROWS`] rows by [`OUTPUTS`] outputs shares every load: each step loads
//! three activation vectors and four weight vectors and does twelve fused
//! multiply-adds (AVX2 and FMA, chosen at run time; a portable version with
//! the same eight lanes otherwise, whose last bits may differ). On either
//! path every output is summed in the same order whatever block it falls
//! in, so a row's result does not depend on which rows it was computed with.

use rayon::prelude::*;

/// Rows of a register block.
const ROWS: usize = 3;
/// Outputs of a register block.
const OUTPUTS: usize = 4;
/// Rows one parallel task takes (sixteen register blocks), so that a task
/// reads the weights once for many rows.
const ROWS_PER_TASK: usize = 16 * ROWS;
/// Lanes of one vector.
const LANES: usize = 8;

/// `x` (`n × inputs`, row-major) times `weight` (`outputs × inputs`)
/// transposed, plus `bias`: `n × outputs`.
pub fn linear(x: &[f32], weight: &[f32], bias: &[f32], inputs: usize) -> Vec<f32> {
    let mut y = Vec::new();
    linear_into(x, weight, bias, inputs, &mut y);
    y
}

/// [`linear`] into `y`, reusing its memory (every value is overwritten).
pub fn linear_into(x: &[f32], weight: &[f32], bias: &[f32], inputs: usize, y: &mut Vec<f32>) {
    let outputs = bias.len();
    assert_eq!(weight.len(), outputs * inputs);
    assert_eq!(x.len() % inputs, 0);
    let n = x.len() / inputs;
    y.resize(n * outputs, 0.0);
    let fast = has_avx2_fma();
    y.par_chunks_mut(ROWS_PER_TASK * outputs)
        .zip(x.par_chunks(ROWS_PER_TASK * inputs))
        .for_each(|(y, x)| {
            let rows = x.len() / inputs;
            for o in (0..outputs).step_by(OUTPUTS) {
                let cols = OUTPUTS.min(outputs - o);
                let w = &weight[o * inputs..(o + cols) * inputs];
                for r in (0..rows).step_by(ROWS) {
                    let count = ROWS.min(rows - r);
                    let xs = &x[r * inputs..(r + count) * inputs];
                    let mut sums = [[0.0f32; OUTPUTS]; ROWS];
                    if fast {
                        // SAFETY: the processor has AVX2 and FMA (checked).
                        #[cfg(target_arch = "x86_64")]
                        unsafe {
                            avx2::block(xs, w, inputs, count, cols, &mut sums)
                        };
                    } else {
                        portable::block(xs, w, inputs, count, cols, &mut sums);
                    }
                    for (i, row) in sums.iter().enumerate().take(count) {
                        let at = (r + i) * outputs + o;
                        for (j, sum) in row.iter().enumerate().take(cols) {
                            y[at + j] = sum + bias[o + j];
                        }
                    }
                }
            }
        });
}

fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The portable block: the same lanes and order as the AVX2 one, without
/// the fused multiply-add.
mod portable {
    use super::{LANES, OUTPUTS, ROWS};

    pub fn block(
        x: &[f32],
        w: &[f32],
        inputs: usize,
        rows: usize,
        cols: usize,
        sums: &mut [[f32; OUTPUTS]; ROWS],
    ) {
        let vectors = inputs / LANES;
        for (i, sums) in sums.iter_mut().enumerate().take(rows) {
            let xr = &x[i * inputs..(i + 1) * inputs];
            for (j, sum) in sums.iter_mut().enumerate().take(cols) {
                let wr = &w[j * inputs..(j + 1) * inputs];
                let mut lanes = [0.0f32; LANES];
                for k in 0..vectors {
                    for (l, lane) in lanes.iter_mut().enumerate() {
                        *lane += xr[k * LANES + l] * wr[k * LANES + l];
                    }
                }
                let mut total = lanes.iter().sum::<f32>();
                for k in vectors * LANES..inputs {
                    total += xr[k] * wr[k];
                }
                *sum = total;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{LANES, OUTPUTS, ROWS};

    /// The sum of the eight lanes.
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        unsafe {
            let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
            let single = _mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1));
            _mm_cvtss_f32(single)
        }
    }

    /// `sums[i][j]` = row `i` of `x` · row `j` of `w`, for `rows` ≤ 3 rows
    /// and `cols` ≤ 4 outputs.
    ///
    /// # Safety
    /// The processor must have AVX2 and FMA (the slice lengths are checked).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn block(
        x: &[f32],
        w: &[f32],
        inputs: usize,
        rows: usize,
        cols: usize,
        sums: &mut [[f32; OUTPUTS]; ROWS],
    ) {
        // The loads below read R rows of `x` and C of `w`, `inputs` each.
        assert!(rows <= ROWS && cols <= OUTPUTS);
        assert!(x.len() >= rows * inputs && w.len() >= cols * inputs);
        // One instance per shape, so that the accumulators are registers.
        unsafe {
            match (rows, cols) {
                (3, 4) => shaped::<3, 4>(x, w, inputs, sums),
                (3, 3) => shaped::<3, 3>(x, w, inputs, sums),
                (3, 2) => shaped::<3, 2>(x, w, inputs, sums),
                (3, 1) => shaped::<3, 1>(x, w, inputs, sums),
                (2, 4) => shaped::<2, 4>(x, w, inputs, sums),
                (2, 3) => shaped::<2, 3>(x, w, inputs, sums),
                (2, 2) => shaped::<2, 2>(x, w, inputs, sums),
                (2, 1) => shaped::<2, 1>(x, w, inputs, sums),
                (1, 4) => shaped::<1, 4>(x, w, inputs, sums),
                (1, 3) => shaped::<1, 3>(x, w, inputs, sums),
                (1, 2) => shaped::<1, 2>(x, w, inputs, sums),
                (1, 1) => shaped::<1, 1>(x, w, inputs, sums),
                _ => unreachable!("blocks are at most {ROWS} x {OUTPUTS}"),
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::needless_range_loop)] // indices pair accumulators with rows and columns
    unsafe fn shaped<const R: usize, const C: usize>(
        x: &[f32],
        w: &[f32],
        inputs: usize,
        sums: &mut [[f32; OUTPUTS]; ROWS],
    ) {
        debug_assert!(x.len() >= R * inputs && w.len() >= C * inputs);
        unsafe {
            let vectors = inputs / LANES;
            let mut acc = [[_mm256_setzero_ps(); C]; R];
            let xp = x.as_ptr();
            let wp = w.as_ptr();
            for k in 0..vectors {
                let at = k * LANES;
                let mut xv = [_mm256_setzero_ps(); R];
                for (i, v) in xv.iter_mut().enumerate() {
                    // SAFETY: row i < R has `inputs` values; at + 8 <= inputs.
                    *v = _mm256_loadu_ps(xp.add(i * inputs + at));
                }
                for j in 0..C {
                    // SAFETY: as above, for row j < C of `w`.
                    let wv = _mm256_loadu_ps(wp.add(j * inputs + at));
                    for i in 0..R {
                        acc[i][j] = _mm256_fmadd_ps(xv[i], wv, acc[i][j]);
                    }
                }
            }
            for i in 0..R {
                for j in 0..C {
                    let mut total = hsum(acc[i][j]);
                    for k in vectors * LANES..inputs {
                        total += x[i * inputs + k] * w[j * inputs + k];
                    }
                    sums[i][j] = total;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                    / (1 << 24) as f32
                    - 0.5
            })
            .collect()
    }

    #[test]
    fn matches_plain_dot_products_on_every_edge() {
        // Rows and outputs that are not multiples of the block, inputs with a tail.
        for (n, inputs, outputs) in [(1, 8, 1), (5, 19, 7), (50, 384, 13), (3, 1536, 4)] {
            let (x, w, b) = (
                values(n * inputs, 1),
                values(outputs * inputs, 2),
                values(outputs, 3),
            );
            let y = linear(&x, &w, &b, inputs);
            for t in 0..n {
                for o in 0..outputs {
                    let want: f64 = (0..inputs)
                        .map(|k| x[t * inputs + k] as f64 * w[o * inputs + k] as f64)
                        .sum::<f64>()
                        + b[o] as f64;
                    let got = y[t * outputs + o] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * inputs as f64,
                        "{n}x{inputs}x{outputs} [{t}][{o}]: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_row_gives_the_same_bits_whatever_rows_are_beside_it() {
        let (inputs, outputs) = (40, 9);
        let x = values(7 * inputs, 4);
        let (w, b) = (values(outputs * inputs, 5), values(outputs, 6));
        let all = linear(&x, &w, &b, inputs);
        for t in 0..7 {
            let alone = linear(&x[t * inputs..(t + 1) * inputs], &w, &b, inputs);
            assert_eq!(alone, all[t * outputs..(t + 1) * outputs]);
        }
    }
}
