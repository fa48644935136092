//! Each kernel of `kernels/llama.cu`, and the cuBLAS product, against a
//! host reference on random inputs. The model-level checks (GPU logits
//! against the CPU's) say *that* a device is wrong; this says *which*
//! kernel, so that one call on a new GPU is enough to find a fault.
//!
//! The checks run the kernels through a [`KernelRunner`], which may be any
//! [`Gpu`] ([`check_kernels_on`]): a CUDA device ([`check_kernels`]), or,
//! where there is none, the kernels compiled for the CPU that the tests
//! build from the same source (`gpu-check/kernels/emulation/`), so their
//! logic is exercised in CI.
//!
//! The references are the CPU backend's own operations where it has them
//! (RMSNorm, RoPE, SiLU, softmax, the GGUF decoders, the sampler's arg-max)
//! and plain loops elsewhere; outputs the kernels write as f16 are
//! compared after rounding the reference the same way.

use half::{bf16, f16};

use sovra_gpu::cpu;
use sovra_gpu::cuda::{Buffer, CudaGpu, CudaLoadError, Gpu, Half, Karg};
use sovra_gpu::engine::relative_error;
use sovra_gpu::gguf::GgmlType;
use sovra_gpu::model::{BLOCK_TOKENS, RopeStyle};
use sovra_gpu::quant::dequantize;
use sovra_gpu::sampling::{self, SplitMix64};

/// One kernel's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelCheck {
    pub kernel: &'static str,
    /// The half the kernels were compiled for.
    pub half: Half,
    /// Largest difference from the reference over its largest magnitude
    /// (for `argmax_rows`: the share of rows that differ).
    pub error: f32,
    pub tolerance: f32,
    /// A launch or copy failed (the kernel's result was never read).
    pub failure: Option<String>,
}

impl KernelCheck {
    pub fn passed(&self) -> bool {
        self.failure.is_none() && self.error <= self.tolerance
    }
}

/// An argument of a kernel launch, held on the host: buffers go to the
/// device before the launch and come back after it.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    F32s(Vec<f32>),
    /// f16 or bf16 bits.
    U16s(Vec<u16>),
    I32s(Vec<i32>),
    Bytes(Vec<u8>),
    I32(i32),
    I64(i64),
    U32(u32),
    F32(f32),
}

impl Arg {
    fn f32s(&self) -> &[f32] {
        match self {
            Arg::F32s(v) => v,
            other => panic!("not an f32 buffer: {other:?}"),
        }
    }

    fn u16s(&self) -> &[u16] {
        match self {
            Arg::U16s(v) => v,
            other => panic!("not a u16 buffer: {other:?}"),
        }
    }

    fn i32s(&self) -> &[i32] {
        match self {
            Arg::I32s(v) => v,
            other => panic!("not an i32 buffer: {other:?}"),
        }
    }
}

/// Something that runs the kernels of `kernels/llama.cu`.
pub trait KernelRunner {
    /// The half its kernels write (as compiled).
    fn half(&self) -> Half;

    /// Runs `kernel` on a grid of `grid.0 × grid.1` blocks of `threads`
    /// threads, `args` in the kernel's order; afterwards each buffer holds
    /// what the kernel left in it.
    fn launch(
        &mut self,
        kernel: &str,
        grid: (u32, u32),
        threads: u32,
        args: &mut [Arg],
    ) -> Result<(), String>;
}

/// Tolerance for outputs written as halves: 11 bits of precision for f16,
/// 8 for bf16.
fn half_tolerance(half: Half) -> f32 {
    match half {
        Half::F16 => 2e-3,
        Half::Bf16 => 1e-2,
    }
}
/// Tolerance for f32 outputs (order of summation only).
const F32_TOLERANCE: f32 = 1e-4;
/// Tolerance for the product: exact f16 products, f32 sums in cuBLAS's order.
const GEMM_TOLERANCE: f32 = 1e-3;
/// Threads per block of the element-wise kernels (as the backend launches them).
const THREADS: u32 = 256;

/// Reproducible inputs.
struct Random(SplitMix64);

