//! [`CudaBackend`]: the llama forward pass on one CUDA device.
//!
//! A step runs every token of every live sequence together: embedding
//! lookup, then per layer RMSNorm, one cuBLAS product for q|k|v (bf16 in,
//! f32 out, f32 accumulation), RoPE of the query and key heads, the new keys
//! and values written into the block pool, attention over each sequence's
//! blocks, the output product added onto the residual by cuBLAS itself,
//! RMSNorm, one product for gate|up, SiLU, and the down product added onto
//! the residual; then the final norm and the vocabulary product for the
//! wanted rows, and the arg-max of each on the device, so that a greedy row
//! sends back one token id instead of its logits.
//!
//! Every buffer a step uses is allocated once at load ([`Workspace`]): a
//! step allocates nothing, and a decode step can replay a captured CUDA
//! graph ([`super::graphs`]). Every CUDA call's result is checked and
//! becomes a [`BackendError`] for that step's sequences.

use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::driver::{CudaSlice, CudaStream, LaunchConfig, PushKernelArg};

use super::cache::{self, BlockBook, CudaCache, StepPlan};
use super::graphs::{self, Decode, DecodeGraphs};
use super::kernels::KernelError;
use super::weights::{Device, Weights, cuda, device_error, launch_1d, per_row};
use crate::engine::{
    Backend, BackendError, MAX_LIVE_SEQUENCES, MAX_STEP_TOKENS, RowOutput, Wanted,
};
use crate::model::{BLOCK_TOKENS, LlamaConfig, LlamaModel, RopeStyle};

/// Wanted rows that go through the vocabulary product at once (a decode
/// step's are one group).
const LOGIT_ROWS: usize = MAX_LIVE_SEQUENCES;

/// Largest head dimension the attention kernel takes (`MAX_HEAD_DIM` in
/// `kernels/llama.cu`).
const MAX_HEAD_DIM: usize = 256;

/// Threads per block of the attention kernel (`ATTENTION_WARPS` warps;
/// the kernel's shared memory is sized for exactly this many).
const ATTENTION_THREADS: u32 = 4 * 32;

/// Threads per block of `argmax_rows` (`ARGMAX_THREADS`, which sizes its
/// shared arrays).
const ARGMAX_THREADS: u32 = 1024;

