//! Attention of one token over its sequence's cached keys and values, for
//! the query heads that share one KV head (grouped-query attention): the
//! heads are computed together, so each cached key and value is read once
//! for all of them, a cache block at a time.
//!
//! Keys are cached transposed per block (`[dim][slot]`, see
//! [`super::kv_cache`]), so a head's scores for a block's 16 positions are
//! 16-lane multiply-adds with no horizontal sums; values stay `[slot][dim]`,
//! so the weighted sum is multiply-adds along the head's dimensions. The
//! same code is compiled for AVX-512, AVX2 and without either, chosen at
//! run time; all give the same bits (fused multiply-adds everywhere).

use super::kv_cache::{BLOCK_TOKENS, CachedFloat, KvCache};
use crate::cpu::softmax;

/// Query heads scored together against one block of keys: four 16-lane
/// accumulators keep the multiply-add units busy without running out of
/// registers (eight of AVX2's sixteen).
const HEAD_TILE: usize = 4;

/// Output dimensions of one head accumulated together over a block's
/// positions: four 256-bit registers (two 512-bit ones).
const VALUE_LANES: usize = 32;

/// Scratch one attention task reuses between calls.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    /// Scores, `[head][position]`.
    scores: Vec<f32>,
    /// A tile of query heads transposed: `[dim][head]`.
    queries: Vec<[f32; HEAD_TILE]>,
    /// One block's keys or values widened from the cache's f16.
    block: Vec<f32>,
}

/// `out[g]` (each `head_dim` long) ← attention of query head `q[g]` over
/// positions `0..len` of KV head `kv_head` of `layer`; `q` holds the group's
/// heads one after another, `scale` multiplies every score.
#[allow(clippy::too_many_arguments)]
pub(super) fn attend(
    cache: &KvCache,
    layer: usize,
    kv_head: usize,
    len: usize,
    q: &[f32],
    scale: f32,
    out: &mut [f32],
    scratch: &mut Scratch,
) {
    #[cfg(target_arch = "x86_64")]
    {
        let f16c = is_x86_feature_detected!("f16c") && is_x86_feature_detected!("fma");
        if f16c && is_x86_feature_detected!("avx512f") {
            // SAFETY: the features were just detected.
            return unsafe { attend_avx512(cache, layer, kv_head, len, q, scale, out, scratch) };
        }
        if f16c && is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { attend_avx2(cache, layer, kv_head, len, q, scale, out, scratch) };
        }
    }
    attend_body(
        cache,
        layer,
        kv_head,
        len,
        q,
        scale,
        out,
        scratch,
        widen_portable,
    )
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_avx512(
    cache: &KvCache,
    layer: usize,
    kv_head: usize,
    len: usize,
    q: &[f32],
    scale: f32,
    out: &mut [f32],
    scratch: &mut Scratch,
) {
    attend_body(
        cache,
        layer,
        kv_head,
        len,
        q,
        scale,
        out,
        scratch,
        |from, to| unsafe { widen_f16c(from, to) },
    )
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_avx2(
    cache: &KvCache,
    layer: usize,
    kv_head: usize,
    len: usize,
    q: &[f32],
    scale: f32,
    out: &mut [f32],
    scratch: &mut Scratch,
) {
    attend_body(
        cache,
        layer,
        kv_head,
        len,
        q,
        scale,
        out,
        scratch,
        |from, to| unsafe { widen_f16c(from, to) },
    )
}

/// f16 bits to f32 (exact), eight at a time.
///
/// # Safety
/// The processor must have F16C and AVX; `from.len()` is a multiple of 8.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn widen_f16c(from: &[CachedFloat], to: &mut [f32]) {
    use std::arch::x86_64::*;
    for (eight, out) in from.chunks_exact(8).zip(to.chunks_exact_mut(8)) {
        unsafe {
            let halves = _mm_loadu_si128(eight.as_ptr() as *const __m128i);
            _mm256_storeu_ps(out.as_mut_ptr(), _mm256_cvtph_ps(halves));
        }
    }
}

