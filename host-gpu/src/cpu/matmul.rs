//! `out = xs · Wᵀ` for a weight matrix in any supported type: every token of
//! a batch against every weight row, the rows split across threads, so the
//! weights are read once per step however many sequences step together.

use rayon::prelude::*;

use super::ops::dot;
use super::q8::{Q8Block, kernels, kernels4, quantize_row};
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

/// How a batch of activations is prepared for one weight type.
enum Activations<'a> {
    Q8(Vec<Vec<Q8Block>>),
    F32(&'a [f32]),
}

/// `out[t][r] = Σ_c xs[t][c] · W[r][c]` for `n = xs.len() / cols` tokens.
pub fn matmul(w: &Matrix, xs: &[f32], out: &mut [f32]) {
    let n = xs.len() / w.cols;
    assert_eq!(xs.len(), n * w.cols, "activations are not whole rows");
    assert_eq!(out.len(), n * w.rows, "output has the wrong size");
    let activations = match w.ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 => Activations::Q8(
            xs.chunks_exact(w.cols)
                .map(|x| {
                    let mut blocks = Vec::new();
                    quantize_row(x, &mut blocks);
                    blocks
                })
                .collect(),
        ),
        _ => Activations::F32(xs),
    };
    let rows_per_task = w
        .rows
        .div_ceil(rayon::current_num_threads() * TASKS_PER_THREAD)
        .max(MIN_ROWS_PER_TASK);
    let tasks: Vec<Vec<f32>> = (0..w.rows.div_ceil(rows_per_task))
        .into_par_iter()
        .map(|task| {
            let first = task * rows_per_task;
            let last = (first + rows_per_task).min(w.rows);
            let mut local = vec![0.0f32; (last - first) * n];
            let mut decoded = vec![0.0f32; w.cols];
            for r in first..last {
                let row = w.row(r);
                let outs = &mut local[(r - first) * n..(r - first + 1) * n];
                match &activations {
                    Activations::Q8(q) => {
                        let [q4_0, q4_1, q8_0] = kernels();
                        let dot_blocks = match w.ty {
                            GgmlType::Q4_0 => q4_0,
                            GgmlType::Q4_1 => q4_1,
                            _ => q8_0,
                        };
                        // Four tokens at a time share each unpacked weight block.
                        let four = kernels4().and_then(|[q4_1x4, q8_0x4]| match w.ty {
                            GgmlType::Q4_1 => Some(q4_1x4),
                            GgmlType::Q8_0 => Some(q8_0x4),
                            _ => None,
                        });
                        let mut t = 0;
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
                    Activations::F32(xs) => {
                        dequantize(w.ty, row, &mut decoded);
                        for (o, x) in outs.iter_mut().zip(xs.chunks_exact(w.cols)) {
                            *o = dot(&decoded, x);
                        }
                    }
                }
            }
            local
        })
        .collect();
    for (task, local) in tasks.iter().enumerate() {
        let first = task * rows_per_task;
        let count = local.len() / n.max(1);
        for i in 0..count {
            for t in 0..n {
                out[t * w.rows + first + i] = local[i * n + t];
            }
        }
    }
}
