//! [`GpuBackend`]: the llama forward pass on one GPU ([`CudaBackend`] on a
//! CUDA device).
//!
//! A step runs every token of every live sequence together: embedding
//! lookup, then per layer RMSNorm, one product for q|k|v (halves in, f32 out,
//! f32 accumulation), RoPE of the query and key heads, the new keys and
//! values written into the block pool, attention over each sequence's
//! blocks, the output product added onto the residual by the product itself,
//! RMSNorm, one product for gate|up, SiLU, and the down product added onto
//! the residual; then the final norm and the vocabulary product for the
//! wanted rows, and the arg-max of each on the device, so that a greedy row
//! sends back one token id instead of its logits.
//!
//! Every buffer a step uses is allocated once at load ([`Workspace`]): a
//! step allocates nothing, and a decode step can replay a captured graph
//! ([`super::graphs`]). Every device call's result is checked and becomes a
//! [`BackendError`] for that step's sequences. The backend is generic over
//! the [`Gpu`] it drives, so the tests run this very code on the kernels
//! compiled for the CPU.

use std::sync::{Arc, Mutex, MutexGuard};

use super::cache::{self, BlockBook, CudaCache, StepPlan};
use super::gpu::{Buffer, CudaGpu, Gpu, GpuError, Karg};
use super::graphs::{Decode, DecodeGraphs};
use super::kernels::{Half, KernelError};
use super::weights::{self, DeviceMatrix, THREADS, Weights, grid_1d};
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

/// The parts of a step's inputs, in the order they lie in the workspace.
const TOKENS: usize = 0;
const POSITIONS: usize = 1;
const STARTS: usize = 2;
const SLOTS: usize = 3;
const TABLES: usize = 4;

fn device_error(e: GpuError) -> BackendError {
    BackendError::Device(e)
}

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
struct Workspace<G: Gpu> {
    /// Tokens one pass takes; a larger step runs in passes of this many.
    rows: usize,
    /// A step's inputs, sent in one copy: tokens, positions, table starts
    /// and slots ([`MAX_STEP_TOKENS`] each), then the block tables, whose
    /// last entry (never written by a step) names the scratch block.
    inputs: Buffer<i32, G>,
    /// Entries of the block tables (pool blocks and the scratch block).
    table_entries: usize,
    /// The rows of the current group of wanted rows.
    wanted: Buffer<i32, G>,
    /// 0, 1, 2, ...: the wanted rows of a decode step.
    identity: Buffer<i32, G>,
    x: Buffer<f32, G>,
    h: Buffer<u16, G>,
    qkv: Buffer<f32, G>,
    attn: Buffer<u16, G>,
    gate_up: Buffer<f32, G>,
    act: Buffer<u16, G>,
    normed: Buffer<u16, G>,
    logits: Buffer<f32, G>,
    best: Buffer<i32, G>,
    /// Every cache block, and the scratch block after them.
    pool: Buffer<f32, G>,
}

/// What one step at a time may touch.
struct StepState<G: Gpu> {
    work: Workspace<G>,
    graphs: DecodeGraphs<G::Graph>,
}

/// A llama-family model on one GPU.
pub struct GpuBackend<G: Gpu> {
    config: LlamaConfig,
    weights: Weights<G>,
    book: Arc<Mutex<BlockBook>>,
    block_floats: usize,
    state: Mutex<StepState<G>>,
    /// Last, so that the device outlives every buffer.
    gpu: G,
}

/// The backend on a CUDA device.
pub type CudaBackend = GpuBackend<CudaGpu>;

impl<G: Gpu> std::fmt::Debug for GpuBackend<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuBackend")
            .field("device", &self.gpu.name())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl GpuBackend<CudaGpu> {
    /// Uploads `model` to CUDA device `ordinal` with a KV pool of at most
    /// `cache_bytes`, products on f16.
    pub fn new(
        model: &LlamaModel,
        ordinal: usize,
        cache_bytes: usize,
    ) -> Result<Self, CudaLoadError> {
        Self::on(CudaGpu::open(ordinal, Half::F16)?, model, cache_bytes)
    }

    /// A model of `config`'s shape with deterministic random f16 weights
    /// generated on CUDA device `ordinal` (benchmark shapes with no model
    /// file).
    pub fn random(
        config: LlamaConfig,
        ordinal: usize,
        cache_bytes: usize,
        seed: u32,
    ) -> Result<Self, CudaLoadError> {
        Self::random_on(
            CudaGpu::open(ordinal, Half::F16)?,
            config,
            cache_bytes,
            seed,
        )
    }
}

