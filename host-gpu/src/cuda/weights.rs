//! A model's weights on a GPU, uploaded once and shared by every sequence
//! ([`Weights`]).
//!
//! Products that read the same input are fused at upload: q, k and v are
//! one matrix stacked row-wise (one product instead of three), and so are
//! the feed-forward gate and up. GGUF blocks are decoded to the GPU's half (f16 or bf16) on the
//! device, straight into their part of the stacked matrix.

use super::backend::CudaLoadError;
use super::gpu::{Buffer, Gpu, Karg};
use crate::cpu::Matrix;
use crate::gguf::GgmlType;
use crate::model::{LlamaConfig, LlamaModel};

/// Threads per block of the element-wise kernels.
pub(super) const THREADS: u32 = 256;

/// The grid of one thread per element of `n` (blocks of [`THREADS`]).
pub(super) fn grid_1d(n: usize) -> Result<(u32, u32), CudaLoadError> {
    u32::try_from(n.div_ceil(THREADS as usize))
        .map(|blocks| (blocks.max(1), 1))
        .map_err(|_| CudaLoadError::Unsupported("tensors this large as"))
}

fn gpu_error(e: String) -> CudaLoadError {
    CudaLoadError::Cuda(e)
}

/// A weight matrix on the device, halves, `rows × cols` row-major.
pub(super) struct DeviceMatrix<G: Gpu> {
    pub data: Buffer<u16, G>,
    pub rows: usize,
    pub cols: usize,
}

pub(super) struct DeviceLayer<G: Gpu> {
    pub attn_norm: Buffer<f32, G>,
    /// q, k and v stacked: `(embedding + 2 kv_dim) × embedding`.
    pub qkv: DeviceMatrix<G>,
    /// The q|k|v biases (zeros for a part without one), when any exists.
    pub qkv_bias: Option<Buffer<f32, G>>,
    pub out: DeviceMatrix<G>,
    pub ffn_norm: Buffer<f32, G>,
    /// gate and up stacked: `2 feed_forward × embedding`.
    pub gate_up: DeviceMatrix<G>,
    pub down: DeviceMatrix<G>,
}

/// Every weight of a model on the device.
pub(super) struct Weights<G: Gpu> {
    pub embeddings: DeviceMatrix<G>,
    pub layers: Vec<DeviceLayer<G>>,
    pub output_norm: Buffer<f32, G>,
    /// `None`: tied to the embeddings.
    pub output: Option<DeviceMatrix<G>>,
    pub rope_frequencies: Buffer<f32, G>,
}

