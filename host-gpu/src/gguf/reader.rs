//! Reading a GGUF file: memory-mapped, every length and offset checked.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::limits::{
    MAX_ARRAY_DEPTH, MAX_ARRAY_LEN, MAX_DIMS, MAX_METADATA, MAX_STRING_BYTES, MAX_TENSORS,
};
use super::{DEFAULT_ALIGNMENT, GGUF_MAGIC, GgmlType, GgufError, MetadataValue};

/// Where one tensor's data lies, and its shape and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions as GGUF lists them: the first is the fastest-varying
    /// (a `[rows x cols]` matrix is `[cols, rows]`).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute offset of the data in the file.
    pub offset: u64,
    pub size: u64,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// An open, validated GGUF file.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    map: Arc<Mmap>,
    version: u32,
    metadata: BTreeMap<String, MetadataValue>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
}

impl GgufFile {
    /// Maps and validates `path`.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and private to this process; a file
        // changed underneath by another process could change what we read,
        // which every read below bounds-checks, but cannot make it unsafe.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::parse(path, map)
    }

    fn parse(path: &Path, map: Mmap) -> Result<Self, GgufError> {
        let mut cursor = Cursor {
            path,
            bytes: &map,
            at: 0,
        };
        let magic = cursor.u32("magic")?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic {
                path: path.to_owned(),
                found: magic,
            });
        }
        let version = cursor.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion {
                path: path.to_owned(),
                version,
            });
        }
        let tensor_count = cursor.count("tensor count", MAX_TENSORS)?;
        let metadata_count = cursor.count("metadata count", MAX_METADATA)?;

        let mut metadata = BTreeMap::new();
        for _ in 0..metadata_count {
            let key = cursor.string("metadata key")?;
            let ty = cursor.u32("metadata type")?;
            let value = cursor.value(ty, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(cursor.invalid(format!("metadata key `{key}` appears twice")));
            }
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(value) => match value.as_u64() {
                Some(a) if a.is_power_of_two() && a <= 1 << 16 => a,
                _ => {
                    return Err(cursor
                        .invalid("general.alignment is not a power of two up to 65536".into()));
                }
            },
        };

        let mut raw = Vec::with_capacity(tensor_count as usize);
        for _ in 0..tensor_count {
            let name = cursor.string("tensor name")?;
            let n_dims = cursor.u32("tensor dimension count")?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(cursor.invalid(format!(
                    "tensor `{name}` has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(cursor.u64("tensor dimension")?);
            }
            let code = cursor.u32("tensor type")?;
            let ty = GgmlType::from_code(code).ok_or_else(|| GgufError::UnsupportedTensorType {
                path: path.to_owned(),
                tensor: name.clone(),
                code,
            })?;
            let offset = cursor.u64("tensor offset")?;
            raw.push((name, dims, ty, offset));
        }

        let data_start = cursor.at.div_ceil(alignment) * alignment;
        let file_len = map.len() as u64;
        let mut tensors = Vec::with_capacity(raw.len());
        let mut by_name = HashMap::with_capacity(raw.len());
        for (name, dims, ty, relative) in raw {
            let elements = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    cursor.invalid(format!(
                        "tensor `{name}` has an empty or absurd shape {dims:?}"
                    ))
                })?;
            let size = ty.bytes_for(elements).ok_or_else(|| {
                cursor.invalid(format!(
                    "tensor `{name}` of type {} has {elements} elements, not a whole number of {}-element blocks",
                    ty.name(),
                    ty.block_len()
                ))
            })?;
            if !relative.is_multiple_of(alignment) {
                return Err(cursor.invalid(format!(
                    "tensor `{name}` data offset {relative} is not {alignment}-aligned"
                )));
            }
            let offset = data_start
                .checked_add(relative)
                .filter(|start| start.checked_add(size).is_some_and(|end| end <= file_len))
                .ok_or_else(|| GgufError::Truncated {
                    path: path.to_owned(),
                    what: format!("tensor `{name}` data"),
                    offset: data_start.saturating_add(relative),
                    needed: size,
                    len: file_len,
                })?;
            if by_name.insert(name.clone(), tensors.len()).is_some() {
                return Err(cursor.invalid(format!("tensor `{name}` appears twice")));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
                size,
            });
        }
        Ok(GgufFile {
            path: path.to_owned(),
            map: Arc::new(map),
            version,
            metadata,
            tensors,
            by_name,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn metadata(&self) -> &BTreeMap<String, MetadataValue> {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata.get(key)
    }

    /// A required unsigned integer.
    pub fn require_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get(key)
            .and_then(MetadataValue::as_u64)
            .ok_or_else(|| self.metadata_error(key, "an unsigned integer"))
    }

    /// A required float.
    pub fn require_f64(&self, key: &str) -> Result<f64, GgufError> {
        self.get(key)
            .and_then(MetadataValue::as_f64)
            .ok_or_else(|| self.metadata_error(key, "a number"))
    }

    /// A required string.
    pub fn require_str(&self, key: &str) -> Result<&str, GgufError> {
        self.get(key)
            .and_then(MetadataValue::as_str)
            .ok_or_else(|| self.metadata_error(key, "a string"))
    }

    fn metadata_error(&self, key: &str, expected: &'static str) -> GgufError {
        GgufError::Metadata {
            path: self.path.clone(),
            key: key.to_owned(),
            expected,
        }
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.by_name
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| GgufError::MissingTensor {
                path: self.path.clone(),
                name: name.to_owned(),
            })
    }

    /// The raw bytes of a tensor (bounds were checked at open).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        &self.map[info.offset as usize..(info.offset + info.size) as usize]
    }

    /// The raw bytes of a tensor, sharing the mapping (no copy), usable after
    /// the `GgufFile` itself is gone.
    pub fn shared_tensor_data(&self, info: &TensorInfo) -> TensorBytes {
        TensorBytes {
            map: Arc::clone(&self.map),
            range: info.offset as usize..(info.offset + info.size) as usize,
        }
    }
}

