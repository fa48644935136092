//! [`CudaBackend`]: the llama forward pass on one CUDA device.
//!
//! Weights are uploaded once (their GGUF blocks, decoded to bf16 on the
//! device) and shared by every sequence. A step runs every token of every
//! live sequence together: embedding lookup, then per layer RMSNorm, one
//! cuBLAS product each for q, k, v (bf16 in, f32 out, f32 accumulation),
//! RoPE, the new keys and values written into the block pool, attention over
//! each sequence's blocks, the output product, RMSNorm, gate and up, SiLU,
//! down; then the final norm and the vocabulary product for the rows whose
//! logits are wanted. The KV pool is one device allocation of blocks laid
//! out like the CPU pool; which block belongs to whom is kept on the host.
//! Every CUDA call's result is checked and becomes a [`BackendError`].

use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::cublas::{CudaBlas, result as blas, sys as blas_sys};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use super::kernels::{self, KernelError};
use crate::engine::{Backend, BackendError, SequenceCache};
use crate::gguf::GgmlType;
use crate::model::{BLOCK_TOKENS, KvCacheFull, LlamaConfig, LlamaModel, RopeStyle, blocks_for};

/// Threads per block of the element-wise kernels.
const THREADS: u32 = 256;

fn device_error(e: impl std::fmt::Debug) -> BackendError {
    BackendError::Device(format!("{e:?}"))
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
}

fn cuda(e: impl std::fmt::Debug) -> CudaLoadError {
    CudaLoadError::Cuda(format!("{e:?}"))
}

/// The loaded kernels.
struct Functions {
    dequant: [CudaFunction; 7],
    fill_random: CudaFunction,
    embed: CudaFunction,
    rms_norm: CudaFunction,
    rms_norm_f32: CudaFunction,
    add_bias: CudaFunction,
    rope: CudaFunction,
    kv_write: CudaFunction,
    attention: CudaFunction,
    silu_mul: CudaFunction,
    add_into: CudaFunction,
    gather_rows: CudaFunction,
    to_bf16: CudaFunction,
}

/// A weight matrix on the device, bf16, `rows × cols` row-major.
struct DeviceMatrix {
    data: CudaSlice<u16>,
    rows: usize,
    cols: usize,
}

struct DeviceLayer {
    attn_norm: CudaSlice<f32>,
    q: DeviceMatrix,
    k: DeviceMatrix,
    v: DeviceMatrix,
    q_bias: Option<CudaSlice<f32>>,
    k_bias: Option<CudaSlice<f32>>,
    v_bias: Option<CudaSlice<f32>>,
    out: DeviceMatrix,
    ffn_norm: CudaSlice<f32>,
    gate: DeviceMatrix,
    up: DeviceMatrix,
    down: DeviceMatrix,
}

/// Which cache blocks are free (host-side bookkeeping of the device pool).
#[derive(Debug)]
struct BlockBook {
    free: Vec<u32>,
    capacity: usize,
}

/// One sequence's blocks in the device pool.
#[derive(Debug)]
pub struct CudaCache {
    book: Arc<Mutex<BlockBook>>,
    blocks: Vec<u32>,
    len: usize,
}

fn lock(book: &Mutex<BlockBook>) -> MutexGuard<'_, BlockBook> {
    book.lock().unwrap_or_else(|p| p.into_inner())
}

impl CudaCache {
    fn reserve(&mut self, positions: usize) -> Result<(), KvCacheFull> {
        let needed = blocks_for(positions).saturating_sub(self.blocks.len());
        if needed == 0 {
            return Ok(());
        }
        let mut book = lock(&self.book);
        if book.free.len() < needed {
            return Err(KvCacheFull {
                capacity: book.capacity,
            });
        }
        let at = book.free.len() - needed;
        self.blocks.extend(book.free.drain(at..));
        Ok(())
    }
}

impl SequenceCache for CudaCache {
    fn filled(&self) -> usize {
        self.len
    }
}

impl Drop for CudaCache {
    fn drop(&mut self) {
        lock(&self.book).free.append(&mut self.blocks);
    }
}