impl<G: Gpu> Weights<G> {
    /// The vocabulary projection.
    pub fn output(&self) -> &DeviceMatrix<G> {
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

/// The kernel that decodes weights of `ty` to halves.
fn dequant_kernel(ty: GgmlType) -> &'static str {
    match ty {
        GgmlType::F32 => "dequant_f32",
        GgmlType::F16 => "dequant_f16",
        GgmlType::Bf16 => "dequant_bf16",
        GgmlType::Q8_0 => "dequant_q8_0",
        GgmlType::Q4_0 => "dequant_q4_0",
        GgmlType::Q4_1 => "dequant_q4_1",
        GgmlType::Q4K => "dequant_q4_k",
        GgmlType::Q6K => "dequant_q6_k",
    }
}

/// `parts` (file matrices of equal width) decoded to halves one under another
/// in a single device matrix.
fn stacked<G: Gpu>(gpu: &G, parts: &[&Matrix]) -> Result<DeviceMatrix<G>, CudaLoadError> {
    let cols = parts[0].cols;
    if parts.iter().any(|m| m.cols != cols) {
        return Err(CudaLoadError::Unsupported(
            "fused products of unequal widths as",
        ));
    }
    let rows: usize = parts.iter().map(|m| m.rows).sum();
    grid_1d(rows * cols)?;
    let data = Buffer::<u16, G>::zeros(gpu, rows * cols).map_err(gpu_error)?;
    let mut at = 0;
    for m in parts {
        let n = m.rows * m.cols;
        let raw = Buffer::<u8, G>::from_host(gpu, &m.bytes[..]).map_err(gpu_error)?;
        // Reads the blocks of `n` weights (the whole tensor) and writes `n`
        // halves from `at` on; `raw` is released in stream order, after.
        gpu.launch(
            dequant_kernel(m.ty),
            grid_1d(n)?,
            THREADS,
            &[raw.arg(), data.at(at), Karg::I64(n as i64)],
        )
        .map_err(gpu_error)?;
        at += n;
    }
    Ok(DeviceMatrix { data, rows, cols })
}

fn vector<G: Gpu>(gpu: &G, v: &[f32]) -> Result<Buffer<f32, G>, CudaLoadError> {
    Buffer::from_host(gpu, v).map_err(gpu_error)
}

/// Deterministic random half weights, `cols` wide: one part of `rows` rows
/// in `[-scale, scale)` per `(rows, seed)`, stacked.
fn random<G: Gpu>(
    gpu: &G,
    parts: &[(usize, u32)],
    cols: usize,
    scale: f32,
) -> Result<DeviceMatrix<G>, CudaLoadError> {
    let rows: usize = parts.iter().map(|p| p.0).sum();
    let data = Buffer::<u16, G>::zeros(gpu, rows * cols).map_err(gpu_error)?;
    let mut at = 0;
    for &(part_rows, seed) in parts {
        let n = part_rows * cols;
        gpu.launch(
            "fill_random_half",
            grid_1d(n)?,
            THREADS,
            &[
                data.at(at),
                Karg::I64(n as i64),
                Karg::U32(seed),
                Karg::F32(scale),
            ],
        )
        .map_err(gpu_error)?;
        at += n;
    }
    Ok(DeviceMatrix { data, rows, cols })
}

/// Uploads `model`'s weights.
pub(super) fn upload<G: Gpu>(gpu: &G, model: &LlamaModel) -> Result<Weights<G>, CudaLoadError> {
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
            Some(vector(gpu, &bias)?)
        } else {
            None
        };
        layers.push(DeviceLayer {
            attn_norm: vector(gpu, l.attn_norm)?,
            qkv: stacked(gpu, &[l.q, l.k, l.v])?,
            qkv_bias,
            out: stacked(gpu, &[l.out])?,
            ffn_norm: vector(gpu, l.ffn_norm)?,
            gate_up: stacked(gpu, &[l.gate, l.up])?,
            down: stacked(gpu, &[l.down])?,
        });
    }
    let (embeddings, output_norm, output) = model.edge_weights();
    let tied = std::ptr::eq(embeddings.bytes.as_ptr(), output.bytes.as_ptr());
    Ok(Weights {
        embeddings: stacked(gpu, &[embeddings])?,
        layers,
        output_norm: vector(gpu, output_norm)?,
        output: if tied {
            None
        } else {
            Some(stacked(gpu, &[output])?)
        },
        rope_frequencies: vector(gpu, model.rope_frequencies())?,
    })
}

/// Deterministic random half weights of `config`'s shapes, made on the
/// device (benchmark shapes with no model file), embeddings tied.
pub(super) fn random_weights<G: Gpu>(
    gpu: &G,
    config: &LlamaConfig,
    seed: u32,
) -> Result<Weights<G>, CudaLoadError> {
    let (e, kv, ff) = (config.embedding, config.kv_dim(), config.feed_forward);
    let scale = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
    let ones = vec![1.0f32; e];
    let mut layers = Vec::new();
    for i in 0..config.layers as u32 {
        let s = |part: u32| seed.wrapping_add(i * 16).wrapping_add(part);
        layers.push(DeviceLayer {
            attn_norm: vector(gpu, &ones)?,
            qkv: random(gpu, &[(e, s(0)), (kv, s(1)), (kv, s(2))], e, scale(e))?,
            qkv_bias: None,
            out: random(gpu, &[(e, s(3))], e, scale(e))?,
            ffn_norm: vector(gpu, &ones)?,
            gate_up: random(gpu, &[(ff, s(4)), (ff, s(5))], e, scale(e))?,
            down: random(gpu, &[(e, s(6))], ff, scale(ff))?,
        });
    }
    Ok(Weights {
        embeddings: random(gpu, &[(config.vocab, seed.wrapping_sub(1))], e, 1.0)?,
        layers,
        output_norm: vector(gpu, &ones)?,
        output: None,
        rope_frequencies: vector(
            gpu,
            &crate::cpu::rope_frequencies(config.head_dim, config.rope_base),
        )?,
    })
}
