//! Attention of one token over its sequence's cached keys and values, for
//! the query heads that share one KV head (grouped-query attention): the
//! heads are computed together, so each cached key and value is read once
//! for all of them, a cache block at a time.
//!
//! Keys are cached transposed per block (`[dim][slot]`, see
//! [`super::kv_cache`]), so a head's scores for a block's 16 positions are
//! 16-lane multiply-adds with no horizontal sums; values stay `[slot][dim]`,
//! so the weighted sum is multiply-adds along the head's dimensions.
//!
//! A long sequence is attended in chunks of [`CHUNK_POSITIONS`] that run in
//! parallel, each giving a partial result (its softmax's maximum and sum and
//! its unnormalized output) that [`merge`] combines, as flash-decoding does:
//! one decoded token's attention then spreads over every thread. Chunks
//! are fixed by position, so a token's result never depends on what it is
//! batched with. The same code is compiled for AVX-512, AVX2 and without
//! either, chosen at run time; all give the same bits.

use super::kv_cache::{BLOCK_TOKENS, KvCache};
use crate::cpu::exp;

/// Query heads scored together against one block of keys: four 16-lane
/// accumulators keep the multiply-add units busy without running out of
/// registers (eight of AVX2's sixteen).
const HEAD_TILE: usize = 4;

/// Output dimensions of one head accumulated together over a block's
/// positions: four 256-bit registers (two 512-bit ones).
const VALUE_LANES: usize = 32;

/// Positions of one chunk: long enough that a chunk outweighs handing it to
/// a thread and merging it, short enough that a decoded token at a depth of
/// 1,536 gives every thread work (six chunks per KV head).
pub(super) const CHUNK_POSITIONS: usize = 16 * BLOCK_TOKENS;

/// Chunks of a sequence of `len` positions.
pub(super) fn chunks(len: usize) -> usize {
    len.div_ceil(CHUNK_POSITIONS)
}

/// Floats of one chunk's partial result for `heads` heads: each head's
/// unnormalized output, then each head's maximum score, then each head's sum.
pub(super) fn partial_len(heads: usize, head_dim: usize) -> usize {
    heads * (head_dim + 2)
}

/// The cached keys and values one token attends to: positions `0..len` of
/// KV head `kv_head` in `layer`.
#[derive(Clone, Copy)]
pub(super) struct Context<'a> {
    pub cache: &'a KvCache,
    pub layer: usize,
    pub kv_head: usize,
    pub len: usize,
}

/// Scratch one attention task reuses between calls.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    /// Scores, then weights, `[head][position in chunk]`.
    scores: Vec<f32>,
    /// A tile of query heads transposed: `[dim][head]`.
    queries: Vec<[f32; HEAD_TILE]>,
}

/// `out[g]` (each `head_dim` long) ← attention of query head `q[g]` over
/// `context`; `q` holds the group's heads one after another, `scale`
/// multiplies every score. The chunks run one after another here (the
/// forward pass runs them in parallel).
#[cfg(test)]
fn attend(context: Context<'_>, q: &[f32], scale: f32, out: &mut [f32], scratch: &mut Scratch) {
    let heads = q.len() / context.cache.head_dim();
    let stride = partial_len(heads, context.cache.head_dim());
    let mut partials = vec![0.0; chunks(context.len) * stride];
    for (chunk, partial) in partials.chunks_exact_mut(stride).enumerate() {
        attend_chunk(context, chunk, q, scale, partial, scratch);
    }
    merge(&partials, heads, context.cache.head_dim(), out);
}

/// Chunk `chunk` of `context` for the query heads `q`, into `partial` (see
/// [`partial_len`]).
pub(super) fn attend_chunk(
    context: Context<'_>,
    chunk: usize,
    q: &[f32],
    scale: f32,
    partial: &mut [f32],
    scratch: &mut Scratch,
) {
    #[cfg(target_arch = "x86_64")]
    {
        let fma = is_x86_feature_detected!("fma");
        if fma && is_x86_feature_detected!("avx512f") {
            // SAFETY: the features were just detected.
            return unsafe { chunk_avx512(context, chunk, q, scale, partial, scratch) };
        }
        if fma && is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { chunk_avx2(context, chunk, q, scale, partial, scratch) };
        }
    }
    chunk_body(context, chunk, q, scale, partial, scratch)
}

/// A copy of [`chunk_body`] compiled for an instruction set.
macro_rules! chunk_for {
    ($name:ident, $features:literal) => {
        /// # Safety
        #[doc = concat!("The processor must have ", $features, ".")]
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(
            context: Context<'_>,
            chunk: usize,
            q: &[f32],
            scale: f32,
            partial: &mut [f32],
            scratch: &mut Scratch,
        ) {
            chunk_body(context, chunk, q, scale, partial, scratch)
        }
    };
}

chunk_for!(chunk_avx512, "avx512f,fma");
chunk_for!(chunk_avx2, "avx2,fma");

