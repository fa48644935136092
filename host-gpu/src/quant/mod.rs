//! Weight formats: decoding every supported GGML block type to `f32`.
//!
//! These are the reference (scalar) decoders: the loader uses them for
//! tensors it keeps in `f32`, and the fast kernels are tested against them.
//! They are themselves checked against llama.cpp's Python `gguf` package
//! (vectors in `host-gpu/tests/reference/quant_vectors.json`).

mod blocks;

pub use blocks::dequantize;