impl Random {
    /// `n` values uniform in [-1, 1).
    fn floats(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| 2.0 * self.0.next_f32() - 1.0).collect()
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.0.next_u64() as u8).collect()
    }
}

fn round_half(half: Half, v: f32) -> f32 {
    match half {
        Half::F16 => f16::from_f32(v).to_f32(),
        Half::Bf16 => bf16::from_f32(v).to_f32(),
    }
}

fn from_half_bits(half: Half, bits: &[u16]) -> Vec<f32> {
    bits.iter()
        .map(|&b| match half {
            Half::F16 => f16::from_bits(b).to_f32(),
            Half::Bf16 => bf16::from_bits(b).to_f32(),
        })
        .collect()
}

fn half_bits(half: Half, v: &[f32]) -> Vec<u16> {
    v.iter()
        .map(|&x| match half {
            Half::F16 => f16::from_f32(x).to_bits(),
            Half::Bf16 => bf16::from_f32(x).to_bits(),
        })
        .collect()
}

fn blocks_for(n: usize) -> u32 {
    n.div_ceil(THREADS as usize) as u32
}

type Outcome = Result<f32, String>;

/// A check: its name, its tolerance for the half in use, and what runs it.
type Check = (
    &'static str,
    fn(Half) -> f32,
    fn(&mut dyn KernelRunner, &mut Random) -> Outcome,
);

fn f32_tolerance(_: Half) -> f32 {
    F32_TOLERANCE
}

fn exact(_: Half) -> f32 {
    0.0
}

/// Every kernel's check, through `runner`.
pub fn check_kernels_with(runner: &mut dyn KernelRunner) -> Vec<KernelCheck> {
    let checks: [Check; 20] = [
        ("dequant_f32", half_tolerance, |k, r| {
            dequant(k, r, GgmlType::F32)
        }),
        ("dequant_f16", half_tolerance, |k, r| {
            dequant(k, r, GgmlType::F16)
        }),
        ("dequant_bf16", half_tolerance, |k, r| {
            dequant(k, r, GgmlType::Bf16)
        }),
        ("dequant_q8_0", half_tolerance, |k, r| {
            dequant(k, r, GgmlType::Q8_0)
        }),
        ("dequant_q4_0", half_tolerance, |k, r| {
            dequant(k, r, GgmlType::Q4_0)
        }),
        ("dequant_q4_1", half_tolerance, |k, r| {
            dequant(k, r, GgmlType::Q4_1)
        }),
        ("dequant_q4_k", half_tolerance, |k, r| {
            dequant(k, r, GgmlType::Q4K)
        }),
        ("dequant_q6_k", half_tolerance, |k, r| {
            dequant(k, r, GgmlType::Q6K)
        }),
        ("fill_random_half", exact, fill_random),
        ("embed", f32_tolerance, embed),
        ("rms_norm", half_tolerance, rms_norm),
        ("rms_norm_rows", half_tolerance, rms_norm_rows),
        ("add_bias", f32_tolerance, add_bias),
        ("rope (interleaved)", f32_tolerance, |k, r| {
            rope(k, r, RopeStyle::Interleaved)
        }),
        ("rope (halves)", f32_tolerance, |k, r| {
            rope(k, r, RopeStyle::Halves)
        }),
        (
            "kv_write + attention (head_dim 40)",
            half_tolerance,
            |k, r| attention(k, r, 40, &[33, 34]),
        ),
        (
            "kv_write + attention (head_dim 128)",
            half_tolerance,
            |k, r| attention(k, r, 128, &[33, 34]),
        ),
        (
            "kv_write + attention (head_dim 8, first positions)",
            half_tolerance,
            |k, r| attention(k, r, 8, &[0, 1]),
        ),
        ("silu_mul", half_tolerance, silu_mul),
        ("argmax_rows", exact, argmax),
    ];
    let mut random = Random(SplitMix64(0x5eed));
    let half = runner.half();
    checks
        .into_iter()
        .map(|(kernel, tolerance, check)| {
            let (error, failure) = match check(runner, &mut random) {
                Ok(error) => (error, None),
                Err(reason) => (f32::INFINITY, Some(reason)),
            };
            KernelCheck {
                kernel,
                half,
                error,
                tolerance: tolerance(half),
                failure,
            }
        })
        .collect()
}

