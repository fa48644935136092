//! The CPU backend: matrix products on quantized weights and the small
//! element-wise operations of a transformer layer.

mod dense;
mod matmul;
mod ops;
mod packed;
mod panel;
mod q8;
mod simd;
#[cfg(test)]
mod test_weights;

pub use dense::{linear, linear_into};
pub use matmul::{Activations, Matrix, matmul, matmul_group};
pub use ops::{dot, exp, lane_sum, rms_norm, rope, rope_frequencies, silu_mul, softmax};
