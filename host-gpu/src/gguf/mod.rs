//! GGUF model files: reading (memory-mapped, validated) and writing (for the
//! tiny models tests generate).
//!
//! A GGUF file is a header (magic, version, counts), metadata key/values,
//! tensor infos (name, shape, type, offset), then the tensor data, aligned to
//! `general.alignment` (32 by default). Everything read from the file is
//! checked before use: a truncated, malformed or hostile file gives a
//! [`GgufError`] naming the file and the problem, never a panic or an
//! out-of-bounds read.

mod error;
mod metadata;
mod reader;
#[cfg(test)]
mod tests;
mod types;
mod writer;

pub use error::GgufError;
pub use metadata::MetadataValue;
pub use reader::{GgufFile, TensorBytes, TensorInfo};
pub use types::GgmlType;
pub use writer::GgufWriter;

/// `GGUF` in little-endian.
pub const GGUF_MAGIC: u32 = 0x4655_4747;

/// Alignment of tensor data unless `general.alignment` says otherwise.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Limits on what a file may declare, so that a hostile file cannot make the
/// loader allocate without bound before its data is even checked.
pub mod limits {
    /// Tensors in one file.
    pub const MAX_TENSORS: u64 = 1 << 16;
    /// Metadata entries in one file.
    pub const MAX_METADATA: u64 = 1 << 16;
    /// Bytes in one metadata string (chat templates are the longest in practice).
    pub const MAX_STRING_BYTES: u64 = 1 << 22;
    /// Elements in one metadata array (token lists are the longest in practice).
    pub const MAX_ARRAY_LEN: u64 = 1 << 24;
    /// Dimensions of one tensor.
    pub const MAX_DIMS: u32 = 4;
    /// Nesting of arrays inside arrays.
    pub const MAX_ARRAY_DEPTH: usize = 2;
}