#[inline(always)]
fn chunk_body(
    context: Context<'_>,
    chunk: usize,
    q: &[f32],
    scale: f32,
    partial: &mut [f32],
    scratch: &mut Scratch,
) {
    let Context {
        cache,
        layer,
        kv_head,
        len,
    } = context;
    let head_dim = cache.head_dim();
    let heads = q.len() / head_dim;
    let start = chunk * CHUNK_POSITIONS;
    let count = (len - start).min(CHUNK_POSITIONS);
    let first_block = start / BLOCK_TOKENS;
    let blocks = count.div_ceil(BLOCK_TOKENS);
    let Scratch { scores, queries } = scratch;
    scores.clear();
    scores.resize(heads * count, 0.0);
    queries.resize(head_dim, [0.0; HEAD_TILE]);

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
            let keys = cache.keys(layer, first_block + b, kv_head);
            let mut sums = [[0.0f32; BLOCK_TOKENS]; HEAD_TILE];
            for (lanes, key) in queries.iter().zip(keys.chunks_exact(BLOCK_TOKENS)) {
                for g in 0..HEAD_TILE {
                    for s in 0..BLOCK_TOKENS {
                        sums[g][s] = lanes[g].mul_add(key[s], sums[g][s]);
                    }
                }
            }
            let valid = (count - b * BLOCK_TOKENS).min(BLOCK_TOKENS);
            for g in 0..tile {
                let row = &mut scores[(first + g) * count + b * BLOCK_TOKENS..][..valid];
                for (s, score) in row.iter_mut().enumerate() {
                    *score = sums[g][s] * scale;
                }
            }
        }
    }

    // Each head's weights relative to its own maximum.
    let (outputs, stats) = partial.split_at_mut(heads * head_dim);
    let (maxima, sums) = stats.split_at_mut(heads);
    for ((row, max), sum) in scores.chunks_exact_mut(count).zip(maxima).zip(sums) {
        *max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        for v in row.iter_mut() {
            *v = exp(*v - *max);
        }
        *sum = row.iter().sum();
    }

    // Each head's output stays in registers across a block's positions.
    outputs.fill(0.0);
    for b in 0..blocks {
        let values = cache.values(layer, first_block + b, kv_head);
        let valid = (count - b * BLOCK_TOKENS).min(BLOCK_TOKENS);
        for (g, head_out) in outputs.chunks_exact_mut(head_dim).enumerate() {
            let weights = &scores[g * count + b * BLOCK_TOKENS..][..valid];
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

/// Combines a token's chunk results (`partials`, one [`partial_len`] after
/// another, in position order) into each head's attention output.
pub(super) fn merge(partials: &[f32], heads: usize, head_dim: usize, out: &mut [f32]) {
    let stride = partial_len(heads, head_dim);
    let at_max = heads * head_dim;
    let at_sum = at_max + heads;
    for (g, head_out) in out.chunks_exact_mut(head_dim).enumerate() {
        let max = partials
            .chunks_exact(stride)
            .fold(f32::NEG_INFINITY, |m, p| m.max(p[at_max + g]));
        let total: f32 = partials
            .chunks_exact(stride)
            .map(|p| p[at_sum + g] * exp(p[at_max + g] - max))
            .sum();
        head_out.fill(0.0);
        for p in partials.chunks_exact(stride) {
            let weight = exp(p[at_max + g] - max) / total;
            let chunk_out = &p[g * head_dim..(g + 1) * head_dim];
            for (o, v) in head_out.iter_mut().zip(chunk_out) {
                *o += weight * v;
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
            // Two chunks, the second ending inside a block.
            let len = CHUNK_POSITIONS + 2 * BLOCK_TOKENS + 7;
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
                let context = Context {
                    cache: &cache,
                    layer: 1,
                    kv_head,
                    len,
                };
                attend(context, &q, scale, &mut out, &mut Scratch::default());
                let range = kv_head * head_dim..(kv_head + 1) * head_dim;
                let cached = |rows: &[Vec<f32>]| -> Vec<Vec<f32>> {
                    rows.iter().map(|r| r[range.clone()].to_vec()).collect()
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
        let len = CHUNK_POSITIONS + 3 * BLOCK_TOKENS + 1;
        cache.reserve(len).unwrap();
        for p in 0..len {
            let k: Vec<f32> = (0..c.kv_dim()).map(|i| value(p * 333 + i)).collect();
            let v: Vec<f32> = (0..c.kv_dim()).map(|i| value(p * 333 + i + 99)).collect();
            cache.write(0, p, &k, &v);
        }
        let q: Vec<f32> = (0..3 * 64).map(|i| value(i + 5) * 4.0).collect();
        let context = Context {
            cache: &cache,
            layer: 0,
            kv_head: 1,
            len,
        };
        let stride = partial_len(3, 64);
        for chunk in 0..chunks(len) {
            let mut portable = vec![0.0; stride];
            let mut scratch = Scratch::default();
            chunk_body(context, chunk, &q, 0.125, &mut portable, &mut scratch);
            let mut detected = vec![0.0; stride];
            attend_chunk(context, chunk, &q, 0.125, &mut detected, &mut scratch);
            assert_eq!(
                portable.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                detected.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "chunk {chunk}"
            );
        }
    }
}