impl<G: Gpu> GpuBackend<G> {
    /// Uploads `model` to `gpu` with a KV pool of at most `cache_bytes`.
    pub fn on(gpu: G, model: &LlamaModel, cache_bytes: usize) -> Result<Self, CudaLoadError> {
        let weights = weights::upload(&gpu, model)?;
        Self::assemble(gpu, model.config().clone(), weights, cache_bytes)
    }

    /// A model of `config`'s shape with deterministic random weights
    /// generated on `gpu` (benchmark shapes with no model file).
    pub fn random_on(
        gpu: G,
        config: LlamaConfig,
        cache_bytes: usize,
        seed: u32,
    ) -> Result<Self, CudaLoadError> {
        let weights = weights::random_weights(&gpu, &config, seed)?;
        Self::assemble(gpu, config, weights, cache_bytes)
    }

    fn assemble(
        gpu: G,
        config: LlamaConfig,
        weights: Weights<G>,
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
        let work =
            Workspace::new(&gpu, &config, capacity, block_floats).map_err(CudaLoadError::Cuda)?;
        gpu.synchronize().map_err(CudaLoadError::Cuda)?;
        Ok(GpuBackend {
            config,
            weights,
            book,
            block_floats,
            state: Mutex::new(StepState {
                work,
                graphs: DecodeGraphs::from_environment(),
            }),
            gpu,
        })
    }

    /// The GPU it runs on.
    pub fn gpu(&self) -> &G {
        &self.gpu
    }

    /// The 16-bit float of its products.
    pub fn half(&self) -> Half {
        self.gpu.half()
    }

    /// Bytes of weights one step reads (for bandwidth figures).
    pub fn weight_bytes(&self) -> usize {
        self.weights.bytes_per_step()
    }

    /// Whether decode steps replay graphs.
    pub fn graphs(&self) -> bool {
        self.state().graphs.enabled()
    }

    /// Turns decode graphs on or off (the results are the same either way).
    pub fn set_graphs(&self, enabled: bool) {
        self.state().graphs.set_enabled(enabled);
    }

    /// Runs steps in passes of at most `rows` tokens (fewer than the
    /// workspace holds; for tests of the passes on small models).
    #[doc(hidden)]
    pub fn limit_pass_rows(&self, rows: usize) {
        let mut state = self.state();
        state.work.rows = rows.clamp(1, MAX_STEP_TOKENS);
    }

