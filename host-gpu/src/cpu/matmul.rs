//! `out = xs · Wᵀ` for a weight matrix in any supported type: every token of
//! a batch against every weight row, the rows split across threads, so the
//! weights are read once per step however many sequences step together.

use rayon::prelude::*;

use super::ops::dot;
use super::q8::{Q8Block, kernels, kernels4, kernels8, quantize_row};
use crate::gguf::{GgmlType, TensorBytes};
use crate::quant::dequantize;

/// Fewest weight rows handed to one thread at a time.
const MIN_ROWS_PER_TASK: usize = 16;

/// Tasks per thread for one product: enough to balance uneven threads, few
/// enough that scheduling stays cheap against the work.
const TASKS_PER_THREAD: usize = 4;

/// A weight matrix of `rows` rows of `cols` weights, in its file encoding.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub bytes: TensorBytes,
}

impl Matrix {
    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_len() * self.ty.block_bytes()
    }

    pub fn row(&self, r: usize) -> &[u8] {
        let n = self.row_bytes();
        &self.bytes[r * n..(r + 1) * n]
    }

    /// Row `r` decoded to `f32` (for embedding lookups).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        dequantize(self.ty, self.row(r), out);
    }
}

/// How activations meet quantized weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activations {
    /// Quantized to 8-bit blocks for integer dot products, as llama.cpp
    /// does: the fast path, within about 1% of exact.
    #[default]
    Quantized,
    /// Kept in f32 against decoded weights: slow, exact up to f32 rounding;
    /// used to check the forward pass against an exact reference.
    Exact,
}

/// `out[t][r] = Σ_c xs[t][c] · W[r][c]` for `n = xs.len() / cols` tokens.
pub fn matmul(w: &Matrix, xs: &[f32], out: &mut [f32], activations: Activations) {
    matmul_group(&[w], xs, &mut [out], activations);
}

/// Several products of the same activations (a layer's q, k and v, or its
/// gate and up projections) in one parallel pass: the activations are
/// quantized once and the threads are started once.
pub fn matmul_group(ws: &[&Matrix], xs: &[f32], outs: &mut [&mut [f32]], activations: Activations) {
    let cols = ws[0].cols;
    let n = xs.len() / cols;
    assert_eq!(xs.len(), n * cols, "activations are not whole rows");
    for (w, out) in ws.iter().zip(outs.iter()) {
        assert_eq!(w.cols, cols, "grouped matrices take the same input");
        assert_eq!(out.len(), n * w.rows, "output has the wrong size");
    }
    let quantized: Option<Vec<Vec<Q8Block>>> = (activations == Activations::Quantized
        && ws
            .iter()
            .any(|w| matches!(w.ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0)))
    .then(|| {
        xs.chunks_exact(cols)
            .map(|x| {
                let mut blocks = Vec::new();
                quantize_row(x, &mut blocks);
                blocks
            })
            .collect()
    });
    let threads = rayon::current_num_threads() * TASKS_PER_THREAD;
    // (matrix, first row, last row) for every task of every matrix.
    let tasks: Vec<(usize, usize, usize)> = ws
        .iter()
        .enumerate()
        .flat_map(|(m, w)| {
            let per_task = w.rows.div_ceil(threads).max(MIN_ROWS_PER_TASK);
            (0..w.rows.div_ceil(per_task))
                .map(move |i| (m, i * per_task, ((i + 1) * per_task).min(w.rows)))
        })
        .collect();
    let results: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|&(m, first, last)| rows_product(ws[m], first..last, xs, quantized.as_deref(), n))
        .collect();
    for (&(m, first, last), local) in tasks.iter().zip(&results) {
        let out = &mut outs[m];
        let rows = ws[m].rows;
        for i in 0..last - first {
            for t in 0..n {
                out[t * rows + first + i] = local[i * n + t];
            }
        }
    }
}

/// Rows `rows` of `w` against all `n` tokens, row-major (`[row][token]`).
fn rows_product(
    w: &Matrix,
    rows: std::ops::Range<usize>,
    xs: &[f32],
    quantized: Option<&[Vec<Q8Block>]>,
    n: usize,
) -> Vec<f32> {
    let first = rows.start;
    let mut local = vec![0.0f32; rows.len() * n];
    let mut decoded = vec![0.0f32; w.cols];
    let q8 = match (w.ty, quantized) {
        (GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0, Some(q)) => Some(q),
        _ => None,
    };
    // The kernels for this weight type, chosen once per task, not per row.
    let [q4_0, q4_1, q8_0] = kernels();
    let dot_blocks = match w.ty {
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q4_1 => q4_1,
        _ => q8_0,
    };
    // Eight, then four tokens at a time share each unpacked weight block.
    let eight = kernels8().and_then(|[q4_1x8, q8_0x8]| match w.ty {
        GgmlType::Q4_1 => Some(q4_1x8),
        GgmlType::Q8_0 => Some(q8_0x8),
        _ => None,
    });
    let four = kernels4().and_then(|[q4_1x4, q8_0x4]| match w.ty {
        GgmlType::Q4_1 => Some(q4_1x4),
        GgmlType::Q8_0 => Some(q8_0x4),
        _ => None,
    });
    for r in rows {
        let row = w.row(r);
        let outs = &mut local[(r - first) * n..(r - first + 1) * n];
        match q8 {
            Some(q) => {
                let mut t = 0;
                if let Some(dot8) = eight {
                    while t + 8 <= n {
                        let got = dot8(row, std::array::from_fn(|i| &q[t + i][..]));
                        outs[t..t + 8].copy_from_slice(&got);
                        t += 8;
                    }
                }
                if let Some(dot4) = four {
                    while t + 4 <= n {
                        let got = dot4(row, [&q[t], &q[t + 1], &q[t + 2], &q[t + 3]]);
                        outs[t..t + 4].copy_from_slice(&got);
                        t += 4;
                    }
                }
                for (o, x) in outs[t..].iter_mut().zip(&q[t..]) {
                    *o = dot_blocks(row, x);
                }
            }
            None => {
                dequantize(w.ty, row, &mut decoded);
                for (o, x) in outs.iter_mut().zip(xs.chunks_exact(w.cols)) {
                    *o = dot(&decoded, x);
                }
            }
        }
    }
    local
}
