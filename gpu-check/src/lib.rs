//! `sovra-gpu-check`: how sovra's CUDA backend is checked, kept apart from
//! the engine it checks (`sovra-gpu`).
//!
//! - [`kernels`]: each kernel of `host-gpu/kernels/llama.cu`, and the half
//!   product, against a host reference, through any [`KernelRunner`]
//!   (a CUDA device, or the emulated GPU the tests build).
//! - [`checks`]: the GPU check a lent GPU runs (`scripts/gpu-check`, the
//!   `gpu_check` binary): kernels, the tiny models as a node loads them,
//!   SmolLM2-shaped agreement with the CPU, and throughput against the
//!   bandwidth roofline; the tests run the same code at small shapes.
//! - The tests: `tests/kernel_emulation.rs` runs the backend on an emulated
//!   GPU (the kernels compiled with g++ against `kernels/emulation/`), and
//!   `tests/cuda.rs` the backend on a real GPU where one is present.
//!
//! ```no_run
//! // On a machine with an NVIDIA GPU: which kernels disagree with the host?
//! for check in sovra_gpu_check::kernels::check_kernels(0).unwrap() {
//!     println!("{} {}: {}", check.kernel, check.half.name(), check.passed());
//! }
//! ```
//!
//! [`KernelRunner`]: kernels::KernelRunner

pub mod checks;
pub mod kernels;