    fn state(&self) -> MutexGuard<'_, StepState<G>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn launch(
        &self,
        kernel: &str,
        grid: (u32, u32),
        threads: u32,
        args: &[Karg],
    ) -> Result<(), BackendError> {
        self.gpu
            .launch(kernel, grid, threads, args)
            .map_err(device_error)
    }

    /// `y[n × rows] = x[n × cols] · Wᵀ`, or `y += ...` when `accumulate`.
    fn gemm(
        &self,
        w: &DeviceMatrix<G>,
        x: &Buffer<u16, G>,
        n: usize,
        y: &Buffer<f32, G>,
        accumulate: bool,
    ) -> Result<(), BackendError> {
        assert!(x.len() >= n * w.cols && y.len() >= n * w.rows);
        self.gpu
            .gemm(
                w.data.address(0),
                w.rows,
                w.cols,
                x.address(0),
                n,
                y.address(0),
                accumulate,
            )
            .map_err(device_error)
    }

    /// Every layer for the first `n` rows of the workspace's inputs, the
    /// residual stream left in `work.x`. Launches only (no allocation, no
    /// synchronization), so a graph can capture it.
    fn layers(&self, work: &Workspace<G>, n: usize) -> Result<(), BackendError> {
        let c = &self.config;
        let (e, kv, ff) = (c.embedding, c.kv_dim(), c.feed_forward);
        let (dim, kv_dim, heads, kv_heads, head_dim) = (
            e as i32,
            kv as i32,
            c.heads as i32,
            c.kv_heads as i32,
            c.head_dim as i32,
        );
        let stride = (e + 2 * kv) as i32;
        let (layers, eps) = (c.layers as i32, c.rms_eps);
        let halves = i32::from(c.rope_style == RopeStyle::Halves);
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        let w = &self.weights;
        let rows = (n as u32, 1);
        let grid =
            |elements: usize| grid_1d(elements).map_err(|e| BackendError::Device(e.to_string()));

        self.launch(
            "embed",
            rows,
            ROW_THREADS,
            &[
                w.embeddings.data.arg(),
                work.input(TOKENS),
                work.x.arg(),
                Karg::I32(dim),
            ],
        )?;
        for (li, layer) in w.layers.iter().enumerate() {
            let li = li as i32;
            self.launch(
                "rms_norm",
                rows,
                ROW_THREADS,
                &[
                    work.x.arg(),
                    layer.attn_norm.arg(),
                    work.h.arg(),
                    Karg::I32(dim),
                    Karg::F32(eps),
                ],
            )?;
            self.gemm(&layer.qkv, &work.h, n, &work.qkv, false)?;
            if let Some(bias) = &layer.qkv_bias {
                let total = n * (e + 2 * kv);
                self.launch(
                    "add_bias",
                    grid(total)?,
                    THREADS,
                    &[
                        work.qkv.arg(),
                        bias.arg(),
                        Karg::I32(stride),
                        Karg::I64(total as i64),
                    ],
                )?;
            }
            self.launch(
                "rope",
                rows,
                128,
                &[
                    work.qkv.arg(),
                    work.input(POSITIONS),
                    w.rope_frequencies.arg(),
                    Karg::I32(heads + kv_heads),
                    Karg::I32(head_dim),
                    Karg::I32(halves),
                    Karg::I32(stride),
                ],
            )?;
            self.launch(
                "kv_write",
                rows,
                128,
                &[
                    work.qkv.arg(),
                    work.pool.arg(),
                    work.input(SLOTS),
                    Karg::I32(li),
                    Karg::I32(layers),
                    Karg::I32(kv_dim),
                    Karg::I32(stride),
                    Karg::I32(dim),
                ],
            )?;
            self.launch(
                "attention",
                (n as u32, c.heads as u32),
                ATTENTION_THREADS,
                &[
                    work.qkv.arg(),
                    work.pool.arg(),
                    work.input(TABLES),
                    work.input(STARTS),
                    work.input(POSITIONS),
                    work.attn.arg(),
                    Karg::I32(heads),
                    Karg::I32(kv_heads),
                    Karg::I32(head_dim),
                    Karg::I32(li),
                    Karg::I32(layers),
                    Karg::F32(scale),
                    Karg::I32(stride),
                ],
            )?;
            self.gemm(&layer.out, &work.attn, n, &work.x, true)?;
            self.launch(
                "rms_norm",
                rows,
                ROW_THREADS,
                &[
                    work.x.arg(),
                    layer.ffn_norm.arg(),
                    work.h.arg(),
                    Karg::I32(dim),
                    Karg::F32(eps),
                ],
            )?;
            self.gemm(&layer.gate_up, &work.h, n, &work.gate_up, false)?;
            self.launch(
                "silu_mul",
                grid(n * ff)?,
                THREADS,
                &[
                    work.gate_up.arg(),
                    work.act.arg(),
                    Karg::I32(ff as i32),
                    Karg::I64((n * ff) as i64),
                ],
            )?;
            self.gemm(&layer.down, &work.act, n, &work.x, true)?;
        }
        Ok(())
    }

    /// The final norm, vocabulary product and arg-max of `count` rows of
    /// `work.x`: those listed in `work.identity` (a decode step's, all of
    /// them) or else in `work.wanted`. Launches only, like [`Self::layers`].
    fn logits(
        &self,
        work: &Workspace<G>,
        count: usize,
        identity: bool,
    ) -> Result<(), BackendError> {
        let c = &self.config;
        let rows = if identity {
            &work.identity
        } else {
            &work.wanted
        };
        self.launch(
            "rms_norm_rows",
            (count as u32, 1),
            ROW_THREADS,
            &[
                work.x.arg(),
                rows.arg(),
                self.weights.output_norm.arg(),
                work.normed.arg(),
                Karg::I32(c.embedding as i32),
                Karg::F32(c.rms_eps),
            ],
        )?;
        self.gemm(
            self.weights.output(),
            &work.normed,
            count,
            &work.logits,
            false,
        )?;
        self.launch(
            "argmax_rows",
            (count as u32, 1),
            ARGMAX_THREADS,
            &[
                work.logits.arg(),
                Karg::I32(c.vocab as i32),
                work.best.arg(),
            ],
        )
    }

    /// Copies the results of the last [`Self::logits`] back: for the
    /// `k`-th row computed, `outputs[group[k]]` (the arg-max for a greedy
    /// row, else the logits).
    fn collect(
        &self,
        work: &Workspace<G>,
        group: &[usize],
        wanted: &[Wanted],
        outputs: &mut [Option<RowOutput>],
    ) -> Result<(), BackendError> {
        let vocab = self.config.vocab;
        let best = work
            .best
            .read(&self.gpu, 0..group.len())
            .map_err(device_error)?;
        // The logits rows wanted whole, read in one copy of their span.
        let sampled: Vec<usize> = (0..group.len())
            .filter(|&k| !wanted[group[k]].greedy)
            .collect();
        let (first, logits) = match (sampled.first(), sampled.last()) {
            (Some(&first), Some(&last)) => (
                first,
                work.logits
                    .read(&self.gpu, first * vocab..(last + 1) * vocab)
                    .map_err(device_error)?,
            ),
            _ => (0, Vec::new()),
        };
        for (k, &j) in group.iter().enumerate() {
            outputs[j] = Some(if wanted[j].greedy {
                RowOutput::ArgMax(best[k] as u32)
            } else {
                let at = (k - first) * vocab;
                RowOutput::Logits(logits[at..at + vocab].to_vec())
            });
        }
        Ok(())
    }

    /// A decode step (one token of each of `n` sequences, every row
    /// wanted in order), padded to `batch` rows and run through a graph
    /// when one is captured or can be.
    fn decode(
        &self,
        state: &mut StepState<G>,
        plan: &mut StepPlan,
        batch: usize,
        wanted: &[Wanted],
        outputs: &mut [Option<RowOutput>],
    ) -> Result<(), BackendError> {
        let StepState { work, graphs } = state;
        let scratch = cache::lock(&self.book).scratch();
        plan.pad(batch, scratch, work.table_entries as i32 - 1);
        work.upload(&self.gpu, plan, 0..batch)?;
        match graphs.plan(batch) {
            Decode::Replay(graph) => self.gpu.replay(graph).map_err(device_error)?,
            Decode::Capture => match self.capture(work, batch) {
                Ok(graph) => {
                    graphs.insert(batch, graph);
                    let graph = graphs.replay(batch).expect("just inserted");
                    self.gpu.replay(graph).map_err(device_error)?;
                }
                Err(reason) => {
                    tracing::warn!(
                        device = %self.gpu.name(),
                        %reason,
                        "cannot capture a decode graph; decode steps run eagerly"
                    );
                    graphs.set_enabled(false);
                    self.layers(work, batch)?;
                    self.logits(work, batch, true)?;
                }
            },
            Decode::Eager => {
                self.layers(work, batch)?;
                self.logits(work, batch, true)?;
            }
        }
        let group: Vec<usize> = (0..wanted.len()).collect();
        self.collect(work, &group, wanted, outputs)
    }

    /// A decode step of `batch` rows as a graph (recorded, not run). On
    /// failure the device is out of capture again and nothing ran.
    fn capture(&self, work: &Workspace<G>, batch: usize) -> Result<G::Graph, String> {
        self.gpu
            .begin_capture()
            .map_err(|e| format!("begin capture: {e}"))?;
        let recorded = self
            .layers(work, batch)
            .and_then(|()| self.logits(work, batch, true));
        let ended = self.gpu.end_capture();
        recorded.map_err(|e| format!("while capturing: {e}"))?;
        ended.map_err(|e| format!("end capture: {e}"))
    }

    /// Any step, eagerly, in passes of at most `work.rows` tokens (a pass
    /// sees the keys and values the earlier ones wrote).
    fn eager(
        &self,
        work: &Workspace<G>,
        plan: &StepPlan,
        wanted: &[Wanted],
        outputs: &mut [Option<RowOutput>],
    ) -> Result<(), BackendError> {
        let n = plan.tokens.len();
        let mut start = 0;
        while start < n {
            let end = (start + work.rows).min(n);
            work.upload(&self.gpu, plan, start..end)?;
            self.layers(work, end - start)?;
            let in_pass: Vec<usize> = (0..wanted.len())
                .filter(|&j| (start..end).contains(&wanted[j].row))
                .collect();
            for group in in_pass.chunks(LOGIT_ROWS) {
                let rows: Vec<i32> = group
                    .iter()
                    .map(|&j| (wanted[j].row - start) as i32)
                    .collect();
                work.wanted
                    .write(&self.gpu, 0, &rows)
                    .map_err(device_error)?;
                self.logits(work, group.len(), false)?;
                self.collect(work, group, wanted, outputs)?;
            }
            start = end;
        }
        Ok(())
    }
}

