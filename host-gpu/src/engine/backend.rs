//! The seam between the engine and a device. The scheduler (batching,
//! sampling, streaming, cancellation, back-pressure) knows nothing about
//! where the forward pass runs: a [`Backend`] owns the weights and the KV
//! cache pool and runs one step for every live sequence. [`CpuBackend`] is
//! the CPU one; a CUDA backend implements the same trait.

use std::sync::Arc;

use crate::model::{KvCache, KvCacheFull, KvPool, LlamaConfig, LlamaModel};

/// Why a step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    CacheFull(#[from] KvCacheFull),
    /// The device failed (a CUDA error); the step's sequences fail, the
    /// engine keeps serving.
    #[error("device error: {0}")]
    Device(String),
}

/// A row of a step whose next token is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// Index into the step's tokens.
    pub row: usize,
    /// Only the largest logit's index is needed (plain greedy sampling), so
    /// a device may find it itself instead of sending every logit back.
    pub greedy: bool,
}

/// What a step gives back for one wanted row.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOutput {
    /// Every logit of the row (`vocab` of them).
    Logits(Vec<f32>),
    /// The index of the largest logit, ordered by `f32::total_cmp`, the
    /// first on ties (for a row asked for as greedy).
    ArgMax(u32),
}

/// One sequence's cached keys and values, wherever they live.
pub trait SequenceCache: Send {
    /// Positions filled.
    fn filled(&self) -> usize;
}

/// A device that runs a llama-family model for the scheduler.
pub trait Backend: Send + Sync + 'static {
    type Cache: SequenceCache;

    /// The device, as operators name it (`cpu`, `cuda:0`).
    fn device(&self) -> String;

    fn config(&self) -> &LlamaConfig;

    /// An empty cache for a new sequence, drawing on the backend's pool.
    fn new_cache(&self) -> Self::Cache;

    /// Capacity of the cache pool, in blocks of
    /// [`BLOCK_TOKENS`](crate::model::BLOCK_TOKENS) positions.
    fn cache_capacity_blocks(&self) -> usize;

    /// Bytes one cache block takes on the device.
    fn cache_block_bytes(&self) -> usize;

    /// Blocks held by live sequences.
    fn cache_blocks_in_use(&self) -> usize;

    /// Runs `tokens` (each at the next position of `caches[owners[i]]`) and
    /// returns one output per entry of `wanted`, in order.
    fn step(
        &self,
        tokens: &[u32],
        owners: &[usize],
        caches: &mut [&mut Self::Cache],
        wanted: &[Wanted],
    ) -> Result<Vec<RowOutput>, BackendError>;

    /// [`Backend::step`] returning every logit of the rows in `wanted`,
    /// `vocab` each, one after another.
    fn forward(
        &self,
        tokens: &[u32],
        owners: &[usize],
        caches: &mut [&mut Self::Cache],
        wanted: &[usize],
    ) -> Result<Vec<f32>, BackendError> {
        let rows: Vec<Wanted> = wanted
            .iter()
            .map(|&row| Wanted { row, greedy: false })
            .collect();
        let outputs = self.step(tokens, owners, caches, &rows)?;
        let mut logits = Vec::with_capacity(wanted.len() * self.config().vocab);
        for output in outputs {
            match output {
                RowOutput::Logits(row) => logits.extend_from_slice(&row),
                RowOutput::ArgMax(_) => {
                    unreachable!("no row was asked for as greedy")
                }
            }
        }
        Ok(logits)
    }
}

impl SequenceCache for KvCache {
    fn filled(&self) -> usize {
        self.len()
    }
}

/// The CPU backend: the model's forward pass on the host's cores, its cache
/// in host memory.
#[derive(Debug)]
pub struct CpuBackend {
    model: Arc<LlamaModel>,
    pool: Arc<KvPool>,
}

impl CpuBackend {
    /// The model with a KV pool of at most `cache_bytes`.
    pub fn new(model: Arc<LlamaModel>, cache_bytes: usize) -> Self {
        let pool = model.new_pool(cache_bytes);
        CpuBackend { model, pool }
    }
}

impl Backend for CpuBackend {
    type Cache = KvCache;

    fn device(&self) -> String {
        "cpu".into()
    }

    fn config(&self) -> &LlamaConfig {
        self.model.config()
    }

    fn new_cache(&self) -> KvCache {
        self.pool.new_cache()
    }

    fn cache_capacity_blocks(&self) -> usize {
        self.pool.capacity().unwrap_or(usize::MAX)
    }

    fn cache_block_bytes(&self) -> usize {
        self.pool.block_bytes()
    }

    fn cache_blocks_in_use(&self) -> usize {
        self.pool.blocks_in_use()
    }

    /// Every row gets its logits: on the CPU they are already in host
    /// memory, and the sampler takes the arg-max itself.
    fn step(
        &self,
        tokens: &[u32],
        owners: &[usize],
        caches: &mut [&mut KvCache],
        wanted: &[Wanted],
    ) -> Result<Vec<RowOutput>, BackendError> {
        let rows: Vec<usize> = wanted.iter().map(|w| w.row).collect();
        let logits = self.model.forward(tokens, owners, caches, &rows)?;
        let vocab = self.model.config().vocab;
        Ok(logits
            .chunks_exact(vocab)
            .map(|row| RowOutput::Logits(row.to_vec()))
            .collect())
    }

    fn forward(
        &self,
        tokens: &[u32],
        owners: &[usize],
        caches: &mut [&mut KvCache],
        wanted: &[usize],
    ) -> Result<Vec<f32>, BackendError> {
        Ok(self.model.forward(tokens, owners, caches, wanted)?)
    }
}
