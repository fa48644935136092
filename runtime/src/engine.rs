//! The wasmtime engine every sandbox runs on: its configuration, the epoch
//! ticker that bounds guest run time, and the on-disk cache of compiled
//! components keyed by digest.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use wasmtime::component::Component;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::digest::Digest;
use crate::error::LoadError;
use crate::limits::{
    EPOCH_TICK, MAX_CONCURRENT_INVOCATIONS, MAX_INSTANCES, MAX_MEMORIES, MAX_MEMORY_CEILING,
    MAX_TABLE_ELEMENTS, MAX_TABLES, MAX_WASM_STACK,
};

/// Bytes of each linear memory reset in place (only the pages the guest
/// dirtied, found with the `PAGEMAP_SCAN` ioctl where the kernel has it)
/// instead of being unmapped: reuse of a slot then costs no page faults and,
/// above all, no cross-core TLB shootdown.
const MEMORY_KEEP_RESIDENT: usize = 4 << 20;

/// Bytes of each table reset with `memset` instead of `madvise`.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Decommits gathered before the pooling allocator flushes them together.
const DECOMMIT_BATCH: usize = 16;

/// The wasmtime configuration every sandbox runs under: component model on,
/// epoch interruption, no threads (wasmtime is built without the `threads`
/// feature, so no guest can spawn any), bounded guest stacks and a pooling
/// allocator sized for [`MAX_CONCURRENT_INVOCATIONS`] live sandboxes.
///
/// Public so that benchmarks can compare sovra against bare wasmtime on
/// identical engine settings.
pub fn engine_config() -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config()));
    config
}

pub(crate) fn new_engine() -> wasmtime::Result<Engine> {
    Engine::new(&engine_config())
}

/// Compiles a component into the compiled-code cache under `dir`, where a
/// [`crate::Runtime`] with that `compiled_dir` finds it instead of compiling.
///
/// Meant for a separate, resource-limited worker process, so that a
/// component crafted to exhaust the compiler cannot take the node down. The
/// engine here allocates instances on demand (the pooling allocator's
/// address-space reservation would not fit a memory-limited worker); that
/// choice does not change compiled code, so the artifact is the runtime's.
pub fn precompile_into(dir: &std::path::Path, bytes: &[u8]) -> Result<(), LoadError> {
    let mut config = engine_config();
    config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
    let engine = Engine::new(&config).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
    let digest = Digest::of(bytes);
    let cache = CompileCache::new(Some(dir.to_owned()));
    let path = cache
        .path_for(&engine, &digest)
        .expect("the cache has a directory");
    let component = compile(&engine, bytes)?;
    cache
        .store(&path, &component)
        .map_err(|e| LoadError::Compile(format!("cannot store the compiled component: {e:#}")))
}

fn pooling_config() -> PoolingAllocationConfig {
    let slots = MAX_CONCURRENT_INVOCATIONS;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots * 8)
        .total_memories(slots * 2)
        .total_tables(slots * 8)
        .total_stacks(slots)
        .max_memories_per_component(MAX_MEMORIES as u32)
        .max_tables_per_component(MAX_TABLES as u32)
        .max_core_instances_per_component(MAX_INSTANCES as u32)
        .max_memory_size(MAX_MEMORY_CEILING as usize)
        .table_elements(MAX_TABLE_ELEMENTS)
        .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
        .pagemap_scan(Enabled::Auto)
        .table_keep_resident(TABLE_KEEP_RESIDENT)
        .decommit_batch_size(DECOMMIT_BATCH);
    pool
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
#[derive(Debug)]
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: &Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.clone();
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sovra-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Acquire) {
                    std::thread::park_timeout(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Compiled components on disk, named by component digest and engine
/// compatibility, so a component is compiled once per engine build.
#[derive(Debug)]
pub(crate) struct CompileCache {
    dir: Option<PathBuf>,
}

impl CompileCache {
    /// A cache under `dir`, or none (always compile) when `dir` is `None`.
    pub(crate) fn new(dir: Option<PathBuf>) -> Self {
        CompileCache { dir }
    }

    /// The compiled component for `bytes`, from the cache or freshly compiled.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<Component, LoadError> {
        let Some(path) = self.path_for(engine, digest) else {
            return compile(engine, bytes);
        };
        if path.exists() {
            // SAFETY: files in the cache directory are written only by
            // `store` below, from components this engine compiled; wasmtime
            // also checks the engine compatibility header when loading.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unusable compiled component");
                }
            }
        }
        let component = compile(engine, bytes)?;
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache compiled component");
        }
        Ok(component)
    }

    pub(crate) fn path_for(&self, engine: &Engine, digest: &Digest) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Some(dir.join(format!(
            "{}-{:016x}.cwasm",
            digest.to_hex(),
            hasher.finish()
        )))
    }

    /// Writes atomically: a crash leaves either no file or a complete one.
    fn store(&self, path: &std::path::Path, component: &Component) -> anyhow::Result<()> {
        let bytes = component
            .serialize()
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let dir = path.parent().expect("cache paths have a parent");
        std::fs::create_dir_all(dir)?;
        let temporary = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&temporary, bytes)?;
        std::fs::rename(&temporary, path)?;
        Ok(())
    }
}

fn compile(engine: &Engine, bytes: &[u8]) -> Result<Component, LoadError> {
    Component::new(engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))
}
