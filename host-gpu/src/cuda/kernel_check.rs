//! Each forward-pass kernel, and the cuBLAS product, against a host
//! reference on random inputs. The model-level checks (GPU logits against
//! the CPU's) say *that* a device is wrong; this says *which* kernel, so
//! that one call on a new GPU is enough to find a fault.
//!
//! The references are the CPU backend's own operations where it has them
//! (RMSNorm, RoPE, SiLU) and plain loops elsewhere; outputs that the
//! kernels write as bf16 are compared after rounding the reference the
//! same way.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use half::bf16;

use super::backend::CudaLoadError;
use super::weights::{Device, DeviceMatrix, launch_1d, per_row};
use crate::cpu;
use crate::engine::relative_error;
use crate::model::{BLOCK_TOKENS, RopeStyle};
use crate::sampling::{self, SplitMix64};

/// One kernel's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelCheck {
    pub kernel: &'static str,
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

/// Tolerance for bf16 outputs (8 bits of mantissa).
const BF16_TOLERANCE: f32 = 1e-2;
/// Tolerance for f32 outputs (order of summation only).
const F32_TOLERANCE: f32 = 1e-4;
/// Tolerance for the product: exact bf16 products, f32 sums in cuBLAS's order.
const GEMM_TOLERANCE: f32 = 1e-3;

/// Reproducible inputs.
struct Random(SplitMix64);

impl Random {
    /// `n` values uniform in [-1, 1).
    fn floats(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| 2.0 * self.0.next_f32() - 1.0).collect()
    }
}

fn round_bf16(v: f32) -> f32 {
    bf16::from_f32(v).to_f32()
}

fn from_bf16_bits(bits: &[u16]) -> Vec<f32> {
    bits.iter().map(|&b| bf16::from_bits(b).to_f32()).collect()
}

type Outcome = Result<f32, String>;

