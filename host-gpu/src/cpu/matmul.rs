//! `out = xs · Wᵀ` for a weight matrix in any supported type: every token of
//! a batch against every weight row, the rows split across threads, so the
//! weights are read once per step however many sequences step together.
//! Quantized matrices are read in panels (see [`super::packed`]); other
//! types are decoded a row at a time.

use std::sync::Arc;

use rayon::prelude::*;

use super::ops::dot;
use super::packed::{PANEL_ROWS, PackedMatrix};
use super::panel::PanelKernels;
use super::q8::{Q8Block, file_layout_kernel, quantize_row};
use crate::gguf::{GgmlType, TensorBytes};
use crate::quant::dequantize;

/// Fewest weight rows handed to one thread at a time.
const MIN_ROWS_PER_TASK: usize = 16;

/// Tasks per thread for one product: enough to balance uneven threads, few
/// enough that scheduling stays cheap against the work.
const TASKS_PER_THREAD: usize = 4;

/// A weight matrix of `rows` rows of `cols` weights, in its file encoding
/// (what device backends copy), and repacked for the CPU kernels where its
/// type has panels.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub bytes: TensorBytes,
    packed: Option<Arc<PackedMatrix>>,
}

impl Matrix {
    /// A matrix of the file's `bytes`, repacked into panels for the CPU.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, bytes: TensorBytes) -> Self {
        let packed = PackedMatrix::pack(ty, rows, cols, &bytes).map(Arc::new);
        Matrix {
            ty,
            rows,
            cols,
            bytes,
            packed,
        }
    }

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

    /// The name of the kernels that multiply this matrix on this processor.
    pub fn kernel_name(&self) -> &'static str {
        match self.packed {
            Some(_) => PanelKernels::detected().name,
            None => "file-layout",
        }
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

/// How one matrix of a product is read.
#[derive(Clone, Copy)]
enum Plan<'a> {
    /// Panels against quantized activations.
    Panels(&'a PackedMatrix),
    /// File-layout rows against quantized activations.
    QuantizedRows(super::q8::BlockDot),
    /// Rows decoded to f32 against f32 activations.
    DecodedRows,
}

impl Plan<'_> {
    /// Rows handed out together: a panel, or one row.
    fn unit(&self) -> usize {
        match self {
            Plan::Panels(_) => PANEL_ROWS,
            _ => 1,
        }
    }
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
    let plans: Vec<Plan> = ws
        .iter()
        .map(|w| match (activations, &w.packed) {
            (Activations::Exact, _) => Plan::DecodedRows,
            (Activations::Quantized, Some(packed)) => Plan::Panels(packed),
            (Activations::Quantized, None) => {
                file_layout_kernel(w.ty).map_or(Plan::DecodedRows, Plan::QuantizedRows)
            }
        })
        .collect();
    let quantized: Option<Vec<Vec<Q8Block>>> = plans
        .iter()
        .any(|p| !matches!(p, Plan::DecodedRows))
        .then(|| {
            xs.chunks_exact(cols)
                .map(|x| {
                    let mut blocks = Vec::new();
                    quantize_row(x, &mut blocks);
                    blocks
                })
                .collect()
        });
    let tokens: Vec<&[Q8Block]> = quantized.iter().flatten().map(|q| &q[..]).collect();
    let threads = rayon::current_num_threads() * TASKS_PER_THREAD;
    // (matrix, first row, last row) for every task of every matrix; a
    // task's rows are whole units of its plan.
    let tasks: Vec<(usize, usize, usize)> = ws
        .iter()
        .zip(&plans)
        .enumerate()
        .flat_map(|(m, (w, plan))| {
            let unit = plan.unit();
            let per_task = (w.rows.div_ceil(threads).max(MIN_ROWS_PER_TASK)).next_multiple_of(unit);
            (0..w.rows.div_ceil(per_task))
                .map(move |i| (m, i * per_task, ((i + 1) * per_task).min(w.rows)))
        })
        .collect();
    let results: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|&(m, first, last)| match plans[m] {
            Plan::Panels(packed) => panels_product(packed, first..last, &tokens),
            Plan::QuantizedRows(kernel) => (first..last)
                .flat_map(|r| tokens.iter().map(move |x| kernel(ws[m].row(r), x)))
                .collect(),
            Plan::DecodedRows => decoded_rows_product(ws[m], first..last, xs),
        })
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

/// Rows `rows` (whole panels, but for the matrix's end) against all tokens,
/// row-major (`[row][token]`).
fn panels_product(
    m: &PackedMatrix,
    rows: std::ops::Range<usize>,
    tokens: &[&[Q8Block]],
) -> Vec<f32> {
    let kernels = PanelKernels::detected();
    let n = tokens.len();
    let mut local = vec![0.0f32; rows.len() * n];
    let mut tile = vec![[0.0f32; PANEL_ROWS]; n];
    for p in rows.start / PANEL_ROWS..rows.end.div_ceil(PANEL_ROWS) {
        kernels.panel_product(m, p, tokens, &mut tile);
        for r in 0..PANEL_ROWS.min(rows.end - p * PANEL_ROWS) {
            let at = (p * PANEL_ROWS + r - rows.start) * n;
            for (t, token) in tile.iter().enumerate() {
                local[at + t] = token[r];
            }
        }
    }
    local
}

/// Rows `rows` of `w` decoded to f32 against the f32 activations.
fn decoded_rows_product(w: &Matrix, rows: std::ops::Range<usize>, xs: &[f32]) -> Vec<f32> {
    let mut decoded = vec![0.0f32; w.cols];
    let mut local = Vec::with_capacity(rows.len() * xs.len() / w.cols);
    for r in rows {
        dequantize(w.ty, w.row(r), &mut decoded);
        local.extend(xs.chunks_exact(w.cols).map(|x| dot(&decoded, x)));
    }
    local
}