/// Every kernel's check, and the product's, on CUDA device `ordinal`,
/// with each half the kernels may be compiled for.
pub fn check_kernels(ordinal: usize) -> Result<Vec<KernelCheck>, CudaLoadError> {
    let mut checks = check_kernels_on(&CudaGpu::open(ordinal, Half::F16)?);
    checks.extend(check_kernels_on(&CudaGpu::open(ordinal, Half::Bf16)?));
    Ok(checks)
}

/// Every kernel's check, and the product's, on `gpu`.
pub fn check_kernels_on<G: Gpu>(gpu: &G) -> Vec<KernelCheck> {
    let mut results = check_kernels_with(&mut GpuRunner { gpu });
    let outcome = gemm(gpu, &mut Random(SplitMix64(0x9e11)));
    let (error, failure) = match outcome {
        Ok(error) => (error, None),
        Err(reason) => (f32::INFINITY, Some(reason)),
    };
    results.push(KernelCheck {
        kernel: "half product (+ accumulate)",
        half: gpu.half(),
        error,
        tolerance: GEMM_TOLERANCE,
        failure,
    });
    // A kernel that faulted leaves a CUDA context unusable; its row says so,
    // and the others' results stand.
    results
}

/// The kernels on a [`Gpu`]: buffers uploaded, launched, read back.
struct GpuRunner<'a, G: Gpu> {
    gpu: &'a G,
}

/// A buffer argument on the device.
enum DeviceArg<G: Gpu> {
    F32s(Buffer<f32, G>),
    U16s(Buffer<u16, G>),
    I32s(Buffer<i32, G>),
    Bytes(Buffer<u8, G>),
}

