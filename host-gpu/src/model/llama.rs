//! The llama forward pass: token embeddings, then per layer RMSNorm,
//! grouped-query attention with rotary positions, and a SiLU-gated MLP, then
//! the output norm and vocabulary projection (tied to the embeddings when the
//! file has no `output.weight`).
//!
//! Batch-first: [`LlamaModel::forward`] takes tokens from several sequences at
//! once (each with its own cache and position) and runs every matrix product
//! once for all of them.

use std::path::Path;

use std::sync::Arc;

use super::LlamaConfig;
use super::attention::{self, Context, Scratch, attend_chunk, merge};
use super::kv_cache::{KvCache, KvCacheFull, KvPool};
use rayon::prelude::*;

use crate::cpu::{
    Activations, Matrix, matmul, matmul_group, rms_norm, rope, rope_frequencies, silu_mul,
};
use crate::gguf::{GgufError, GgufFile};

struct Layer {
    attn_norm: Vec<f32>,
    q: Matrix,
    k: Matrix,
    v: Matrix,
    q_bias: Option<Vec<f32>>,
    k_bias: Option<Vec<f32>>,
    v_bias: Option<Vec<f32>>,
    out: Matrix,
    ffn_norm: Vec<f32>,
    gate: Matrix,
    up: Matrix,
    down: Matrix,
}

/// One layer's weights as the file holds them, for backends that copy them
/// to a device.
#[derive(Debug, Clone, Copy)]
pub struct LayerWeights<'a> {
    pub attn_norm: &'a [f32],
    pub q: &'a Matrix,
    pub k: &'a Matrix,
    pub v: &'a Matrix,
    pub q_bias: Option<&'a [f32]>,
    pub k_bias: Option<&'a [f32]>,
    pub v_bias: Option<&'a [f32]>,
    pub out: &'a Matrix,
    pub ffn_norm: &'a [f32],
    pub gate: &'a Matrix,
    pub up: &'a Matrix,
    pub down: &'a Matrix,
}

/// A loaded llama-family model: one copy of the weights, shared by every
/// sequence and tenant.
pub struct LlamaModel {
    config: LlamaConfig,
    activations: Activations,
    rope_frequencies: Vec<f32>,
    embeddings: Matrix,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    output: Matrix,
}

impl std::fmt::Debug for LlamaModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaModel")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn matrix(file: &GgufFile, name: &str, rows: usize, cols: usize) -> Result<Matrix, GgufError> {
    let info = file.tensor(name)?;
    if info.dims != [cols as u64, rows as u64] {
        return Err(GgufError::Invalid {
            path: file.path().to_owned(),
            what: format!(
                "tensor `{name}` has shape {:?}, expected [{cols}, {rows}]",
                info.dims
            ),
        });
    }
    Ok(Matrix::new(
        info.ty,
        rows,
        cols,
        file.shared_tensor_data(info),
    ))
}

fn vector(file: &GgufFile, name: &str, len: usize) -> Result<Vec<f32>, GgufError> {
    let info = file.tensor(name)?;
    if info.dims != [len as u64] {
        return Err(GgufError::Invalid {
            path: file.path().to_owned(),
            what: format!(
                "tensor `{name}` has shape {:?}, expected [{len}]",
                info.dims
            ),
        });
    }
    let mut out = vec![0.0; len];
    crate::quant::dequantize(info.ty, file.tensor_data(info), &mut out);
    Ok(out)
}

