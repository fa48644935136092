//! safetensors files: a little-endian u64 header length, a JSON header
//! naming each tensor's dtype, shape and byte range, then the data.
//! Memory-mapped; every range is checked against the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::Deserialize;

/// Largest header accepted.
/// Stops: a hostile file making the loader parse gigabytes of JSON.
pub const MAX_HEADER_BYTES: u64 = 16 << 20;

/// What is wrong with a safetensors file.
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
}

#[derive(Deserialize)]
struct RawTensor {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

/// One tensor's place in the file.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub dtype: String,
    pub shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// An open safetensors file.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    map: Mmap,
    tensors: HashMap<String, TensorEntry>,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self, SafetensorsError> {
        let invalid = |what: String| SafetensorsError::Invalid {
            path: path.to_owned(),
            what,
        };
        let file = std::fs::File::open(path).map_err(|source| SafetensorsError::Io {
            path: path.to_owned(),
            source,
        })?;
        // SAFETY: read-only private mapping; every read below is bounds-checked.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| SafetensorsError::Io {
            path: path.to_owned(),
            source,
        })?;
        if map.len() < 8 {
            return Err(invalid("shorter than its 8-byte header length".into()));
        }
        let header_len = u64::from_le_bytes(map[..8].try_into().expect("8 bytes"));
        if header_len > MAX_HEADER_BYTES || 8 + header_len > map.len() as u64 {
            return Err(invalid(format!(
                "header length {header_len} is impossible for a {}-byte file",
                map.len()
            )));
        }
        let data_start = 8 + header_len as usize;
        let raw: HashMap<String, serde_json::Value> =
            serde_json::from_slice(&map[8..data_start])
                .map_err(|e| invalid(format!("header is not valid JSON: {e}")))?;
        let data_len = map.len() - data_start;
        let mut tensors = HashMap::new();
        for (name, value) in raw {
            if name == "__metadata__" {
                continue;
            }
            let t: RawTensor = serde_json::from_value(value)
                .map_err(|e| invalid(format!("tensor `{name}`: {e}")))?;
            let [start, end] = t.data_offsets;
            let elements = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            let size = match t.dtype.as_str() {
                "F32" | "I32" => 4,
                "F16" | "BF16" => 2,
                "I64" => 8,
                _ => 1,
            };
            if start > end
                || end > data_len
                || elements.and_then(|e| e.checked_mul(size)) != Some(end - start)
            {
                return Err(invalid(format!(
                    "tensor `{name}` has a bad byte range or shape"
                )));
            }
            tensors.insert(
                name,
                TensorEntry {
                    dtype: t.dtype,
                    shape: t.shape,
                    start: data_start + start,
                    end: data_start + end,
                },
            );
        }
        Ok(SafetensorsFile {
            path: path.to_owned(),
            map,
            tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn entry(&self, name: &str) -> Result<&TensorEntry, SafetensorsError> {
        self.tensors
            .get(name)
            .ok_or_else(|| SafetensorsError::Invalid {
                path: self.path.clone(),
                what: format!("no tensor named `{name}`"),
            })
    }

    /// An F32 tensor of exactly `shape`, copied out.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, SafetensorsError> {
        let entry = self.entry(name)?;
        if entry.dtype != "F32" || entry.shape != shape {
            return Err(SafetensorsError::Invalid {
                path: self.path.clone(),
                what: format!(
                    "tensor `{name}` is {} {:?}, expected F32 {shape:?}",
                    entry.dtype, entry.shape
                ),
            });
        }
        Ok(self.map[entry.start..entry.end]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}