/// A check: its name, its tolerance, and what runs it.
type Check = (&'static str, f32, fn(&Device, &mut Random) -> Outcome);

fn failed(e: impl std::fmt::Debug) -> String {
    format!("{e:?}")
}

/// Runs every check on device `ordinal`.
pub fn check_kernels(ordinal: usize) -> Result<Vec<KernelCheck>, CudaLoadError> {
    let device = Device::open(ordinal)?;
    let checks: [Check; 10] = [
        ("embed", F32_TOLERANCE, embed),
        ("rms_norm", BF16_TOLERANCE, rms_norm),
        ("rms_norm_rows", BF16_TOLERANCE, rms_norm_rows),
        ("add_bias", F32_TOLERANCE, add_bias),
        ("rope (interleaved)", F32_TOLERANCE, |d, r| {
            rope(d, r, RopeStyle::Interleaved)
        }),
        ("rope (halves)", F32_TOLERANCE, |d, r| {
            rope(d, r, RopeStyle::Halves)
        }),
        ("kv_write + attention", BF16_TOLERANCE, attention),
        ("silu_mul", BF16_TOLERANCE, silu_mul),
        ("argmax_rows", 0.0, argmax),
        ("cuBLAS bf16 product (+ accumulate)", GEMM_TOLERANCE, gemm),
    ];
    let mut random = Random(SplitMix64(0x5eed));
    let mut results = Vec::new();
    for (kernel, tolerance, check) in checks {
        let outcome = check(&device, &mut random)
            .and_then(|error| device.stream.synchronize().map(|()| error).map_err(failed));
        let (error, failure) = match outcome {
            Ok(error) => (error, None),
            Err(reason) => (f32::INFINITY, Some(reason)),
        };
        results.push(KernelCheck {
            kernel,
            error,
            tolerance,
            failure,
        });
    }
    // A kernel that faulted leaves the context unusable; its row says so,
    // and the others' results stand.
    Ok(results)
}

fn upload<T: cudarc::driver::DeviceRepr>(device: &Device, v: &[T]) -> Result<CudaSlice<T>, String> {
    device.stream.clone_htod(v).map_err(failed)
}

fn download<T: cudarc::driver::DeviceRepr>(
    device: &Device,
    v: &CudaSlice<T>,
) -> Result<Vec<T>, String> {
    device.stream.clone_dtoh(v).map_err(failed)
}

fn bf16_bits(v: &[f32]) -> Vec<u16> {
    v.iter().map(|&x| bf16::from_f32(x).to_bits()).collect()
}

fn embed(device: &Device, random: &mut Random) -> Outcome {
    let (vocab, dim) = (10usize, 40usize);
    let table: Vec<f32> = random
        .floats(vocab * dim)
        .into_iter()
        .map(round_bf16)
        .collect();
    let tokens = [3i32, 9, 0];
    let d_table = upload(device, &bf16_bits(&table))?;
    let d_tokens = upload(device, &tokens)?;
    let mut x = device
        .stream
        .alloc_zeros::<f32>(tokens.len() * dim)
        .map_err(failed)?;
    let dim_i = dim as i32;
    device
        .launch(&device.f.embed, per_row(tokens.len(), 256), |l| {
            l.arg(&d_table).arg(&d_tokens).arg(&mut x).arg(&dim_i);
        })
        .map_err(failed)?;
    let want: Vec<f32> = tokens
        .iter()
        .flat_map(|&t| table[t as usize * dim..(t as usize + 1) * dim].to_vec())
        .collect();
    Ok(relative_error(&want, &download(device, &x)?))
}

fn rms_norm(device: &Device, random: &mut Random) -> Outcome {
    let (rows, dim, eps) = (3usize, 300usize, 1e-5f32);
    let x = random.floats(rows * dim);
    let w = random.floats(dim);
    let (d_x, d_w) = (upload(device, &x)?, upload(device, &w)?);
    let mut out = device
        .stream
        .alloc_zeros::<u16>(rows * dim)
        .map_err(failed)?;
    let dim_i = dim as i32;
    device
        .launch(&device.f.rms_norm, per_row(rows, 256), |l| {
            l.arg(&d_x).arg(&d_w).arg(&mut out).arg(&dim_i).arg(&eps);
        })
        .map_err(failed)?;
    let mut want = x;
    for row in want.chunks_exact_mut(dim) {
        cpu::rms_norm(row, &w, eps);
    }
    let want: Vec<f32> = want.into_iter().map(round_bf16).collect();
    Ok(relative_error(
        &want,
        &from_bf16_bits(&download(device, &out)?),
    ))
}

fn rms_norm_rows(device: &Device, random: &mut Random) -> Outcome {
    let (dim, eps) = (300usize, 1e-5f32);
    let x = random.floats(4 * dim);
    let w = random.floats(dim);
    let rows = [2i32, 0];
    let (d_x, d_w, d_rows) = (
        upload(device, &x)?,
        upload(device, &w)?,
        upload(device, &rows)?,
    );
    let mut out = device
        .stream
        .alloc_zeros::<u16>(rows.len() * dim)
        .map_err(failed)?;
    let dim_i = dim as i32;
    device
        .launch(&device.f.rms_norm_rows, per_row(rows.len(), 256), |l| {
            l.arg(&d_x)
                .arg(&d_rows)
                .arg(&d_w)
                .arg(&mut out)
                .arg(&dim_i)
                .arg(&eps);
        })
        .map_err(failed)?;
    let mut want = Vec::new();
    for &r in &rows {
        let mut row = x[r as usize * dim..(r as usize + 1) * dim].to_vec();
        cpu::rms_norm(&mut row, &w, eps);
        want.extend(row.into_iter().map(round_bf16));
    }
    Ok(relative_error(
        &want,
        &from_bf16_bits(&download(device, &out)?),
    ))
}

fn add_bias(device: &Device, random: &mut Random) -> Outcome {
    let (rows, cols) = (3usize, 70usize);
    let x = random.floats(rows * cols);
    let bias = random.floats(cols);
    let mut d_x = upload(device, &x)?;
    let d_bias = upload(device, &bias)?;
    let (cols_i, total) = (cols as i32, (rows * cols) as i64);
    device
        .launch(&device.f.add_bias, launch_1d(rows * cols), |l| {
            l.arg(&mut d_x).arg(&d_bias).arg(&cols_i).arg(&total);
        })
        .map_err(failed)?;
    let want: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, v)| v + bias[i % cols])
        .collect();
    Ok(relative_error(&want, &download(device, &d_x)?))
}

