//! The device side of a loaded model: the CUDA context, stream, cuBLAS
//! handle and kernels ([`Device`]), and the weights uploaded once and shared
//! by every sequence ([`Weights`]).
//!
//! Products that read the same input are fused at upload: q, k and v are
//! one matrix stacked row-wise (one product instead of three), and so are
//! the feed-forward gate and up. GGUF blocks are decoded to bf16 on the
//! device, straight into their part of the stacked matrix.

use std::sync::Arc;

use cudarc::cublas::{CudaBlas, result as blas, sys as blas_sys};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut,
    LaunchArgs, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use super::backend::CudaLoadError;
use super::kernels;
use crate::cpu::Matrix;
use crate::engine::BackendError;
use crate::gguf::GgmlType;
use crate::model::{LlamaConfig, LlamaModel};

/// Threads per block of the element-wise kernels.
pub(super) const THREADS: u32 = 256;

/// Bytes of workspace cuBLAS gets up front (NVIDIA's figure for Hopper),
/// so that it never allocates inside a captured CUDA graph.
const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

pub(super) fn cuda(e: impl std::fmt::Debug) -> CudaLoadError {
    CudaLoadError::Cuda(format!("{e:?}"))
}

pub(super) fn device_error(e: impl std::fmt::Debug) -> BackendError {
    BackendError::Device(format!("{e:?}"))
}