impl<G: Gpu> KernelRunner for GpuRunner<'_, G> {
    fn half(&self) -> Half {
        self.gpu.half()
    }

    fn launch(
        &mut self,
        kernel: &str,
        grid: (u32, u32),
        threads: u32,
        args: &mut [Arg],
    ) -> Result<(), String> {
        let gpu = self.gpu;
        let mut buffers = Vec::new();
        let mut kargs = Vec::new();
        for arg in args.iter() {
            let (buffer, karg) = match arg {
                Arg::F32s(v) => {
                    let b = Buffer::from_host(gpu, v)?;
                    let a = b.arg();
                    (Some(DeviceArg::F32s(b)), a)
                }
                Arg::U16s(v) => {
                    let b = Buffer::from_host(gpu, v)?;
                    let a = b.arg();
                    (Some(DeviceArg::U16s(b)), a)
                }
                Arg::I32s(v) => {
                    let b = Buffer::from_host(gpu, v)?;
                    let a = b.arg();
                    (Some(DeviceArg::I32s(b)), a)
                }
                Arg::Bytes(v) => {
                    let b = Buffer::from_host(gpu, v)?;
                    let a = b.arg();
                    (Some(DeviceArg::Bytes(b)), a)
                }
                Arg::I32(v) => (None, Karg::I32(*v)),
                Arg::I64(v) => (None, Karg::I64(*v)),
                Arg::U32(v) => (None, Karg::U32(*v)),
                Arg::F32(v) => (None, Karg::F32(*v)),
            };
            buffers.push(buffer);
            kargs.push(karg);
        }
        gpu.launch(kernel, grid, threads, &kargs)?;
        gpu.synchronize()?;
        for (arg, buffer) in args.iter_mut().zip(&buffers) {
            match (arg, buffer) {
                (Arg::F32s(v), Some(DeviceArg::F32s(b))) => *v = b.read(gpu, 0..b.len())?,
                (Arg::U16s(v), Some(DeviceArg::U16s(b))) => *v = b.read(gpu, 0..b.len())?,
                (Arg::I32s(v), Some(DeviceArg::I32s(b))) => *v = b.read(gpu, 0..b.len())?,
                (Arg::Bytes(v), Some(DeviceArg::Bytes(b))) => *v = b.read(gpu, 0..b.len())?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Random blocks of `ty` whose f16 scales are small finite numbers (random
/// bytes there could be NaN or infinite).
fn random_blocks(random: &mut Random, ty: GgmlType, blocks: usize) -> Vec<u8> {
    let size = ty.block_bytes();
    let mut bytes = random.bytes(blocks * size);
    let scale = |random: &mut Random| f16::from_f32(0.01 + 0.1 * random.0.next_f32()).to_le_bytes();
    for block in bytes.chunks_exact_mut(size) {
        let scales: &[usize] = match ty {
            GgmlType::Q8_0 | GgmlType::Q4_0 => &[0],
            GgmlType::Q4_1 | GgmlType::Q4K => &[0, 2],
            GgmlType::Q6K => &[208],
            _ => &[],
        };
        for &at in scales {
            block[at..at + 2].copy_from_slice(&scale(random));
        }
    }
    match ty {
        GgmlType::F32 => random
            .floats(bytes.len() / 4)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        GgmlType::F16 => random
            .floats(bytes.len() / 2)
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        GgmlType::Bf16 => random
            .floats(bytes.len() / 2)
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect(),
        _ => bytes,
    }
}

fn dequant(runner: &mut dyn KernelRunner, random: &mut Random, ty: GgmlType) -> Outcome {
    let h = runner.half();
    // Whole blocks: three of a quantized type, 300 values of a float one.
    let blocks = if ty.block_len() == 1 { 300 } else { 3 };
    let bytes = random_blocks(random, ty, blocks);
    let n = blocks * ty.block_len();
    let mut want = vec![0.0f32; n];
    dequantize(ty, &bytes, &mut want);
    let want: Vec<f32> = want.into_iter().map(|v| round_half(h, v)).collect();
    let source = match ty {
        GgmlType::F32 => Arg::F32s(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
        GgmlType::F16 | GgmlType::Bf16 => Arg::U16s(
            bytes
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect(),
        ),
        _ => Arg::Bytes(bytes),
    };
    let mut args = [source, Arg::U16s(vec![0; n]), Arg::I64(n as i64)];
    let kernel = format!("dequant_{}", ty.name().to_lowercase());
    runner.launch(&kernel, (blocks_for(n), 1), THREADS, &mut args)?;
    Ok(relative_error(&want, &from_half_bits(h, args[1].u16s())))
}

/// The benchmark weights: a 64-bit mix of the index and seed, its top 24
/// bits as a uniform value in [-scale, scale), rounded to the half.
fn fill_random(runner: &mut dyn KernelRunner, _: &mut Random) -> Outcome {
    let h = runner.half();
    let (n, seed, scale) = (1000usize, 42u32, 0.5f32);
    let want: Vec<f32> = (0..n as u64)
        .map(|i| {
            let mut x = i
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(u64::from(seed));
            x ^= x >> 33;
            x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
            x ^= x >> 33;
            x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
            x ^= x >> 33;
            let u = (x >> 40) as f32 * (1.0 / 16_777_216.0);
            round_half(h, (2.0 * u - 1.0) * scale)
        })
        .collect();
    let mut args = [
        Arg::U16s(vec![0; n]),
        Arg::I64(n as i64),
        Arg::U32(seed),
        Arg::F32(scale),
    ];
    runner.launch("fill_random_half", (blocks_for(n), 1), THREADS, &mut args)?;
    Ok(relative_error(&want, &from_half_bits(h, args[0].u16s())))
}

fn embed(runner: &mut dyn KernelRunner, random: &mut Random) -> Outcome {
    let h = runner.half();
    let (vocab, dim) = (10usize, 40usize);
    let table: Vec<f32> = random
        .floats(vocab * dim)
        .into_iter()
        .map(|v| round_half(h, v))
        .collect();
    let tokens = vec![3i32, 9, 0];
    let want: Vec<f32> = tokens
        .iter()
        .flat_map(|&t| table[t as usize * dim..(t as usize + 1) * dim].to_vec())
        .collect();
    let mut args = [
        Arg::U16s(half_bits(h, &table)),
        Arg::I32s(tokens.clone()),
        Arg::F32s(vec![0.0; tokens.len() * dim]),
        Arg::I32(dim as i32),
    ];
    runner.launch("embed", (tokens.len() as u32, 1), 256, &mut args)?;
    Ok(relative_error(&want, args[2].f32s()))
}

fn rms_norm(runner: &mut dyn KernelRunner, random: &mut Random) -> Outcome {
    let h = runner.half();
    let (rows, dim, eps) = (3usize, 300usize, 1e-5f32);
    let x = random.floats(rows * dim);
    let w = random.floats(dim);
    let mut want = x.clone();
    for row in want.chunks_exact_mut(dim) {
        cpu::rms_norm(row, &w, eps);
    }
    let want: Vec<f32> = want.into_iter().map(|v| round_half(h, v)).collect();
    let mut args = [
        Arg::F32s(x),
        Arg::F32s(w),
        Arg::U16s(vec![0; rows * dim]),
        Arg::I32(dim as i32),
        Arg::F32(eps),
    ];
    runner.launch("rms_norm", (rows as u32, 1), 256, &mut args)?;
    Ok(relative_error(&want, &from_half_bits(h, args[2].u16s())))
}

fn rms_norm_rows(runner: &mut dyn KernelRunner, random: &mut Random) -> Outcome {
    let h = runner.half();
    let (dim, eps) = (300usize, 1e-5f32);
    let x = random.floats(4 * dim);
    let w = random.floats(dim);
    let rows = vec![2i32, 0];
    let mut want = Vec::new();
    for &r in &rows {
        let mut row = x[r as usize * dim..(r as usize + 1) * dim].to_vec();
        cpu::rms_norm(&mut row, &w, eps);
        want.extend(row.into_iter().map(|v| round_half(h, v)));
    }
    let mut args = [
        Arg::F32s(x),
        Arg::I32s(rows.clone()),
        Arg::F32s(w),
        Arg::U16s(vec![0; rows.len() * dim]),
        Arg::I32(dim as i32),
        Arg::F32(eps),
    ];
    runner.launch("rms_norm_rows", (rows.len() as u32, 1), 256, &mut args)?;
    Ok(relative_error(&want, &from_half_bits(h, args[3].u16s())))
}

fn add_bias(runner: &mut dyn KernelRunner, random: &mut Random) -> Outcome {
    let (rows, cols) = (3usize, 70usize);
    let x = random.floats(rows * cols);
    let bias = random.floats(cols);
    let want: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, v)| v + bias[i % cols])
        .collect();
    let mut args = [
        Arg::F32s(x),
        Arg::F32s(bias),
        Arg::I32(cols as i32),
        Arg::I64((rows * cols) as i64),
    ];
    runner.launch("add_bias", (blocks_for(rows * cols), 1), THREADS, &mut args)?;
    Ok(relative_error(&want, args[0].f32s()))
}

/// Two rows of a fused q|k|v product (3 query heads, 1 key head, 1 value
/// head of 16): the query and key heads rotate, the value head stays.
fn rope(runner: &mut dyn KernelRunner, random: &mut Random, style: RopeStyle) -> Outcome {
    let (head_dim, rotated, stride) = (16usize, 4usize, 5 * 16usize);
    let positions = vec![5i32, 1000];
    let x = random.floats(positions.len() * stride);
    let frequencies = cpu::rope_frequencies(head_dim, 10_000.0);
    let mut want = x.clone();
    for (row, &p) in want.chunks_exact_mut(stride).zip(&positions) {
        cpu::rope(
            &mut row[..rotated * head_dim],
            head_dim,
            p as usize,
            &frequencies,
            style,
        );
    }
    let mut args = [
        Arg::F32s(x),
        Arg::I32s(positions.clone()),
        Arg::F32s(frequencies),
        Arg::I32(rotated as i32),
        Arg::I32(head_dim as i32),
        Arg::I32(i32::from(style == RopeStyle::Halves)),
        Arg::I32(stride as i32),
    ];
    runner.launch("rope", (positions.len() as u32, 1), 128, &mut args)?;
    Ok(relative_error(&want, args[0].f32s()))
}

/// kv_write then attention, as a layer runs them: two consecutive tokens of
/// one sequence at `positions` (up to 47), whose blocks are placed out of
/// order in a pool of four (grouped-query heads: 4 query heads over 2
/// key/value heads); the kernel writes their keys and values, and attention
/// reads them back with the earlier positions already in the pool.
fn attention(
    runner: &mut dyn KernelRunner,
    random: &mut Random,
    head_dim: usize,
    positions: &[i32],
) -> Outcome {
    let half = runner.half();
    let (heads, kv_heads) = (4usize, 2usize);
    let (layers, layer) = (2usize, 1usize);
    let (e, kv) = (heads * head_dim, kv_heads * head_dim);
    let stride = e + 2 * kv;
    let table = vec![3i32, 0, 2];
    let positions = positions.to_vec();
    let block_floats = layers * 2 * BLOCK_TOKENS * kv;
    let mut pool = random.floats(4 * block_floats);
    let qkv = random.floats(positions.len() * stride);
    let offset = |block: usize, values: bool, slot: usize| {
        ((block * layers + layer) * 2 + usize::from(values)) * BLOCK_TOKENS * kv + slot * kv
    };
    let slots: Vec<i32> = positions
        .iter()
        .map(|&p| table[p as usize / BLOCK_TOKENS] * BLOCK_TOKENS as i32 + p % BLOCK_TOKENS as i32)
        .collect();
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut write = [
        Arg::F32s(qkv.clone()),
        Arg::F32s(pool.clone()),
        Arg::I32s(slots.clone()),
        Arg::I32(layer as i32),
        Arg::I32(layers as i32),
        Arg::I32(kv as i32),
        Arg::I32(stride as i32),
        Arg::I32(e as i32),
    ];
    runner.launch("kv_write", (positions.len() as u32, 1), 128, &mut write)?;
    let written = write[1].f32s().to_vec();
    let mut attend = [
        Arg::F32s(qkv.clone()),
        Arg::F32s(written.clone()),
        Arg::I32s(table.clone()),
        Arg::I32s(vec![0, 0]),
        Arg::I32s(positions.clone()),
        Arg::U16s(vec![0; positions.len() * e]),
        Arg::I32(heads as i32),
        Arg::I32(kv_heads as i32),
        Arg::I32(head_dim as i32),
        Arg::I32(layer as i32),
        Arg::I32(layers as i32),
        Arg::F32(scale),
        Arg::I32(stride as i32),
    ];
    runner.launch(
        "attention",
        (positions.len() as u32, heads as u32),
        128,
        &mut attend,
    )?;
    // The reference: the writes, then softmax attention over 0..=position.
    for (t, &slot) in slots.iter().enumerate() {
        let (block, s) = (slot as usize / BLOCK_TOKENS, slot as usize % BLOCK_TOKENS);
        let row = &qkv[t * stride..(t + 1) * stride];
        pool[offset(block, false, s)..][..kv].copy_from_slice(&row[e..e + kv]);
        pool[offset(block, true, s)..][..kv].copy_from_slice(&row[e + kv..]);
    }
    let pool_error = relative_error(&pool, &written);
    let mut want = Vec::new();
    for (t, &p) in positions.iter().enumerate() {
        for h in 0..heads {
            let kvh = h / (heads / kv_heads);
            let q = &qkv[t * stride + h * head_dim..][..head_dim];
            let at = |pos: usize, values: bool| {
                let block = table[pos / BLOCK_TOKENS] as usize;
                &pool[offset(block, values, pos % BLOCK_TOKENS) + kvh * head_dim..][..head_dim]
            };
            let mut scores: Vec<f32> = (0..=p as usize)
                .map(|pos| cpu::dot(q, at(pos, false)) * scale)
                .collect();
            cpu::softmax(&mut scores);
            let mut o = vec![0.0f32; head_dim];
            for (pos, weight) in scores.iter().enumerate() {
                for (o, v) in o.iter_mut().zip(at(pos, true)) {
                    *o += weight * v;
                }
            }
            want.extend(o.into_iter().map(|v| round_half(half, v)));
        }
    }
    let attention_error = relative_error(&want, &from_half_bits(half, attend[5].u16s()));
    Ok(pool_error.max(attention_error))
}

fn silu_mul(runner: &mut dyn KernelRunner, random: &mut Random) -> Outcome {
    let h = runner.half();
    let (rows, ff) = (3usize, 50usize);
    let gate_up = random.floats(rows * 2 * ff);
    let mut want = Vec::new();
    for row in gate_up.chunks_exact(2 * ff) {
        let (mut gate, up) = (row[..ff].to_vec(), &row[ff..]);
        cpu::silu_mul(&mut gate, up);
        want.extend(gate.into_iter().map(|v| round_half(h, v)));
    }
    let mut args = [
        Arg::F32s(gate_up),
        Arg::U16s(vec![0; rows * ff]),
        Arg::I32(ff as i32),
        Arg::I64((rows * ff) as i64),
    ];
    runner.launch("silu_mul", (blocks_for(rows * ff), 1), THREADS, &mut args)?;
    Ok(relative_error(&want, &from_half_bits(h, args[1].u16s())))
}

/// Rows with a plain maximum, a tie (the first wins), a maximum at the
/// very end, negative zero against zero, and a NaN (greatest under
/// `total_cmp`, as the host sampler orders).
fn argmax(runner: &mut dyn KernelRunner, random: &mut Random) -> Outcome {
    let vocab = 5_000usize;
    let mut rows: Vec<Vec<f32>> = (0..5).map(|_| random.floats(vocab)).collect();
    rows[1][100] = 7.0;
    rows[1][4000] = 7.0;
    rows[2][vocab - 1] = 9.0;
    rows[3].iter_mut().for_each(|v| *v = -v.abs() - 1.0);
    rows[3][10] = -0.0;
    rows[3][20] = 0.0;
    rows[4][321] = f32::NAN;
    let want: Vec<i32> = rows
        .iter()
        .map(|row| sampling::argmax(row) as i32)
        .collect();
    debug_assert_eq!(&want[1..], &[100, vocab as i32 - 1, 20, 321]);
    let mut args = [
        Arg::F32s(rows.concat()),
        Arg::I32(vocab as i32),
        Arg::I32s(vec![-1; rows.len()]),
    ];
    runner.launch("argmax_rows", (rows.len() as u32, 1), 1024, &mut args)?;
    let wrong = want
        .iter()
        .zip(args[2].i32s())
        .filter(|(a, b)| a != b)
        .count();
    Ok(wrong as f32 / want.len() as f32)
}

/// `y = x · Wᵀ` then `y += x · Wᵀ` on half inputs.
fn gemm<G: Gpu>(gpu: &G, random: &mut Random) -> Outcome {
    let h = gpu.half();
    let (rows, cols, n) = (96usize, 200usize, 3usize);
    let w: Vec<f32> = random
        .floats(rows * cols)
        .into_iter()
        .map(|v| round_half(h, v))
        .collect();
    let x: Vec<f32> = random
        .floats(n * cols)
        .into_iter()
        .map(|v| round_half(h, v))
        .collect();
    let d_w = Buffer::from_host(gpu, &half_bits(h, &w))?;
    let d_x = Buffer::from_host(gpu, &half_bits(h, &x))?;
    let y = Buffer::<f32, G>::zeros(gpu, n * rows)?;
    let product = |accumulate| {
        gpu.gemm(
            d_w.address(0),
            rows,
            cols,
            d_x.address(0),
            n,
            y.address(0),
            accumulate,
        )
    };
    product(false)?;
    let once = y.read(gpu, 0..n * rows)?;
    product(true)?;
    let twice = y.read(gpu, 0..n * rows)?;
    let want: Vec<f32> = (0..n)
        .flat_map(|t| {
            let x = &x[t * cols..(t + 1) * cols];
            w.chunks_exact(cols)
                .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum::<f32>())
                .collect::<Vec<_>>()
        })
        .collect();
    let doubled: Vec<f32> = want.iter().map(|v| 2.0 * v).collect();
    Ok(relative_error(&want, &once).max(relative_error(&doubled, &twice)))
}