/// Two rows of a fused q|k|v product (3 query heads, 1 key head, 1 value
/// head of 16): the query and key heads rotate, the value head stays.
fn rope(device: &Device, random: &mut Random, style: RopeStyle) -> Outcome {
    let (head_dim, rotated, stride) = (16usize, 4usize, 5 * 16usize);
    let positions = [5i32, 1000];
    let x = random.floats(positions.len() * stride);
    let frequencies = cpu::rope_frequencies(head_dim, 10_000.0);
    let mut d_x = upload(device, &x)?;
    let (d_positions, d_frequencies) = (upload(device, &positions)?, upload(device, &frequencies)?);
    let (heads_i, head_dim_i, stride_i) = (rotated as i32, head_dim as i32, stride as i32);
    let halves = i32::from(style == RopeStyle::Halves);
    device
        .launch(&device.f.rope, per_row(positions.len(), 128), |l| {
            l.arg(&mut d_x)
                .arg(&d_positions)
                .arg(&d_frequencies)
                .arg(&heads_i)
                .arg(&head_dim_i)
                .arg(&halves)
                .arg(&stride_i);
        })
        .map_err(failed)?;
    let mut want = x;
    for (row, &p) in want.chunks_exact_mut(stride).zip(&positions) {
        cpu::rope(
            &mut row[..rotated * head_dim],
            head_dim,
            p as usize,
            &frequencies,
            style,
        );
    }
    Ok(relative_error(&want, &download(device, &d_x)?))
}

/// kv_write then attention, as a layer runs them: one sequence whose 35
/// positions span three blocks placed out of order in a pool of four
/// (grouped-query heads: 4 query heads over 2 key/value heads), with the
/// step's last two tokens written by the kernel and read back by attention.
fn attention(device: &Device, random: &mut Random) -> Outcome {
    let (heads, kv_heads, head_dim) = (4usize, 2usize, 40usize);
    let (layers, layer) = (2usize, 1usize);
    let (e, kv) = (heads * head_dim, kv_heads * head_dim);
    let stride = e + 2 * kv;
    let table = [3i32, 0, 2];
    let positions = [33i32, 34];
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
    let mut d_pool = upload(device, &pool)?;
    let d_qkv = upload(device, &qkv)?;
    let d_slots = upload(device, &slots)?;
    let d_tables = upload(device, &table)?;
    let d_starts = upload(device, &[0i32, 0])?;
    let d_positions = upload(device, &positions)?;
    let mut out = device
        .stream
        .alloc_zeros::<u16>(positions.len() * e)
        .map_err(failed)?;
    let (layer_i, layers_i, kv_i, stride_i, e_i) = (
        layer as i32,
        layers as i32,
        kv as i32,
        stride as i32,
        e as i32,
    );
    let (heads_i, kv_heads_i, head_dim_i) = (heads as i32, kv_heads as i32, head_dim as i32);
    let scale = 1.0 / (head_dim as f32).sqrt();
    device
        .launch(&device.f.kv_write, per_row(positions.len(), 128), |l| {
            l.arg(&d_qkv)
                .arg(&mut d_pool)
                .arg(&d_slots)
                .arg(&layer_i)
                .arg(&layers_i)
                .arg(&kv_i)
                .arg(&stride_i)
                .arg(&e_i);
        })
        .map_err(failed)?;
    let grid = LaunchConfig {
        grid_dim: (positions.len() as u32, heads as u32, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    device
        .launch(&device.f.attention, grid, |l| {
            l.arg(&d_qkv)
                .arg(&d_pool)
                .arg(&d_tables)
                .arg(&d_starts)
                .arg(&d_positions)
                .arg(&mut out)
                .arg(&heads_i)
                .arg(&kv_heads_i)
                .arg(&head_dim_i)
                .arg(&layer_i)
                .arg(&layers_i)
                .arg(&scale)
                .arg(&stride_i);
        })
        .map_err(failed)?;
    // The reference: the writes, then softmax attention over 0..=position.
    for (t, &slot) in slots.iter().enumerate() {
        let (block, s) = (slot as usize / BLOCK_TOKENS, slot as usize % BLOCK_TOKENS);
        let row = &qkv[t * stride..(t + 1) * stride];
        pool[offset(block, false, s)..][..kv].copy_from_slice(&row[e..e + kv]);
        pool[offset(block, true, s)..][..kv].copy_from_slice(&row[e + kv..]);
    }
    let written = download(device, &d_pool)?;
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
            want.extend(o.into_iter().map(round_bf16));
        }
    }
    let attention_error = relative_error(&want, &from_bf16_bits(&download(device, &out)?));
    Ok(pool_error.max(attention_error))
}