impl<G: Gpu> Workspace<G> {
    fn new(
        gpu: &G,
        c: &LlamaConfig,
        capacity: usize,
        block_floats: usize,
    ) -> Result<Self, GpuError> {
        let rows = MAX_STEP_TOKENS;
        let (e, kv, ff) = (c.embedding, c.kv_dim(), c.feed_forward);
        let table_entries = capacity + 1;
        let inputs = Buffer::zeros(gpu, TABLES * MAX_STEP_TOKENS + table_entries)?;
        inputs.write(gpu, TABLES * MAX_STEP_TOKENS + capacity, &[capacity as i32])?;
        let order: Vec<i32> = (0..LOGIT_ROWS as i32).collect();
        Ok(Workspace {
            rows,
            inputs,
            table_entries,
            wanted: Buffer::zeros(gpu, LOGIT_ROWS)?,
            identity: Buffer::from_host(gpu, &order)?,
            x: Buffer::zeros(gpu, rows * e)?,
            h: Buffer::zeros(gpu, rows * e)?,
            qkv: Buffer::zeros(gpu, rows * (e + 2 * kv))?,
            attn: Buffer::zeros(gpu, rows * e)?,
            gate_up: Buffer::zeros(gpu, rows * 2 * ff)?,
            act: Buffer::zeros(gpu, rows * ff)?,
            normed: Buffer::zeros(gpu, LOGIT_ROWS * e)?,
            logits: Buffer::zeros(gpu, LOGIT_ROWS * c.vocab)?,
            best: Buffer::zeros(gpu, LOGIT_ROWS)?,
            pool: Buffer::zeros(gpu, (capacity + 1) * block_floats)?,
        })
    }