/// A tensor's bytes inside a shared file mapping.
#[derive(Debug, Clone)]
pub struct TensorBytes {
    map: Arc<Mmap>,
    range: std::ops::Range<usize>,
}

impl std::ops::Deref for TensorBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

/// A bounds-checked little-endian reader over the mapped file.
struct Cursor<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    at: u64,
}

impl Cursor<'_> {
    fn take(&mut self, what: &str, n: u64) -> Result<&[u8], GgufError> {
        let len = self.bytes.len() as u64;
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= len)
            .ok_or_else(|| GgufError::Truncated {
                path: self.path.to_owned(),
                what: what.to_owned(),
                offset: self.at,
                needed: n,
                len,
            })?;
        let slice = &self.bytes[self.at as usize..end as usize];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        Ok(self.take(what, N as u64)?.try_into().expect("took N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn count(&mut self, what: &str, max: u64) -> Result<u64, GgufError> {
        let n = self.u64(what)?;
        if n > max {
            return Err(self.invalid(format!("{what} {n} is more than the {max} allowed")));
        }
        Ok(n)
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.count(&format!("{what} length"), MAX_STRING_BYTES)?;
        let bytes = self.take(what, len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.invalid(format!("{what} is not UTF-8")))
    }

    fn invalid(&self, what: String) -> GgufError {
        GgufError::Invalid {
            path: self.path.to_owned(),
            what: format!("{what} (near offset {})", self.at),
        }
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<MetadataValue, GgufError> {
        Ok(match ty {
            0 => MetadataValue::U8(self.array::<1>(key)?[0]),
            1 => MetadataValue::I8(self.array::<1>(key)?[0] as i8),
            2 => MetadataValue::U16(u16::from_le_bytes(self.array(key)?)),
            3 => MetadataValue::I16(i16::from_le_bytes(self.array(key)?)),
            4 => MetadataValue::U32(u32::from_le_bytes(self.array(key)?)),
            5 => MetadataValue::I32(i32::from_le_bytes(self.array(key)?)),
            6 => MetadataValue::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => MetadataValue::Bool(false),
                1 => MetadataValue::Bool(true),
                other => {
                    return Err(self.invalid(format!("metadata `{key}` has bool value {other}")));
                }
            },
            8 => MetadataValue::String(self.string(key)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.invalid(format!("metadata `{key}` nests arrays too deeply")));
                }
                let element_type = self.u32(key)?;
                let len = self.count(&format!("metadata `{key}` array length"), MAX_ARRAY_LEN)?;
                // Each element takes at least one byte: refuse lengths the
                // rest of the file cannot hold before allocating for them.
                if len > self.bytes.len() as u64 - self.at {
                    return Err(self.invalid(format!(
                        "metadata `{key}` declares {len} elements, more than the file holds"
                    )));
                }
                let mut values = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    values.push(self.value(element_type, key, depth + 1)?);
                }
                MetadataValue::Array(values)
            }
            10 => MetadataValue::U64(u64::from_le_bytes(self.array(key)?)),
            11 => MetadataValue::I64(i64::from_le_bytes(self.array(key)?)),
            12 => MetadataValue::F64(f64::from_le_bytes(self.array(key)?)),
            other => return Err(self.invalid(format!("metadata `{key}` has unknown type {other}"))),
        })
    }
}
