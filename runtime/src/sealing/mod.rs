//! Encryption at rest. Every database the node writes (each tenant's, the
//! audit log, the node's own) is a SQLCipher file encrypted under its own
//! random 256-bit key, and that key is stored only wrapped (ChaCha20-Poly1305)
//! by the node key, which comes from a file or an environment variable and is
//! never written beside the data by an operator who configures one.
//!
//! Someone who copies the disk without the node key holds only ciphertext:
//! pages, write-ahead log and wrapped keys. Destroying a database's key file
//! makes every copy of that database unreadable (crypto-erase).
//!
//! - [`NodeKey`]: the root key, where it comes from, its fingerprint.
//! - [`key_file`]: a database's wrapped keys, `<database>.key`.
//! - [`database`]: opening a sealed database, encrypting a plain one in
//!   place, and changing its key, each crash-safe.

pub mod database;
pub mod key_file;
mod node_key;
mod openssl;

use std::path::PathBuf;
use std::sync::Arc;

pub use database::{SealedDatabase, plain_image, rekey};
pub use key_file::DatabaseKey;
pub use node_key::{DEFAULT_NODE_KEY_ENV, NODE_KEY_FILE, NodeKey, NodeKeySource};

/// Why a sealed database or the node key could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SealingError {
    #[error("no node key: {0}")]
    NodeKeyMissing(String),
    #[error("invalid node key from {source_name}: {why}")]
    NodeKeyInvalid { source_name: String, why: String },
    #[error(
        "wrong node key: {path} was sealed by node key {sealed_by}, but this node's key is \
         {ours}; start the node with the key its data was written under"
    )]
    WrongNodeKey {
        path: PathBuf,
        sealed_by: String,
        ours: String,
    },
    #[error("key file {path} is damaged: {why}")]
    KeyFileDamaged { path: PathBuf, why: String },
    #[error(
        "{path} is encrypted but its key file {key_file} is missing: restore it from the \
         backup taken with the database"
    )]
    KeyFileMissing { path: PathBuf, key_file: PathBuf },
    #[error("no key in {key_file} opens {path}: the database or its key file was replaced")]
    NoKeyOpens { path: PathBuf, key_file: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
    #[error("{path}: {message}")]
    Sqlite { path: PathBuf, message: String },
}

impl SealingError {
    pub(crate) fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> SealingError + '_ {
        move |source| SealingError::Io {
            path: path.to_owned(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn sqlite(path: &std::path::Path) -> impl Fn(rusqlite::Error) -> SealingError + '_ {
        move |error| SealingError::Sqlite {
            path: path.to_owned(),
            message: error.to_string(),
        }
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or
/// the new one, never a mix: a temporary sibling, fsync, rename, fsync of the
/// directory. The file is readable by the node's user only.
pub(crate) fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<(), SealingError> {
    use std::io::Write;
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy());
    let temporary = dir.join(format!(".{name}.writing"));
    let io = SealingError::io(&temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary).map_err(&io)?;
    file.write_all(bytes).map_err(&io)?;
    file.sync_all().map_err(&io)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(SealingError::io(path))?;
    sync_dir(&dir)
}

/// Runs `f` holding an exclusive lock on the directory `dir` (an advisory
/// `flock` on the directory itself, released when `f` returns or the process
/// dies). Two processes that would both create a key there (two `sovra run`
/// starting on a new data directory) take turns, and the second finds the
/// first one's key instead of sealing data under a key that is then lost.
pub(crate) fn with_dir_locked<T>(
    dir: &std::path::Path,
    f: impl FnOnce() -> Result<T, SealingError>,
) -> Result<T, SealingError> {
    let handle = std::fs::File::open(dir).map_err(SealingError::io(dir))?;
    handle.lock().map_err(SealingError::io(dir))?;
    let result = f();
    drop(handle);
    result
}

/// Makes a rename or removal in `dir` durable.
pub(crate) fn sync_dir(dir: &std::path::Path) -> Result<(), SealingError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(SealingError::io(dir))
}

pub(crate) fn parent_dir(path: &std::path::Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}
