//! Errors from reading a GGUF file, each naming the file.

use std::path::PathBuf;

/// What is wrong with a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a GGUF file (bad magic {found:#010x})")]
    BadMagic { path: PathBuf, found: u32 },
    #[error("{path}: unsupported GGUF version {version} (supported: 2, 3)")]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error(
        "{path}: truncated: {what} needs {needed} bytes at offset {offset}, the file has {len}"
    )]
    Truncated {
        path: PathBuf,
        what: String,
        offset: u64,
        needed: u64,
        len: u64,
    },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("{path}: tensor `{tensor}` has type {code}, which is unknown or unsupported")]
    UnsupportedTensorType {
        path: PathBuf,
        tensor: String,
        code: u32,
    },
    #[error("{path}: no tensor named `{name}`")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: metadata `{key}` is missing or has the wrong type (expected {expected})")]
    Metadata {
        path: PathBuf,
        key: String,
        expected: &'static str,
    },
}