fn silu_mul(device: &Device, random: &mut Random) -> Outcome {
    let (rows, ff) = (3usize, 50usize);
    let gate_up = random.floats(rows * 2 * ff);
    let d_gate_up = upload(device, &gate_up)?;
    let mut out = device
        .stream
        .alloc_zeros::<u16>(rows * ff)
        .map_err(failed)?;
    let (ff_i, total) = (ff as i32, (rows * ff) as i64);
    device
        .launch(&device.f.silu_mul, launch_1d(rows * ff), |l| {
            l.arg(&d_gate_up).arg(&mut out).arg(&ff_i).arg(&total);
        })
        .map_err(failed)?;
    let mut want = Vec::new();
    for row in gate_up.chunks_exact(2 * ff) {
        let (mut gate, up) = (row[..ff].to_vec(), &row[ff..]);
        cpu::silu_mul(&mut gate, up);
        want.extend(gate.into_iter().map(round_bf16));
    }
    Ok(relative_error(
        &want,
        &from_bf16_bits(&download(device, &out)?),
    ))
}

/// Rows with a plain maximum, a tie (the first wins), a maximum at the
/// very end, negative zero against zero, and a NaN (greatest under
/// `total_cmp`, as the host sampler orders).
fn argmax(device: &Device, random: &mut Random) -> Outcome {
    let vocab = 5_000usize;
    let mut rows: Vec<Vec<f32>> = (0..5).map(|_| random.floats(vocab)).collect();
    rows[1][100] = 7.0;
    rows[1][4000] = 7.0;
    rows[2][vocab - 1] = 9.0;
    rows[3].iter_mut().for_each(|v| *v = -v.abs() - 1.0);
    rows[3][10] = -0.0;
    rows[3][20] = 0.0;
    rows[4][321] = f32::NAN;
    let flat: Vec<f32> = rows.concat();
    let d_logits = upload(device, &flat)?;
    let mut best = device
        .stream
        .alloc_zeros::<i32>(rows.len())
        .map_err(failed)?;
    let vocab_i = vocab as i32;
    device
        .launch(&device.f.argmax_rows, per_row(rows.len(), 1024), |l| {
            l.arg(&d_logits).arg(&vocab_i).arg(&mut best);
        })
        .map_err(failed)?;
    let got = download(device, &best)?;
    let want: Vec<i32> = rows
        .iter()
        .map(|row| sampling::argmax(row) as i32)
        .collect();
    debug_assert_eq!(&want[1..], &[100, vocab as i32 - 1, 20, 321]);
    let wrong = want.iter().zip(&got).filter(|(a, b)| a != b).count();
    Ok(wrong as f32 / want.len() as f32)
}

/// `y = x · Wᵀ` then `y += x · Wᵀ` on bf16 inputs.
fn gemm(device: &Device, random: &mut Random) -> Outcome {
    let (rows, cols, n) = (96usize, 200usize, 3usize);
    let w: Vec<f32> = random
        .floats(rows * cols)
        .into_iter()
        .map(round_bf16)
        .collect();
    let x: Vec<f32> = random
        .floats(n * cols)
        .into_iter()
        .map(round_bf16)
        .collect();
    let matrix = DeviceMatrix {
        data: upload(device, &bf16_bits(&w))?,
        rows,
        cols,
    };
    let d_x = upload(device, &bf16_bits(&x))?;
    let mut y = device.stream.alloc_zeros::<f32>(n * rows).map_err(failed)?;
    device
        .gemm(&matrix, &d_x, n, &mut y, false)
        .map_err(failed)?;
    let once = download(device, &y)?;
    device
        .gemm(&matrix, &d_x, n, &mut y, true)
        .map_err(failed)?;
    let twice = download(device, &y)?;
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