    /// The argument naming input `part` ([`TOKENS`], ..., [`TABLES`]).
    fn input(&self, part: usize) -> Karg {
        self.inputs.at(part * MAX_STEP_TOKENS)
    }

    /// Copies the block tables and the inputs of tokens `range` of `plan`,
    /// in one copy.
    fn upload(
        &self,
        gpu: &G,
        plan: &StepPlan,
        range: std::ops::Range<usize>,
    ) -> Result<(), BackendError> {
        assert!(range.len() <= self.rows && plan.tables.len() < self.table_entries);
        let mut staging = vec![0i32; TABLES * MAX_STEP_TOKENS + plan.tables.len()];
        for (part, host) in [
            (TOKENS, &plan.tokens),
            (POSITIONS, &plan.positions),
            (STARTS, &plan.starts),
            (SLOTS, &plan.slots),
        ] {
            let at = part * MAX_STEP_TOKENS;
            staging[at..at + range.len()].copy_from_slice(&host[range.clone()]);
        }
        staging[TABLES * MAX_STEP_TOKENS..].copy_from_slice(&plan.tables);
        self.inputs.write(gpu, 0, &staging).map_err(device_error)
    }
}

impl<G: Gpu> Backend for GpuBackend<G> {
    type Cache = CudaCache;

    fn device(&self) -> String {
        self.gpu.name()
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
            None => self.eager(&state.work, &plan, wanted, &mut outputs),
        };
        // Wait for the step, failed or not, so that its errors are its own
        // and not the next step's.
        let synchronized = self.gpu.synchronize().map_err(device_error);
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