/// f16 bits to f32 (exact).
fn widen_portable(from: &[CachedFloat], to: &mut [f32]) {
    for (h, f) in from.iter().zip(to) {
        *f = half::f16::from_bits(*h).to_f32();
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_body(
    cache: &KvCache,
    layer: usize,
    kv_head: usize,
    len: usize,
    q: &[f32],
    scale: f32,
    out: &mut [f32],
    scratch: &mut Scratch,
    widen: impl Fn(&[CachedFloat], &mut [f32]),
) {
    let head_dim = cache.head_dim();
    let heads = q.len() / head_dim;
    let Scratch {
        scores,
        queries,
        block,
    } = scratch;
    block.resize(BLOCK_TOKENS * head_dim, 0.0);
    scores.clear();
    scores.resize(heads * len, 0.0);
    queries.resize(head_dim, [0.0; HEAD_TILE]);
    let blocks = len.div_ceil(BLOCK_TOKENS);

    for first in (0..heads).step_by(HEAD_TILE) {
        let tile = (heads - first).min(HEAD_TILE);
        for (d, lanes) in queries.iter_mut().enumerate() {
            *lanes = std::array::from_fn(|g| {
                if g < tile {
                    q[(first + g) * head_dim + d]
                } else {
                    0.0
                }
            });
        }
        for b in 0..blocks {
            widen(cache.keys(layer, b, kv_head), block);
            let keys = &block[..];
            let mut sums = [[0.0f32; BLOCK_TOKENS]; HEAD_TILE];
            for (lanes, key) in queries.iter().zip(keys.chunks_exact(BLOCK_TOKENS)) {
                for g in 0..HEAD_TILE {
                    for s in 0..BLOCK_TOKENS {
                        sums[g][s] = lanes[g].mul_add(key[s], sums[g][s]);
                    }
                }
            }
            let valid = (len - b * BLOCK_TOKENS).min(BLOCK_TOKENS);
            for g in 0..tile {
                let row = &mut scores[(first + g) * len + b * BLOCK_TOKENS..][..valid];
                for (s, score) in row.iter_mut().enumerate() {
                    *score = sums[g][s] * scale;
                }
            }
        }
    }
    for row in scores.chunks_exact_mut(len) {
        softmax(row);
    }

    // Each head's output stays in registers across a block's positions.
    out.fill(0.0);
    for b in 0..blocks {
        widen(cache.values(layer, b, kv_head), block);
        let values = &block[..];
        let valid = (len - b * BLOCK_TOKENS).min(BLOCK_TOKENS);
        for (g, head_out) in out.chunks_exact_mut(head_dim).enumerate() {
            let weights = &scores[g * len + b * BLOCK_TOKENS..][..valid];
            for (o, lane) in head_out
                .chunks_mut(VALUE_LANES)
                .zip((0..head_dim).step_by(VALUE_LANES))
            {
                let rows = weights.iter().zip(values.chunks_exact(head_dim));
                if let Ok(o) = <&mut [f32; VALUE_LANES]>::try_from(&mut *o) {
                    let mut acc = *o;
                    for (&weight, value) in rows {
                        let value: &[f32; VALUE_LANES] = value[lane..lane + VALUE_LANES]
                            .try_into()
                            .expect("whole lanes");
                        for (a, v) in acc.iter_mut().zip(value) {
                            *a = weight.mul_add(*v, *a);
                        }
                    }
                    *o = acc;
                } else {
                    for (&weight, value) in rows {
                        for (a, v) in o.iter_mut().zip(&value[lane..]) {
                            *a = weight.mul_add(*v, *a);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LlamaConfig, kv_cache::KvPool};

    fn config(head_dim: usize) -> LlamaConfig {
        LlamaConfig {
            architecture: "llama".into(),
            layers: 2,
            embedding: 6 * head_dim,
            feed_forward: 32,
            heads: 6,
            kv_heads: 2,
            head_dim,
            context_length: 256,
            rope_base: 10_000.0,
            rope_style: crate::model::RopeStyle::Interleaved,
            rms_eps: 1e-5,
            vocab: 10,
        }
    }

    fn value(seed: usize) -> f32 {
        ((seed * 2_654_435_761) % 1000) as f32 / 500.0 - 1.0
    }

    /// Attention as written in the textbook, in f64.
    fn reference(keys: &[Vec<f32>], values: &[Vec<f32>], q: &[f32], scale: f32) -> Vec<f64> {
        let scores: Vec<f64> = keys
            .iter()
            .map(|k| {
                k.iter()
                    .zip(q)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
                    * scale as f64
            })
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f64 = weights.iter().sum();
        (0..q.len())
            .map(|d| {
                weights
                    .iter()
                    .zip(values)
                    .map(|(w, v)| w / total * v[d] as f64)
                    .sum()
            })
            .collect()
    }

    #[test]
    fn grouped_heads_attend_like_the_textbook_across_blocks() {
        for head_dim in [8, 64] {
            let c = config(head_dim);
            let kv = c.kv_dim();
            let pool = KvPool::new(&c, None);
            let mut cache = pool.new_cache();
            let len = 2 * BLOCK_TOKENS + 7;
            cache.reserve(len).unwrap();
            let keys: Vec<Vec<f32>> = (0..len)
                .map(|p| (0..kv).map(|i| value(p * 1000 + i)).collect())
                .collect();
            let values: Vec<Vec<f32>> = (0..len)
                .map(|p| (0..kv).map(|i| value(p * 1000 + i + 500)).collect())
                .collect();
            for p in 0..len {
                cache.write(1, p, &keys[p], &values[p]);
            }
            cache.set_len(len);
            let group = c.heads / c.kv_heads;
            let q: Vec<f32> = (0..group * head_dim).map(|i| value(i + 77) * 3.0).collect();
            let scale = 1.0 / (head_dim as f32).sqrt();
            for kv_head in 0..c.kv_heads {
                let mut out = vec![0.0; group * head_dim];
                attend(
                    &cache,
                    1,
                    kv_head,
                    len,
                    &q,
                    scale,
                    &mut out,
                    &mut Scratch::default(),
                );
                let range = kv_head * head_dim..(kv_head + 1) * head_dim;
                // As the cache holds them: rounded to f16.
                let cached = |rows: &[Vec<f32>]| -> Vec<Vec<f32>> {
                    rows.iter()
                        .map(|r| {
                            r[range.clone()]
                                .iter()
                                .map(|&x| half::f16::from_f32(x).to_f32())
                                .collect()
                        })
                        .collect()
                };
                let (head_keys, head_values) = (cached(&keys), cached(&values));
                for g in 0..group {
                    let qg = &q[g * head_dim..(g + 1) * head_dim];
                    let want = reference(&head_keys, &head_values, qg, scale);
                    for (d, w) in want.iter().enumerate() {
                        let got = out[g * head_dim + d] as f64;
                        assert!(
                            (got - w).abs() < 1e-5,
                            "dim {head_dim} head {g} d {d}: {got} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        let c = config(64);
        let pool = KvPool::new(&c, None);
        let mut cache = pool.new_cache();
        let len = 3 * BLOCK_TOKENS + 1;
        cache.reserve(len).unwrap();
        for p in 0..len {
            let k: Vec<f32> = (0..c.kv_dim()).map(|i| value(p * 333 + i)).collect();
            let v: Vec<f32> = (0..c.kv_dim()).map(|i| value(p * 333 + i + 99)).collect();
            cache.write(0, p, &k, &v);
        }
        let q: Vec<f32> = (0..3 * 64).map(|i| value(i + 5) * 4.0).collect();
        let mut portable = vec![0.0; q.len()];
        attend_body(
            &cache,
            0,
            1,
            len,
            &q,
            0.125,
            &mut portable,
            &mut Scratch::default(),
            widen_portable,
        );
        let mut detected = vec![0.0; q.len()];
        attend(
            &cache,
            0,
            1,
            len,
            &q,
            0.125,
            &mut detected,
            &mut Scratch::default(),
        );
        assert_eq!(
            portable.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            detected.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}