/// A llama-family model on one CUDA device.
pub struct CudaBackend {
    ordinal: usize,
    config: LlamaConfig,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    f: Functions,
    embeddings: DeviceMatrix,
    layers: Vec<DeviceLayer>,
    output_norm: CudaSlice<f32>,
    /// `None`: tied to the embeddings.
    output: Option<DeviceMatrix>,
    rope_frequencies: CudaSlice<f32>,
    book: Arc<Mutex<BlockBook>>,
    /// Every cache block; one step at a time writes it.
    pool: Mutex<CudaSlice<f32>>,
    block_floats: usize,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("device", &self.ordinal)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// One thread per element. Panics past 2^32 blocks of threads, which no
/// tensor reaches (checked at upload; steps are far smaller).
fn launch_1d(n: usize) -> LaunchConfig {
    let blocks = u32::try_from(n.div_ceil(THREADS as usize)).expect("checked at upload");
    LaunchConfig {
        grid_dim: (blocks.max(1), 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn per_row(rows: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// What sets up the device, shared by the file and random constructors.
struct Device {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    f: Functions,
}

fn open(ordinal: usize) -> Result<Device, CudaLoadError> {
    let context = CudaContext::new(ordinal).map_err(cuda)?;
    let (major, minor) = context.compute_capability().map_err(cuda)?;
    let compiled = kernels::compile(&format!("sm_{major}{minor}"))?;
    let image = if compiled.cubin.is_empty() {
        Ptx::from_src(compiled.ptx)
    } else {
        Ptx::from_binary(compiled.cubin)
    };
    let module = context.load_module(image).map_err(cuda)?;
    let load = |name: &str| module.load_function(name).map_err(cuda);
    let f = Functions {
        dequant: [
            load("dequant_f32")?,
            load("dequant_f16")?,
            load("dequant_q8_0")?,
            load("dequant_q4_0")?,
            load("dequant_q4_1")?,
            load("dequant_q4_k")?,
            load("dequant_q6_k")?,
        ],
        fill_random: load("fill_random_bf16")?,
        embed: load("embed")?,
        rms_norm: load("rms_norm")?,
        rms_norm_f32: load("rms_norm_f32")?,
        add_bias: load("add_bias")?,
        rope: load("rope")?,
        kv_write: load("kv_write")?,
        attention: load("attention")?,
        silu_mul: load("silu_mul")?,
        add_into: load("add_into")?,
        gather_rows: load("gather_rows")?,
        to_bf16: load("to_bf16")?,
    };
    let stream = context.default_stream();
    let blas = CudaBlas::new(Arc::clone(&stream)).map_err(cuda)?;
    Ok(Device { stream, blas, f })
}

impl Device {
    /// A file matrix decoded to bf16 on the device.
    fn upload(&self, m: &crate::cpu::Matrix) -> Result<DeviceMatrix, CudaLoadError> {
        let n = m.rows * m.cols;
        if n.div_ceil(THREADS as usize) > u32::MAX as usize {
            return Err(CudaLoadError::Unsupported("tensors this large as"));
        }
        let mut data = self.stream.alloc_zeros::<u16>(n).map_err(cuda)?;
        let kernel = match m.ty {
            GgmlType::Bf16 => {
                let bits: Vec<u16> = m
                    .bytes
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
                    .collect();
                self.stream
                    .memcpy_htod(&bits[..], &mut data)
                    .map_err(cuda)?;
                return Ok(DeviceMatrix {
                    data,
                    rows: m.rows,
                    cols: m.cols,
                });
            }
            GgmlType::F32 => &self.f.dequant[0],
            GgmlType::F16 => &self.f.dequant[1],
            GgmlType::Q8_0 => &self.f.dequant[2],
            GgmlType::Q4_0 => &self.f.dequant[3],
            GgmlType::Q4_1 => &self.f.dequant[4],
            GgmlType::Q4K => &self.f.dequant[5],
            GgmlType::Q6K => &self.f.dequant[6],
        };
        let raw = self.stream.clone_htod(&m.bytes[..]).map_err(cuda)?;
        let count = n as i64;
        let mut launch = self.stream.launch_builder(kernel);
        launch.arg(&raw).arg(&mut data).arg(&count);
        // SAFETY: the kernel reads `n` weights' blocks from `raw` (its
        // whole tensor) and writes `n` bf16 values into `data`.
        unsafe { launch.launch(launch_1d(n)) }.map_err(cuda)?;
        Ok(DeviceMatrix {
            data,
            rows: m.rows,
            cols: m.cols,
        })
    }

    fn vector(&self, v: &[f32]) -> Result<CudaSlice<f32>, CudaLoadError> {
        self.stream.clone_htod(v).map_err(cuda)
    }

    /// A matrix of deterministic random bf16 weights in `[-scale, scale)`.
    fn random(
        &self,
        rows: usize,
        cols: usize,
        seed: u32,
        scale: f32,
    ) -> Result<DeviceMatrix, CudaLoadError> {
        let n = rows * cols;
        let mut data = self.stream.alloc_zeros::<u16>(n).map_err(cuda)?;
        let count = n as i64;
        let mut launch = self.stream.launch_builder(&self.f.fill_random);
        launch.arg(&mut data).arg(&count).arg(&seed).arg(&scale);
        // SAFETY: writes `n` values into `data`, which holds `n`.
        unsafe { launch.launch(launch_1d(n)) }.map_err(cuda)?;
        Ok(DeviceMatrix { data, rows, cols })
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
        let device = open(ordinal)?;
        let mut layers = Vec::new();
        for l in model.layer_weights() {
            let optional = |b: Option<&[f32]>| b.map(|b| device.vector(b)).transpose();
            layers.push(DeviceLayer {
                attn_norm: device.vector(l.attn_norm)?,
                q: device.upload(l.q)?,
                k: device.upload(l.k)?,
                v: device.upload(l.v)?,
                q_bias: optional(l.q_bias)?,
                k_bias: optional(l.k_bias)?,
                v_bias: optional(l.v_bias)?,
                out: device.upload(l.out)?,
                ffn_norm: device.vector(l.ffn_norm)?,
                gate: device.upload(l.gate)?,
                up: device.upload(l.up)?,
                down: device.upload(l.down)?,
            });
        }
        let (embeddings, output_norm, output) = model.edge_weights();
        let tied = std::ptr::eq(embeddings.bytes.as_ptr(), output.bytes.as_ptr());
        let embeddings_on_device = device.upload(embeddings)?;
        let output = if tied {
            None
        } else {
            Some(device.upload(output)?)
        };
        let output_norm = device.vector(output_norm)?;
        let rope = device.vector(model.rope_frequencies())?;
        Self::assemble(
            device,
            ordinal,
            model.config().clone(),
            embeddings_on_device,
            layers,
            output_norm,
            output,
            rope,
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
        let device = open(ordinal)?;
        let (e, kv, ff) = (config.embedding, config.kv_dim(), config.feed_forward);
        let scale = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
        let ones = vec![1.0f32; e];
        let mut layers = Vec::new();
        for i in 0..config.layers as u32 {
            let s = seed.wrapping_add(i * 16);
            layers.push(DeviceLayer {
                attn_norm: device.vector(&ones)?,
                q: device.random(e, e, s, scale(e))?,
                k: device.random(kv, e, s + 1, scale(e))?,
                v: device.random(kv, e, s + 2, scale(e))?,
                q_bias: None,
                k_bias: None,
                v_bias: None,
                out: device.random(e, e, s + 3, scale(e))?,
                ffn_norm: device.vector(&ones)?,
                gate: device.random(ff, e, s + 4, scale(e))?,
                up: device.random(ff, e, s + 5, scale(e))?,
                down: device.random(e, ff, s + 6, scale(ff))?,
            });
        }
        let embeddings = device.random(config.vocab, e, seed.wrapping_sub(1), 1.0)?;
        let output_norm = device.vector(&ones)?;
        let rope = device.vector(&crate::cpu::rope_frequencies(
            config.head_dim,
            config.rope_base,
        ))?;
        Self::assemble(
            device,
            ordinal,
            config,
            embeddings,
            layers,
            output_norm,
            None,
            rope,
            cache_bytes,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        device: Device,
        ordinal: usize,
        config: LlamaConfig,
        embeddings: DeviceMatrix,
        layers: Vec<DeviceLayer>,
        output_norm: CudaSlice<f32>,
        output: Option<DeviceMatrix>,
        rope_frequencies: CudaSlice<f32>,
        cache_bytes: usize,
    ) -> Result<Self, CudaLoadError> {
        if config.head_dim > 1024 || !config.heads.is_multiple_of(config.kv_heads) {
            return Err(CudaLoadError::Unsupported("this head layout of"));
        }
        let block_floats = config.layers * 2 * BLOCK_TOKENS * config.kv_dim();
        let capacity = (cache_bytes / (block_floats * 4)).max(1);
        let pool = device
            .stream
            .alloc_zeros::<f32>(capacity * block_floats)
            .map_err(cuda)?;
        device.stream.synchronize().map_err(cuda)?;
        Ok(CudaBackend {
            ordinal,
            config,
            stream: device.stream,
            blas: device.blas,
            f: device.f,
            embeddings,
            layers,
            output_norm,
            output,
            rope_frequencies,
            book: Arc::new(Mutex::new(BlockBook {
                free: (0..capacity as u32).rev().collect(),
                capacity,
            })),
            pool: Mutex::new(pool),
            block_floats,
        })
    }

    /// Bytes of weights one step reads (for bandwidth figures).
    pub fn weight_bytes(&self) -> usize {
        let layer: usize = self
            .layers
            .iter()
            .flat_map(|l| [&l.q, &l.k, &l.v, &l.out, &l.gate, &l.up, &l.down])
            .map(|m| m.rows * m.cols * 2)
            .sum();
        let output = self.output.as_ref().unwrap_or(&self.embeddings);
        layer + output.rows * output.cols * 2
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// `y[n × rows] = x[n × cols] · Wᵀ` (bf16 in, f32 out and accumulation).
    fn linear(
        &self,
        w: &DeviceMatrix,
        x: &CudaSlice<u16>,
        n: usize,
        y: &mut CudaSlice<f32>,
    ) -> Result<(), BackendError> {
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (w_ptr, _w) = w.data.device_ptr(&self.stream);
        let (x_ptr, _x) = x.device_ptr(&self.stream);
        let (y_ptr, _y) = y.device_ptr_mut(&self.stream);
        // Row-major W (rows × cols) is column-major Wᵀ; the product in
        // column-major terms is Y (rows × n) = Wᵀᵀ · X.
        // SAFETY: the pointers hold rows·cols, n·cols and n·rows elements.
        unsafe {
            blas::gemm_ex(
                *self.blas.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_T,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                w.rows as i32,
                n as i32,
                w.cols as i32,
                (&alpha) as *const f32 as *const _,
                w_ptr as *const _,
                blas_sys::cudaDataType_t::CUDA_R_16BF,
                w.cols as i32,
                x_ptr as *const _,
                blas_sys::cudaDataType_t::CUDA_R_16BF,
                w.cols as i32,
                (&beta) as *const f32 as *const _,
                y_ptr as *mut _,
                blas_sys::cudaDataType_t::CUDA_R_32F,
                w.rows as i32,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(device_error)
    }

    fn alloc<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        n: usize,
    ) -> Result<CudaSlice<T>, BackendError> {
        self.stream.alloc_zeros::<T>(n.max(1)).map_err(device_error)
    }

    fn upload_i32(&self, v: &[i32]) -> Result<CudaSlice<i32>, BackendError> {
        self.stream.clone_htod(v).map_err(device_error)
    }

    /// Launches `f`, its arguments pushed by `args` (borrowed for the call).
    fn run<'a>(
        &'a self,
        f: &'a CudaFunction,
        cfg: LaunchConfig,
        args: impl FnOnce(&mut cudarc::driver::LaunchArgs<'a>),
    ) -> Result<(), BackendError> {
        let mut launch = self.stream.launch_builder(f);
        args(&mut launch);
        // SAFETY: every call site passes buffers sized for its grid.
        unsafe { launch.launch(cfg) }
            .map(|_| ())
            .map_err(device_error)
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
        CudaCache {
            book: Arc::clone(&self.book),
            blocks: Vec::new(),
            len: 0,
        }
    }

    fn cache_capacity_blocks(&self) -> usize {
        lock(&self.book).capacity
    }

    fn cache_block_bytes(&self) -> usize {
        self.block_floats * 4
    }

    fn cache_blocks_in_use(&self) -> usize {
        let book = lock(&self.book);
        book.capacity - book.free.len()
    }

    fn forward(
        &self,
        tokens: &[u32],
        owners: &[usize],
        caches: &mut [&mut CudaCache],
        wanted: &[usize],
    ) -> Result<Vec<f32>, BackendError> {
        let c = &self.config;
        let (n, e, kv, ff) = (tokens.len(), c.embedding, c.kv_dim(), c.feed_forward);
        assert_eq!(owners.len(), n);
        let mut next: Vec<usize> = caches.iter().map(|cache| cache.len).collect();
        let positions: Vec<i32> = owners
            .iter()
            .map(|&s| {
                next[s] += 1;
                (next[s] - 1) as i32
            })
            .collect();
        for (cache, &end) in caches.iter_mut().zip(&next) {
            cache.reserve(end)?;
        }
        // Block tables of the step's sequences, concatenated; each token's
        // start in them, and the pool slot its key and value go to.
        let mut tables = Vec::new();
        let mut starts = Vec::with_capacity(caches.len());
        for cache in caches.iter() {
            starts.push(tables.len() as i32);
            tables.extend(cache.blocks.iter().map(|&b| b as i32));
        }
        let table_start: Vec<i32> = owners.iter().map(|&s| starts[s]).collect();
        let slots: Vec<i32> = owners
            .iter()
            .zip(&positions)
            .map(|(&s, &p)| {
                let p = p as usize;
                caches[s].blocks[p / BLOCK_TOKENS] as i32 * BLOCK_TOKENS as i32
                    + (p % BLOCK_TOKENS) as i32
            })
            .collect();
        let token_ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let wanted_rows: Vec<i32> = wanted.iter().map(|&w| w as i32).collect();

        let d_tokens = self.upload_i32(&token_ids)?;
        let d_positions = self.upload_i32(&positions)?;
        let d_tables = self.upload_i32(&tables)?;
        let d_starts = self.upload_i32(&table_start)?;
        let d_slots = self.upload_i32(&slots)?;

        let mut x = self.alloc::<f32>(n * e)?;
        let mut h = self.alloc::<u16>(n * e)?;
        let mut q = self.alloc::<f32>(n * e)?;
        let mut k = self.alloc::<f32>(n * kv)?;
        let mut v = self.alloc::<f32>(n * kv)?;
        let mut attn = self.alloc::<u16>(n * e)?;
        let mut proj = self.alloc::<f32>(n * e)?;
        let mut gate = self.alloc::<f32>(n * ff)?;
        let mut up = self.alloc::<f32>(n * ff)?;
        let mut act = self.alloc::<u16>(n * ff)?;
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());

        let (dim, kv_dim, heads, kv_heads, head_dim) = (
            e as i32,
            kv as i32,
            c.heads as i32,
            c.kv_heads as i32,
            c.head_dim as i32,
        );
        let (layers, eps) = (c.layers as i32, c.rms_eps);
        let halves = i32::from(c.rope_style == RopeStyle::Halves);
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        let norm_threads = 256u32;
        let f = &self.f;

        self.run(&f.embed, per_row(n, norm_threads), |l| {
            l.arg(&self.embeddings.data)
                .arg(&d_tokens)
                .arg(&mut x)
                .arg(&dim);
        })?;
        for (li, layer) in self.layers.iter().enumerate() {
            let li = li as i32;
            self.run(&f.rms_norm, per_row(n, norm_threads), |l| {
                l.arg(&x)
                    .arg(&layer.attn_norm)
                    .arg(&mut h)
                    .arg(&dim)
                    .arg(&eps);
            })?;
            self.linear(&layer.q, &h, n, &mut q)?;
            self.linear(&layer.k, &h, n, &mut k)?;
            self.linear(&layer.v, &h, n, &mut v)?;
            for (out, bias, cols) in [
                (&mut q, &layer.q_bias, e),
                (&mut k, &layer.k_bias, kv),
                (&mut v, &layer.v_bias, kv),
            ] {
                if let Some(bias) = bias {
                    let (cols, total) = (cols as i32, (n * cols) as i64);
                    self.run(&f.add_bias, launch_1d(n * cols as usize), |l| {
                        l.arg(out).arg(bias).arg(&cols).arg(&total);
                    })?;
                }
            }
            for (rows, row_heads) in [(&mut q, heads), (&mut k, kv_heads)] {
                self.run(&f.rope, per_row(n, 128), |l| {
                    l.arg(rows)
                        .arg(&d_positions)
                        .arg(&self.rope_frequencies)
                        .arg(&row_heads)
                        .arg(&head_dim)
                        .arg(&halves);
                })?;
            }
            self.run(&f.kv_write, per_row(n, 128), |l| {
                l.arg(&k)
                    .arg(&v)
                    .arg(&mut *pool)
                    .arg(&d_slots)
                    .arg(&li)
                    .arg(&layers)
                    .arg(&kv_dim);
            })?;
            let attention = LaunchConfig {
                grid_dim: (n as u32, c.heads as u32, 1),
                block_dim: ((c.head_dim as u32).div_ceil(32) * 32, 1, 1),
                shared_mem_bytes: 0,
            };
            self.run(&f.attention, attention, |l| {
                l.arg(&q)
                    .arg(&*pool)
                    .arg(&d_tables)
                    .arg(&d_starts)
                    .arg(&d_positions)
                    .arg(&mut attn)
                    .arg(&heads)
                    .arg(&kv_heads)
                    .arg(&head_dim)
                    .arg(&li)
                    .arg(&layers)
                    .arg(&scale);
            })?;
            self.linear(&layer.out, &attn, n, &mut proj)?;
            let total = (n * e) as i64;
            self.run(&f.add_into, launch_1d(n * e), |l| {
                l.arg(&mut x).arg(&proj).arg(&total);
            })?;
            self.run(&f.rms_norm, per_row(n, norm_threads), |l| {
                l.arg(&x)
                    .arg(&layer.ffn_norm)
                    .arg(&mut h)
                    .arg(&dim)
                    .arg(&eps);
            })?;
            self.linear(&layer.gate, &h, n, &mut gate)?;
            self.linear(&layer.up, &h, n, &mut up)?;
            let total_ff = (n * ff) as i64;
            self.run(&f.silu_mul, launch_1d(n * ff), |l| {
                l.arg(&gate).arg(&up).arg(&mut act).arg(&total_ff);
            })?;
            self.linear(&layer.down, &act, n, &mut proj)?;
            self.run(&f.add_into, launch_1d(n * e), |l| {
                l.arg(&mut x).arg(&proj).arg(&total);
            })?;
        }
        drop(pool);

        let w = wanted.len();
        if w == 0 {
            // A prefill-only step: wait for it, so that its errors are its own.
            self.stream.synchronize().map_err(device_error)?;
            for (cache, &end) in caches.iter_mut().zip(&next) {
                cache.len = end;
            }
            return Ok(Vec::new());
        }
        let d_wanted = self.upload_i32(&wanted_rows)?;
        let mut last = self.alloc::<f32>(w * e)?;
        self.run(&f.gather_rows, per_row(w, norm_threads), |l| {
            l.arg(&x).arg(&d_wanted).arg(&mut last).arg(&dim);
        })?;
        let mut normed = self.alloc::<f32>(w * e)?;
        self.run(&f.rms_norm_f32, per_row(w, norm_threads), |l| {
            l.arg(&last)
                .arg(&self.output_norm)
                .arg(&mut normed)
                .arg(&dim)
                .arg(&eps);
        })?;
        let mut normed_bf16 = self.alloc::<u16>(w * e)?;
        let count = (w * e) as i64;
        self.run(&f.to_bf16, launch_1d(w * e), |l| {
            l.arg(&normed).arg(&mut normed_bf16).arg(&count);
        })?;
        let output = self.output.as_ref().unwrap_or(&self.embeddings);
        let mut logits = self.alloc::<f32>(w * c.vocab)?;
        self.linear(output, &normed_bf16, w, &mut logits)?;
        let logits = self.stream.clone_dtoh(&logits).map_err(device_error)?;
        for (cache, &end) in caches.iter_mut().zip(&next) {
            cache.len = end;
        }
        Ok(logits)
    }
}