/// One block of `threads` per row.
pub(super) fn per_row(rows: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One thread per element. Panics past 2^32 blocks of threads, which no
/// tensor reaches (checked at upload; steps are far smaller).
pub(super) fn launch_1d(n: usize) -> LaunchConfig {
    let blocks = u32::try_from(n.div_ceil(THREADS as usize)).expect("checked at upload");
    LaunchConfig {
        grid_dim: (blocks.max(1), 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The loaded kernels.
pub(super) struct Functions {
    pub dequant: [CudaFunction; 7],
    pub fill_random: CudaFunction,
    pub embed: CudaFunction,
    pub rms_norm: CudaFunction,
    pub rms_norm_rows: CudaFunction,
    pub add_bias: CudaFunction,
    pub rope: CudaFunction,
    pub kv_write: CudaFunction,
    pub attention: CudaFunction,
    pub silu_mul: CudaFunction,
    pub argmax_rows: CudaFunction,
}

/// A weight matrix on the device, bf16, `rows × cols` row-major.
pub(super) struct DeviceMatrix {
    pub data: CudaSlice<u16>,
    pub rows: usize,
    pub cols: usize,
}

pub(super) struct DeviceLayer {
    pub attn_norm: CudaSlice<f32>,
    /// q, k and v stacked: `(embedding + 2 kv_dim) × embedding`.
    pub qkv: DeviceMatrix,
    /// The q|k|v biases (zeros for a part without one), when any exists.
    pub qkv_bias: Option<CudaSlice<f32>>,
    pub out: DeviceMatrix,
    pub ffn_norm: CudaSlice<f32>,
    /// gate and up stacked: `2 feed_forward × embedding`.
    pub gate_up: DeviceMatrix,
    pub down: DeviceMatrix,
}

/// Every weight of a model on the device.
pub(super) struct Weights {
    pub embeddings: DeviceMatrix,
    pub layers: Vec<DeviceLayer>,
    pub output_norm: CudaSlice<f32>,
    /// `None`: tied to the embeddings.
    pub output: Option<DeviceMatrix>,
    pub rope_frequencies: CudaSlice<f32>,
}

impl Weights {
    /// The vocabulary projection.
    pub fn output(&self) -> &DeviceMatrix {
        self.output.as_ref().unwrap_or(&self.embeddings)
    }

    /// Bytes of weights one step reads (for bandwidth figures).
    pub fn bytes_per_step(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .flat_map(|l| [&l.qkv, &l.out, &l.gate_up, &l.down])
            .map(|m| m.rows * m.cols * 2)
            .sum();
        let output = self.output();
        layers + output.rows * output.cols * 2
    }
}

/// A CUDA device set up for one model: its own stream (graph capture needs
/// one that is not the legacy default stream), a cuBLAS handle with its
/// workspace, and the kernels compiled for the device's architecture.
pub(super) struct Device {
    pub stream: Arc<CudaStream>,
    pub blas: CudaBlas,
    pub f: Functions,
    module: Arc<CudaModule>,
    /// Kept alive for cuBLAS, which was handed its address.
    _blas_workspace: CudaSlice<u8>,
}

impl Device {
    pub fn open(ordinal: usize) -> Result<Device, CudaLoadError> {
        let context = CudaContext::new(ordinal).map_err(cuda)?;
        // One stream does all the work, in order, so cudarc's cross-stream
        // events are not needed; without them nothing but kernels and
        // copies reaches the stream, which graph capture requires.
        // SAFETY: called before any allocation, and the backend uses only
        // `stream`, so no buffer is ever used on two streams.
        unsafe { context.disable_event_tracking() };
        let (major, minor) = context.compute_capability().map_err(cuda)?;
        let compiled = kernels::compiled(&format!("sm_{major}{minor}"))?;
        let image = if compiled.cubin.is_empty() {
            Ptx::from_src(compiled.ptx.clone())
        } else {
            Ptx::from_binary(compiled.cubin.clone())
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
            rms_norm_rows: load("rms_norm_rows")?,
            add_bias: load("add_bias")?,
            rope: load("rope")?,
            kv_write: load("kv_write")?,
            attention: load("attention")?,
            silu_mul: load("silu_mul")?,
            argmax_rows: load("argmax_rows")?,
        };
        let stream = context.new_stream().map_err(cuda)?;
        let blas = CudaBlas::new(Arc::clone(&stream)).map_err(cuda)?;
        let mut workspace = stream
            .alloc_zeros::<u8>(CUBLAS_WORKSPACE_BYTES)
            .map_err(cuda)?;
        {
            let (pointer, _guard) = workspace.device_ptr_mut(&stream);
            // SAFETY: the handle is live; the workspace outlives it (both
            // are fields of the backend, the workspace dropped after use
            // ends with the stream's work).
            let status = unsafe {
                blas_sys::cublasSetWorkspace_v2(
                    *blas.handle(),
                    pointer as *mut _,
                    CUBLAS_WORKSPACE_BYTES,
                )
            };
            if status != blas_sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                return Err(CudaLoadError::Cuda(format!(
                    "cublasSetWorkspace: {status:?}"
                )));
            }
        }
        Ok(Device {
            stream,
            blas,
            f,
            module,
            _blas_workspace: workspace,
        })
    }

    /// A kernel of the module by name.
    pub fn function(&self, name: &str) -> Result<CudaFunction, cudarc::driver::DriverError> {
        self.module.load_function(name)
    }

    /// `y[n × rows] = x[n × cols] · Wᵀ`, or `y += ...` when `accumulate`
    /// (bf16 in, f32 out and accumulation).
    pub fn gemm(
        &self,
        w: &DeviceMatrix,
        x: &CudaSlice<u16>,
        n: usize,
        y: &mut CudaSlice<f32>,
        accumulate: bool,
    ) -> Result<(), BackendError> {
        let stream = &self.stream;
        let (alpha, beta) = (1.0f32, if accumulate { 1.0f32 } else { 0.0 });
        let (w_ptr, _w) = w.data.device_ptr(stream);
        let (x_ptr, _x) = x.device_ptr(stream);
        let (y_ptr, _y) = y.device_ptr_mut(stream);
        // Row-major W (rows × cols) is column-major Wᵀ; the product in
        // column-major terms is Y (rows × n) = Wᵀᵀ · X.
        // SAFETY: the pointers hold rows·cols, n·cols and n·rows elements
        // (workspace buffers hold at least n rows).
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

    /// Launches `f`, its arguments pushed by `args` (borrowed for the call).
    pub fn launch<'a>(
        &'a self,
        f: &'a CudaFunction,
        cfg: LaunchConfig,
        args: impl FnOnce(&mut LaunchArgs<'a>),
    ) -> Result<(), BackendError> {
        let mut launch = self.stream.launch_builder(f);
        args(&mut launch);
        // SAFETY: every call site passes buffers sized for its grid.
        unsafe { launch.launch(cfg) }
            .map(|_| ())
            .map_err(device_error)
    }

    /// `parts` (file matrices of equal width) decoded to bf16 one under
    /// another in a single device matrix.
    fn stacked(&self, parts: &[&Matrix]) -> Result<DeviceMatrix, CudaLoadError> {
        let cols = parts[0].cols;
        if parts.iter().any(|m| m.cols != cols) {
            return Err(CudaLoadError::Unsupported(
                "fused products of unequal widths as",
            ));
        }
        let rows: usize = parts.iter().map(|m| m.rows).sum();
        let total = rows * cols;
        if total.div_ceil(THREADS as usize) > u32::MAX as usize {
            return Err(CudaLoadError::Unsupported("tensors this large as"));
        }
        let mut data = self.stream.alloc_zeros::<u16>(total).map_err(cuda)?;
        let mut at = 0;
        for m in parts {
            let n = m.rows * m.cols;
            let mut part = data.slice_mut(at..at + n);
            at += n;
            let kernel = match m.ty {
                GgmlType::Bf16 => {
                    let bits: Vec<u16> = m
                        .bytes
                        .chunks_exact(2)
                        .map(|b| u16::from_le_bytes([b[0], b[1]]))
                        .collect();
                    self.stream
                        .memcpy_htod(&bits[..], &mut part)
                        .map_err(cuda)?;
                    continue;
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
            launch.arg(&raw).arg(&mut part).arg(&count);
            // SAFETY: the kernel reads the blocks of `n` weights from `raw`
            // (the whole tensor) and writes `n` bf16 values into `part`.
            unsafe { launch.launch(launch_1d(n)) }.map_err(cuda)?;
        }
        Ok(DeviceMatrix { data, rows, cols })
    }

    fn vector(&self, v: &[f32]) -> Result<CudaSlice<f32>, CudaLoadError> {
        self.stream.clone_htod(v).map_err(cuda)
    }

    /// Deterministic random bf16 weights, `cols` wide: one part of `rows`
    /// rows in `[-scale, scale)` per `(rows, seed)`, stacked.
    fn random(
        &self,
        parts: &[(usize, u32)],
        cols: usize,
        scale: f32,
    ) -> Result<DeviceMatrix, CudaLoadError> {
        let rows: usize = parts.iter().map(|p| p.0).sum();
        let mut data = self.stream.alloc_zeros::<u16>(rows * cols).map_err(cuda)?;
        let mut at = 0;
        for &(part_rows, seed) in parts {
            let n = part_rows * cols;
            let mut part = data.slice_mut(at..at + n);
            at += n;
            let count = n as i64;
            let mut launch = self.stream.launch_builder(&self.f.fill_random);
            launch.arg(&mut part).arg(&count).arg(&seed).arg(&scale);
            // SAFETY: writes `n` values into `part`, which holds `n`.
            unsafe { launch.launch(launch_1d(n)) }.map_err(cuda)?;
        }
        Ok(DeviceMatrix { data, rows, cols })
    }

    /// Uploads `model`'s weights.
    pub fn upload(&self, model: &LlamaModel) -> Result<Weights, CudaLoadError> {
        let config = model.config();
        let (e, kv) = (config.embedding, config.kv_dim());
        let mut layers = Vec::new();
        for l in model.layer_weights() {
            let any_bias = l.q_bias.is_some() || l.k_bias.is_some() || l.v_bias.is_some();
            let qkv_bias = if any_bias {
                let mut bias = Vec::with_capacity(e + 2 * kv);
                for (part, len) in [(l.q_bias, e), (l.k_bias, kv), (l.v_bias, kv)] {
                    match part {
                        Some(b) => bias.extend_from_slice(b),
                        None => bias.resize(bias.len() + len, 0.0),
                    }
                }
                Some(self.vector(&bias)?)
            } else {
                None
            };
            layers.push(DeviceLayer {
                attn_norm: self.vector(l.attn_norm)?,
                qkv: self.stacked(&[l.q, l.k, l.v])?,
                qkv_bias,
                out: self.stacked(&[l.out])?,
                ffn_norm: self.vector(l.ffn_norm)?,
                gate_up: self.stacked(&[l.gate, l.up])?,
                down: self.stacked(&[l.down])?,
            });
        }
        let (embeddings, output_norm, output) = model.edge_weights();
        let tied = std::ptr::eq(embeddings.bytes.as_ptr(), output.bytes.as_ptr());
        Ok(Weights {
            embeddings: self.stacked(&[embeddings])?,
            layers,
            output_norm: self.vector(output_norm)?,
            output: if tied {
                None
            } else {
                Some(self.stacked(&[output])?)
            },
            rope_frequencies: self.vector(model.rope_frequencies())?,
        })
    }

    /// Deterministic random bf16 weights of `config`'s shapes, made on the
    /// device (benchmark shapes with no model file), embeddings tied.
    pub fn random_weights(
        &self,
        config: &LlamaConfig,
        seed: u32,
    ) -> Result<Weights, CudaLoadError> {
        let (e, kv, ff) = (config.embedding, config.kv_dim(), config.feed_forward);
        let scale = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
        let ones = vec![1.0f32; e];
        let mut layers = Vec::new();
        for i in 0..config.layers as u32 {
            let s = |part: u32| seed.wrapping_add(i * 16).wrapping_add(part);
            layers.push(DeviceLayer {
                attn_norm: self.vector(&ones)?,
                qkv: self.random(&[(e, s(0)), (kv, s(1)), (kv, s(2))], e, scale(e))?,
                qkv_bias: None,
                out: self.random(&[(e, s(3))], e, scale(e))?,
                ffn_norm: self.vector(&ones)?,
                gate_up: self.random(&[(ff, s(4)), (ff, s(5))], e, scale(e))?,
                down: self.random(&[(e, s(6))], ff, scale(ff))?,
            });
        }
        Ok(Weights {
            embeddings: self.random(&[(config.vocab, seed.wrapping_sub(1))], e, 1.0)?,
            layers,
            output_norm: self.vector(&ones)?,
            output: None,
            rope_frequencies: self.vector(&crate::cpu::rope_frequencies(
                config.head_dim,
                config.rope_base,
            ))?,
        })
    }
}