fn optional_vector(file: &GgufFile, name: &str, len: usize) -> Result<Option<Vec<f32>>, GgufError> {
    match file.tensor(name) {
        Ok(_) => vector(file, name, len).map(Some),
        Err(GgufError::MissingTensor { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

impl LlamaModel {
    /// Loads a llama-family GGUF file (weights stay memory-mapped).
    pub fn load(path: &Path) -> Result<Self, GgufError> {
        let file = GgufFile::open(path)?;
        Self::from_gguf(&file)
    }

    pub fn from_gguf(file: &GgufFile) -> Result<Self, GgufError> {
        let config = LlamaConfig::from_gguf(file)?;
        let (e, kv, ff) = (config.embedding, config.kv_dim(), config.feed_forward);
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let name = |part: &str| format!("blk.{i}.{part}");
            layers.push(Layer {
                attn_norm: vector(file, &name("attn_norm.weight"), e)?,
                q: matrix(file, &name("attn_q.weight"), e, e)?,
                k: matrix(file, &name("attn_k.weight"), kv, e)?,
                v: matrix(file, &name("attn_v.weight"), kv, e)?,
                q_bias: optional_vector(file, &name("attn_q.bias"), e)?,
                k_bias: optional_vector(file, &name("attn_k.bias"), kv)?,
                v_bias: optional_vector(file, &name("attn_v.bias"), kv)?,
                out: matrix(file, &name("attn_output.weight"), e, e)?,
                ffn_norm: vector(file, &name("ffn_norm.weight"), e)?,
                gate: matrix(file, &name("ffn_gate.weight"), ff, e)?,
                up: matrix(file, &name("ffn_up.weight"), ff, e)?,
                down: matrix(file, &name("ffn_down.weight"), e, ff)?,
            });
        }
        let embeddings = matrix(file, "token_embd.weight", config.vocab, e)?;
        let output = match file.tensor("output.weight") {
            Ok(_) => matrix(file, "output.weight", config.vocab, e)?,
            Err(GgufError::MissingTensor { .. }) => embeddings.clone(),
            Err(err) => return Err(err),
        };
        for m in layers
            .iter()
            .flat_map(|l| [&l.q, &l.k, &l.v, &l.out, &l.gate, &l.up, &l.down])
        {
            if m.cols % m.ty.block_len() != 0 {
                return Err(GgufError::Invalid {
                    path: file.path().to_owned(),
                    what: format!("a {} matrix has rows of {} weights", m.ty.name(), m.cols),
                });
            }
        }
        Ok(LlamaModel {
            activations: Activations::Quantized,
            rope_frequencies: rope_frequencies(config.head_dim, config.rope_base),
            output_norm: vector(file, "output_norm.weight", e)?,
            embeddings,
            output,
            layers,
            config,
        })
    }

    /// The same model computing with f32 activations (see [`Activations`]).
    pub fn with_activations(mut self, activations: Activations) -> Self {
        self.activations = activations;
        self
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Every layer's weights, in order.
    pub fn layer_weights(&self) -> impl Iterator<Item = LayerWeights<'_>> {
        self.layers.iter().map(|l| LayerWeights {
            attn_norm: &l.attn_norm,
            q: &l.q,
            k: &l.k,
            v: &l.v,
            q_bias: l.q_bias.as_deref(),
            k_bias: l.k_bias.as_deref(),
            v_bias: l.v_bias.as_deref(),
            out: &l.out,
            ffn_norm: &l.ffn_norm,
            gate: &l.gate,
            up: &l.up,
            down: &l.down,
        })
    }

    /// The token embeddings, the final norm and the vocabulary projection
    /// (the embeddings again when they are tied).
    pub fn edge_weights(&self) -> (&Matrix, &[f32], &Matrix) {
        (&self.embeddings, &self.output_norm, &self.output)
    }

    pub fn rope_frequencies(&self) -> &[f32] {
        &self.rope_frequencies
    }

    /// Bytes of weights read per forward step.
    pub fn weight_bytes(&self) -> usize {
        let layer: usize = self
            .layers
            .iter()
            .flat_map(|l| [&l.q, &l.k, &l.v, &l.out, &l.gate, &l.up, &l.down])
            .map(|m| m.bytes.len())
            .sum();
        layer + self.output.bytes.len()
    }

    /// The kernels that multiply the layers' weights on this processor.
    pub fn kernel_name(&self) -> &'static str {
        self.layers.first().map_or("none", |l| l.gate.kernel_name())
    }

    /// A fresh, empty cache for one sequence, from an unbounded pool of its
    /// own (for callers driving the model directly; the engine's scheduler
    /// draws every sequence from one bounded [`KvPool`]).
    pub fn new_cache(&self) -> KvCache {
        KvPool::new(&self.config, None).new_cache()
    }

    /// A pool of cache blocks for this model's sequences, holding at most
    /// `bytes` of keys and values.
    pub fn new_pool(&self, bytes: usize) -> Arc<KvPool> {
        KvPool::with_budget(&self.config, bytes)
    }

    /// Runs `tokens` through the model. `tokens[i]` belongs to the sequence
    /// whose cache is `caches[owners[i]]`, at that cache's next position;
    /// a sequence's tokens must appear in order. Returns the logits of the
    /// rows named in `wanted` (indices into `tokens`), each `vocab` long.
    /// When a cache's pool has no room for its new positions, nothing runs
    /// and no cache changes.
    pub fn forward(
        &self,
        tokens: &[u32],
        owners: &[usize],
        caches: &mut [&mut KvCache],
        wanted: &[usize],
    ) -> Result<Vec<f32>, KvCacheFull> {
        // The whole pass runs on a worker of the thread pool, so its parallel
        // products fork and join among the workers directly. Called from
        // outside the pool, each of the ~150 products per token would wake
        // the pool and put this thread to sleep until it finished.
        self.forward_with(self.activations, tokens, owners, caches, wanted)
    }

    /// [`LlamaModel::forward`] computing with `activations`, whatever the
    /// model's own setting (checks compare a device with exact f32).
    pub fn forward_with(
        &self,
        activations: Activations,
        tokens: &[u32],
        owners: &[usize],
        caches: &mut [&mut KvCache],
        wanted: &[usize],
    ) -> Result<Vec<f32>, KvCacheFull> {
        rayon::scope(|_| self.forward_in_pool(activations, tokens, owners, caches, wanted))
    }

    fn forward_in_pool(
        &self,
        activations: Activations,
        tokens: &[u32],
        owners: &[usize],
        caches: &mut [&mut KvCache],
        wanted: &[usize],
    ) -> Result<Vec<f32>, KvCacheFull> {
        let c = &self.config;
        let (n, e, kv) = (tokens.len(), c.embedding, c.kv_dim());
        assert_eq!(owners.len(), n);
        // Position of each token in its own sequence.
        let mut next_pos: Vec<usize> = caches.iter().map(|cache| cache.len()).collect();
        let positions: Vec<usize> = owners
            .iter()
            .map(|&s| {
                let p = next_pos[s];
                next_pos[s] += 1;
                p
            })
            .collect();
        for (cache, &end) in caches.iter_mut().zip(&next_pos) {
            cache.reserve(end)?;
        }

        let mut x = vec![0.0f32; n * e];
        for (row, &token) in x.chunks_exact_mut(e).zip(tokens) {
            self.embeddings.row_f32(token as usize, row);
        }
        let mut h = vec![0.0f32; n * e];
        let mut q = vec![0.0f32; n * e];
        let mut k = vec![0.0f32; n * kv];
        let mut v = vec![0.0f32; n * kv];
        let mut attn = vec![0.0f32; n * e];
        let mut proj = vec![0.0f32; n * e];
        let mut gate = vec![0.0f32; n * c.feed_forward];
        let mut up = vec![0.0f32; n * c.feed_forward];
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        let group = c.heads / c.kv_heads;
        let group_width = group * c.head_dim;
        // Attention's work, the same in every layer: (token, KV head, chunk)
        // triples, and which of them belong to each (token, KV head) pair.
        let mut work = Vec::new();
        let mut pair_chunks = Vec::with_capacity(n * c.kv_heads);
        for (t, &p) in positions.iter().enumerate() {
            for kv_head in 0..c.kv_heads {
                let first = work.len();
                work.extend((0..attention::chunks(p + 1)).map(|chunk| (t, kv_head, chunk)));
                pair_chunks.push(first..work.len());
            }
        }
        let partial_stride = attention::partial_len(group, c.head_dim);
        let mut partials = vec![0.0f32; work.len() * partial_stride];

        for (li, layer) in self.layers.iter().enumerate() {
            h.copy_from_slice(&x);
            for row in h.chunks_exact_mut(e) {
                rms_norm(row, &layer.attn_norm, c.rms_eps);
            }
            matmul_group(
                &[&layer.q, &layer.k, &layer.v],
                &h,
                &mut [&mut q, &mut k, &mut v],
                activations,
            );
            add_bias(&mut q, layer.q_bias.as_deref());
            add_bias(&mut k, layer.k_bias.as_deref());
            add_bias(&mut v, layer.v_bias.as_deref());
            for t in 0..n {
                rope(
                    &mut q[t * e..(t + 1) * e],
                    c.head_dim,
                    positions[t],
                    &self.rope_frequencies,
                    c.rope_style,
                );
                rope(
                    &mut k[t * kv..(t + 1) * kv],
                    c.head_dim,
                    positions[t],
                    &self.rope_frequencies,
                    c.rope_style,
                );
                caches[owners[t]].write(
                    li,
                    positions[t],
                    &k[t * kv..(t + 1) * kv],
                    &v[t * kv..(t + 1) * kv],
                );
            }
            // Every chunk of every (token, KV head) pair attends
            // independently, the query heads that share the KV head
            // together: spread them over the threads, then merge each
            // pair's chunks.
            let caches_now: Vec<&KvCache> = caches.iter().map(|c| &**c).collect();
            partials
                .par_chunks_mut(partial_stride)
                .zip(work.par_iter())
                .for_each_init(
                    Scratch::default,
                    |scratch, (partial, &(t, kv_head, chunk))| {
                        let context = Context {
                            cache: caches_now[owners[t]],
                            layer: li,
                            kv_head,
                            len: positions[t] + 1,
                        };
                        let query = &q[t * e..(t + 1) * e][kv_head * group_width..][..group_width];
                        attend_chunk(context, chunk, query, scale, partial, scratch);
                    },
                );
            attn.par_chunks_mut(group_width)
                .zip(pair_chunks.par_iter())
                .for_each(|(out, chunks)| {
                    let pair =
                        &partials[chunks.start * partial_stride..chunks.end * partial_stride];
                    merge(pair, group, c.head_dim, out);
                });
            matmul(&layer.out, &attn, &mut proj, activations);
            add_into(&mut x, &proj);

            h.copy_from_slice(&x);
            for row in h.chunks_exact_mut(e) {
                rms_norm(row, &layer.ffn_norm, c.rms_eps);
            }
            matmul_group(
                &[&layer.gate, &layer.up],
                &h,
                &mut [&mut gate, &mut up],
                activations,
            );
            silu_mul(&mut gate, &up);
            matmul(&layer.down, &gate, &mut proj, activations);
            add_into(&mut x, &proj);
        }
        for (cache, &end) in caches.iter_mut().zip(&next_pos) {
            cache.set_len(end);
        }

        let mut last = Vec::with_capacity(wanted.len() * e);
        for &t in wanted {
            let mut row = x[t * e..(t + 1) * e].to_vec();
            rms_norm(&mut row, &self.output_norm, c.rms_eps);
            last.extend_from_slice(&row);
        }
        let mut logits = vec![0.0f32; wanted.len() * c.vocab];
        matmul(&self.output, &last, &mut logits, activations);
        Ok(logits)
    }
}

fn add_bias(x: &mut [f32], bias: Option<&[f32]>) {
    if let Some(bias) = bias {
        for row in x.chunks_exact_mut(bias.len()) {
            add_into(row, bias);
        }
    }
}

fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