/// Threads per block of the row-wise kernels (norms, embedding).
const ROW_THREADS: u32 = 256;

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum CudaLoadError {
    #[error(transparent)]
    Kernels(#[from] KernelError),
    #[error("CUDA: {0}")]
    Cuda(String),
    #[error("the CUDA backend does not take {0} weights")]
    Unsupported(&'static str),
    /// The device ran, but its logits are not the model's.
    #[error(transparent)]
    Disagrees(#[from] crate::engine::Disagreement),
}

/// The device buffers of one step, allocated once.
struct Workspace {
    /// Tokens one pass takes; a larger step runs in passes of this many.
    rows: usize,
    tokens: CudaSlice<i32>,
    positions: CudaSlice<i32>,
    starts: CudaSlice<i32>,
    slots: CudaSlice<i32>,
    /// Block tables; the last entry names the scratch block.
    tables: CudaSlice<i32>,
    /// The rows of the current group of wanted rows.
    wanted: CudaSlice<i32>,
    /// 0, 1, 2, ...: the wanted rows of a decode step.
    identity: CudaSlice<i32>,
    x: CudaSlice<f32>,
    h: CudaSlice<u16>,
    qkv: CudaSlice<f32>,
    attn: CudaSlice<u16>,
    gate_up: CudaSlice<f32>,
    act: CudaSlice<u16>,
    normed: CudaSlice<u16>,
    logits: CudaSlice<f32>,
    best: CudaSlice<i32>,
    /// Every cache block, and the scratch block after them.
    pool: CudaSlice<f32>,
}

/// What one step at a time may touch.
struct StepState {
    work: Workspace,
    graphs: DecodeGraphs,
}

/// A llama-family model on one CUDA device.
pub struct CudaBackend {
    ordinal: usize,
    config: LlamaConfig,
    weights: Weights,
    book: Arc<Mutex<BlockBook>>,
    block_floats: usize,
    state: Mutex<StepState>,
    /// Last, so that the stream, cuBLAS and the kernels outlive every buffer.
    device: Device,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("device", &self.ordinal)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl CudaBackend {
    /// Uploads `model` to device `ordinal` with a KV pool of at most
    /// `cache_bytes`.
    pub fn new(
        model: &LlamaModel,
        ordinal: usize,
        cache_bytes: usize,
    ) -> Result<Self, CudaLoadError> {
        let device = Device::open(ordinal)?;
        let weights = device.upload(model)?;
        Self::assemble(
            device,
            ordinal,
            model.config().clone(),
            weights,
            cache_bytes,
        )
    }

    /// A model of `config`'s shape with deterministic random bf16 weights
    /// generated on the device (benchmark shapes with no model file).
    pub fn random(
        config: LlamaConfig,
        ordinal: usize,
        cache_bytes: usize,
        seed: u32,
    ) -> Result<Self, CudaLoadError> {
        let device = Device::open(ordinal)?;
        let weights = device.random_weights(&config, seed)?;
        Self::assemble(device, ordinal, config, weights, cache_bytes)
    }

    fn assemble(
        device: Device,
        ordinal: usize,
        config: LlamaConfig,
        weights: Weights,
        cache_bytes: usize,
    ) -> Result<Self, CudaLoadError> {
        if config.head_dim > MAX_HEAD_DIM
            || config.heads * config.head_dim != config.embedding
            || !config.heads.is_multiple_of(config.kv_heads)
        {
            return Err(CudaLoadError::Unsupported("this head layout of"));
        }
        let block_floats = config.layers * 2 * BLOCK_TOKENS * config.kv_dim();
        let capacity = (cache_bytes / (block_floats * 4)).max(1);
        let book = BlockBook::new(capacity);
        let work = Workspace::new(&device.stream, &config, capacity, block_floats)?;
        device.stream.synchronize().map_err(cuda)?;
        Ok(CudaBackend {
            ordinal,
            config,
            weights,
            book,
            block_floats,
            state: Mutex::new(StepState {
                work,
                graphs: DecodeGraphs::from_environment(),
            }),
            device,
        })
    }

    /// Bytes of weights one step reads (for bandwidth figures).
    pub fn weight_bytes(&self) -> usize {
        self.weights.bytes_per_step()
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.device.stream
    }

    /// Whether decode steps replay CUDA graphs.
    pub fn graphs(&self) -> bool {
        self.state().graphs.enabled()
    }

    /// Turns decode graphs on or off (the results are the same either way).
    pub fn set_graphs(&self, enabled: bool) {
        self.state().graphs.set_enabled(enabled);
    }

    fn state(&self) -> MutexGuard<'_, StepState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every layer for the first `n` rows of the workspace's inputs, the
    /// residual stream left in `work.x`. Launches only (no allocation, no
    /// synchronization), so a graph can capture it.
    fn layers(&self, work: &mut Workspace, n: usize) -> Result<(), BackendError> {
        let c = &self.config;
        let (e, kv, ff) = (c.embedding, c.kv_dim(), c.feed_forward);
        let (dim, kv_dim, heads, kv_heads, head_dim) = (
            e as i32,
            kv as i32,
            c.heads as i32,
            c.kv_heads as i32,
            c.head_dim as i32,
        );
        let (stride, rotated_heads, ff_i) = ((e + 2 * kv) as i32, heads + kv_heads, ff as i32);
        let (layers, eps) = (c.layers as i32, c.rms_eps);
        let halves = i32::from(c.rope_style == RopeStyle::Halves);
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        let f = &self.device.f;
        let w = &self.weights;
        let Workspace {
            tokens,
            positions,
            starts,
            slots,
            tables,
            x,
            h,
            qkv,
            attn,
            gate_up,
            act,
            pool,
            ..
        } = work;

        self.device.launch(&f.embed, per_row(n, ROW_THREADS), |l| {
            l.arg(&w.embeddings.data)
                .arg(&*tokens)
                .arg(&mut *x)
                .arg(&dim);
        })?;
        for (li, layer) in w.layers.iter().enumerate() {
            let li = li as i32;
            self.device
                .launch(&f.rms_norm, per_row(n, ROW_THREADS), |l| {
                    l.arg(&*x)
                        .arg(&layer.attn_norm)
                        .arg(&mut *h)
                        .arg(&dim)
                        .arg(&eps);
                })?;
            self.device.gemm(&layer.qkv, h, n, qkv, false)?;
            if let Some(bias) = &layer.qkv_bias {
                let total = (n * (e + 2 * kv)) as i64;
                self.device
                    .launch(&f.add_bias, launch_1d(total as usize), |l| {
                        l.arg(&mut *qkv).arg(bias).arg(&stride).arg(&total);
                    })?;
            }
            self.device.launch(&f.rope, per_row(n, 128), |l| {
                l.arg(&mut *qkv)
                    .arg(&*positions)
                    .arg(&w.rope_frequencies)
                    .arg(&rotated_heads)
                    .arg(&head_dim)
                    .arg(&halves)
                    .arg(&stride);
            })?;
            self.device.launch(&f.kv_write, per_row(n, 128), |l| {
                l.arg(&*qkv)
                    .arg(&mut *pool)
                    .arg(&*slots)
                    .arg(&li)
                    .arg(&layers)
                    .arg(&kv_dim)
                    .arg(&stride)
                    .arg(&dim);
            })?;
            let attention = LaunchConfig {
                grid_dim: (n as u32, c.heads as u32, 1),
                block_dim: (ATTENTION_THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            self.device.launch(&f.attention, attention, |l| {
                l.arg(&*qkv)
                    .arg(&*pool)
                    .arg(&*tables)
                    .arg(&*starts)
                    .arg(&*positions)
                    .arg(&mut *attn)
                    .arg(&heads)
                    .arg(&kv_heads)
                    .arg(&head_dim)
                    .arg(&li)
                    .arg(&layers)
                    .arg(&scale)
                    .arg(&stride);
            })?;
            self.device.gemm(&layer.out, attn, n, x, true)?;
            self.device
                .launch(&f.rms_norm, per_row(n, ROW_THREADS), |l| {
                    l.arg(&*x)
                        .arg(&layer.ffn_norm)
                        .arg(&mut *h)
                        .arg(&dim)
                        .arg(&eps);
                })?;
            self.device.gemm(&layer.gate_up, h, n, gate_up, false)?;
            let total = (n * ff) as i64;
            self.device.launch(&f.silu_mul, launch_1d(n * ff), |l| {
                l.arg(&*gate_up).arg(&mut *act).arg(&ff_i).arg(&total);
            })?;
            self.device.gemm(&layer.down, act, n, x, true)?;
        }
        Ok(())
    }

    /// The final norm, vocabulary product and arg-max of `count` rows of
    /// `work.x`: those listed in `work.identity` (a decode step's, all of
    /// them) or else in `work.wanted`. Launches only, like [`Self::layers`].
    fn logits(
        &self,
        work: &mut Workspace,
        count: usize,
        identity: bool,
    ) -> Result<(), BackendError> {
        let c = &self.config;
        let (dim, vocab, eps) = (c.embedding as i32, c.vocab as i32, c.rms_eps);
        let f = &self.device.f;
        let Workspace {
            wanted,
            identity: all,
            x,
            normed,
            logits,
            best,
            ..
        } = work;
        let rows = if identity { &*all } else { &*wanted };
        self.device
            .launch(&f.rms_norm_rows, per_row(count, ROW_THREADS), |l| {
                l.arg(&*x)
                    .arg(rows)
                    .arg(&self.weights.output_norm)
                    .arg(&mut *normed)
                    .arg(&dim)
                    .arg(&eps);
            })?;
        self.device
            .gemm(self.weights.output(), normed, count, logits, false)?;
        self.device
            .launch(&f.argmax_rows, per_row(count, ARGMAX_THREADS), |l| {
                l.arg(&*logits).arg(&vocab).arg(&mut *best);
            })
    }

    /// Copies the results of the last [`Self::logits`] back: for the
    /// `k`-th row computed, `outputs[group[k]]` (the arg-max for a greedy
    /// row, else the logits).
    fn collect(
        &self,
        work: &Workspace,
        group: &[usize],
        wanted: &[Wanted],
        outputs: &mut [Option<RowOutput>],
    ) -> Result<(), BackendError> {
        let stream = &self.device.stream;
        let vocab = self.config.vocab;
        let mut best = vec![0i32; group.len()];
        stream
            .memcpy_dtoh(&work.best.slice(..group.len()), &mut best)
            .map_err(device_error)?;
        for (k, &j) in group.iter().enumerate() {
            outputs[j] = Some(if wanted[j].greedy {
                RowOutput::ArgMax(best[k] as u32)
            } else {
                let row = work.logits.slice(k * vocab..(k + 1) * vocab);
                RowOutput::Logits(stream.clone_dtoh(&row).map_err(device_error)?)
            });
        }
        Ok(())
    }

    /// A decode step (one token of each of `n` sequences, every row
    /// wanted in order), padded to `batch` rows and run through a graph
    /// when one is captured or can be.
    fn decode(
        &self,
        state: &mut StepState,
        plan: &mut StepPlan,
        batch: usize,
        wanted: &[Wanted],
        outputs: &mut [Option<RowOutput>],
    ) -> Result<(), BackendError> {
        let StepState { work, graphs } = state;
        let scratch = cache::lock(&self.book).scratch();
        plan.pad(batch, scratch, work.tables.len() as i32 - 1);
        work.upload(&self.device.stream, plan, 0..batch)?;
        let stream = &self.device.stream;
        match graphs.plan(batch) {
            Decode::Replay(graph) => graph.launch().map_err(device_error)?,
            Decode::Capture => {
                let captured = graphs::capture(stream, || {
                    self.layers(work, batch)?;
                    self.logits(work, batch, true)
                });
                match captured {
                    Ok(graph) => {
                        graphs.insert(batch, graph);
                        let graph = graphs.replay(batch).expect("just inserted");
                        graph.launch().map_err(device_error)?;
                    }
                    Err(reason) => {
                        tracing::warn!(
                            device = %self.device(),
                            %reason,
                            "cannot capture a decode graph; decode steps run eagerly"
                        );
                        graphs.set_enabled(false);
                        self.layers(work, batch)?;
                        self.logits(work, batch, true)?;
                    }
                }
            }
            Decode::Eager => {
                self.layers(work, batch)?;
                self.logits(work, batch, true)?;
            }
        }
        let group: Vec<usize> = (0..wanted.len()).collect();
        self.collect(work, &group, wanted, outputs)
    }

    /// Any step, eagerly, in passes of at most `work.rows` tokens (a pass
    /// sees the keys and values the earlier ones wrote).
    fn eager(
        &self,
        work: &mut Workspace,
        plan: &StepPlan,
        wanted: &[Wanted],
        outputs: &mut [Option<RowOutput>],
    ) -> Result<(), BackendError> {
        let n = plan.tokens.len();
        let mut start = 0;
        while start < n {
            let end = (start + work.rows).min(n);
            work.upload(&self.device.stream, plan, start..end)?;
            self.layers(work, end - start)?;
            let in_pass: Vec<usize> = (0..wanted.len())
                .filter(|&j| (start..end).contains(&wanted[j].row))
                .collect();
            for group in in_pass.chunks(LOGIT_ROWS) {
                let rows: Vec<i32> = group
                    .iter()
                    .map(|&j| (wanted[j].row - start) as i32)
                    .collect();
                self.device
                    .stream
                    .memcpy_htod(&rows[..], &mut work.wanted)
                    .map_err(device_error)?;
                self.logits(work, group.len(), false)?;
                self.collect(work, group, wanted, outputs)?;
            }
            start = end;
        }
        Ok(())
    }
}

impl Workspace {
    fn new(
        stream: &Arc<CudaStream>,
        c: &LlamaConfig,
        capacity: usize,
        block_floats: usize,
    ) -> Result<Self, CudaLoadError> {
        let rows = MAX_STEP_TOKENS;
        let (e, kv, ff) = (c.embedding, c.kv_dim(), c.feed_forward);
        let ints = |n: usize| stream.alloc_zeros::<i32>(n).map_err(cuda);
        let floats = |n: usize| stream.alloc_zeros::<f32>(n).map_err(cuda);
        let halves = |n: usize| stream.alloc_zeros::<u16>(n).map_err(cuda);
        let mut tables = ints(capacity + 1)?;
        let scratch = [capacity as i32];
        stream
            .memcpy_htod(&scratch[..], &mut tables.slice_mut(capacity..))
            .map_err(cuda)?;
        let order: Vec<i32> = (0..LOGIT_ROWS as i32).collect();
        Ok(Workspace {
            rows,
            tokens: ints(rows)?,
            positions: ints(rows)?,
            starts: ints(rows)?,
            slots: ints(rows)?,
            tables,
            wanted: ints(LOGIT_ROWS)?,
            identity: stream.clone_htod(&order).map_err(cuda)?,
            x: floats(rows * e)?,
            h: halves(rows * e)?,
            qkv: floats(rows * (e + 2 * kv))?,
            attn: halves(rows * e)?,
            gate_up: floats(rows * 2 * ff)?,
            act: halves(rows * ff)?,
            normed: halves(LOGIT_ROWS * e)?,
            logits: floats(LOGIT_ROWS * c.vocab)?,
            best: ints(LOGIT_ROWS)?,
            pool: floats((capacity + 1) * block_floats)?,
        })
    }

    /// Copies the block tables and the inputs of tokens `range` of `plan`.
    fn upload(
        &mut self,
        stream: &Arc<CudaStream>,
        plan: &StepPlan,
        range: std::ops::Range<usize>,
    ) -> Result<(), BackendError> {
        let n = range.len();
        assert!(n <= self.rows && plan.tables.len() < self.tables.len());
        if !plan.tables.is_empty() {
            stream
                .memcpy_htod(&plan.tables[..], &mut self.tables)
                .map_err(device_error)?;
        }
        for (host, device) in [
            (&plan.tokens, &mut self.tokens),
            (&plan.positions, &mut self.positions),
            (&plan.starts, &mut self.starts),
            (&plan.slots, &mut self.slots),
        ] {
            stream
                .memcpy_htod(&host[range.clone()], device)
                .map_err(device_error)?;
        }
        Ok(())
    }
}

impl Backend for CudaBackend {
    type Cache = CudaCache;

    fn device(&self) -> String {
        format!("cuda:{}", self.ordinal)
    }

    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn new_cache(&self) -> CudaCache {
        CudaCache::new(&self.book)
    }

    fn cache_capacity_blocks(&self) -> usize {
        cache::lock(&self.book).capacity()
    }

    fn cache_block_bytes(&self) -> usize {
        self.block_floats * 4
    }

    fn cache_blocks_in_use(&self) -> usize {
        cache::lock(&self.book).in_use()
    }

    fn step(
        &self,
        tokens: &[u32],
        owners: &[usize],
        caches: &mut [&mut CudaCache],
        wanted: &[Wanted],
    ) -> Result<Vec<RowOutput>, BackendError> {
        let n = tokens.len();
        assert!(
            wanted.iter().all(|w| w.row < n),
            "a wanted row past the step's tokens"
        );
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut plan = StepPlan::new(tokens, owners, caches)?;
        let mut outputs: Vec<Option<RowOutput>> = vec![None; wanted.len()];
        let mut state = self.state();
        let decode_batch = if plan.is_decode(owners)
            && wanted.len() == n
            && wanted.iter().enumerate().all(|(i, w)| w.row == i)
        {
            state.graphs.batch_for(n)
        } else {
            None
        };
        let ran = match decode_batch {
            Some(batch) => self.decode(&mut state, &mut plan, batch, wanted, &mut outputs),
            None => self.eager(&mut state.work, &plan, wanted, &mut outputs),
        };
        // Wait for the step, failed or not, so that its errors are its own
        // and not the next step's.
        let synchronized = self.device.stream.synchronize().map_err(device_error);
        ran?;
        synchronized?;
        drop(state);
        plan.commit(caches);
        Ok(outputs
            .into_iter()
            .map(|o| o.expect("every wanted row was collected"))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::kernels::SOURCE;

    #[test]
    fn launch_shapes_match_the_kernel_source() {
        for define in [
            format!("#define ATTENTION_WARPS {}", ATTENTION_THREADS / 32),
            format!("#define MAX_HEAD_DIM {MAX_HEAD_DIM}"),
            format!("#define ARGMAX_THREADS {ARGMAX_THREADS}"),
            format!("#define BLOCK_TOKENS {BLOCK_TOKENS}"),
        ] {
            assert!(SOURCE.contains(&define), "llama.cu lacks `{define}`");
        }
    }
}
