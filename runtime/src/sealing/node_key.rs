//! The node key: the root of encryption at rest. It wraps every database
//! key and is itself never stored in a database. An operator names a file or
//! an environment variable that holds it (64 hex digits); with neither, a
//! key is generated once at `<data dir>/node.key`, which keeps a development
//! node working but protects nothing against a copy of the whole disk.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use super::{SealingError, with_dir_locked, write_atomically};

/// Environment variable a node key is read from when no other source is named.
pub const DEFAULT_NODE_KEY_ENV: &str = "SOVRA_NODE_KEY";

/// Name of the node key file generated inside a data directory.
pub const NODE_KEY_FILE: &str = "node.key";

/// Bytes in a node key (and in every database key).
pub(crate) const KEY_BYTES: usize = 32;

/// Where the node key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKeySource {
    /// An environment variable holding 64 hex digits.
    Env(String),
    /// A file holding 64 hex digits, readable by the node's user only.
    File(PathBuf),
    /// [`DEFAULT_NODE_KEY_ENV`] if set; otherwise `<data dir>/node.key`,
    /// generated on first start of an empty data directory.
    Default,
}

/// The node's root key. Zeroed when dropped; never printed (its
/// [`fingerprint`](NodeKey::fingerprint) names it in messages).
#[derive(Clone)]
pub struct NodeKey {
    bytes: [u8; KEY_BYTES],
}

impl Drop for NodeKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey({})", self.fingerprint())
    }
}

impl NodeKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_BYTES];
        getrandom::fill(&mut bytes).expect("the operating system's random source failed");
        NodeKey { bytes }
    }

    /// Parses 64 hex digits (surrounding whitespace ignored). `source_name`
    /// says where the text came from, for the error.
    pub fn from_hex(text: &str, source_name: &str) -> Result<Self, SealingError> {
        let invalid = |why: String| SealingError::NodeKeyInvalid {
            source_name: source_name.to_owned(),
            why,
        };
        let text = text.trim();
        if text.len() != KEY_BYTES * 2 {
            return Err(invalid(format!(
                "a node key is {} hex digits, this is {} characters",
                KEY_BYTES * 2,
                text.len()
            )));
        }
        let mut bytes = [0u8; KEY_BYTES];
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| invalid("a node key is hex digits only".into()))?;
        if bytes.iter().all(|&b| b == 0) {
            return Err(invalid("the all-zero key is not a key".into()));
        }
        Ok(NodeKey { bytes })
    }

    /// Loads the key from `source`. `data_dir` is where a
    /// [`NodeKeySource::Default`] key file lives; `sealed_files` says whether
    /// that directory already holds sealed data, in which case a missing
    /// key file is an error and never silently replaced.
    pub fn load(
        source: &NodeKeySource,
        data_dir: &Path,
        sealed_files: impl FnOnce() -> bool,
    ) -> Result<Self, SealingError> {
        match source {
            NodeKeySource::Env(name) => Self::from_env(name),
            NodeKeySource::File(path) => Self::from_file(path),
            NodeKeySource::Default => {
                if std::env::var_os(DEFAULT_NODE_KEY_ENV).is_some() {
                    return Self::from_env(DEFAULT_NODE_KEY_ENV);
                }
                let path = data_dir.join(NODE_KEY_FILE);
                if path.exists() {
                    return Self::from_file(&path);
                }
                std::fs::create_dir_all(data_dir).map_err(SealingError::io(data_dir))?;
                with_dir_locked(data_dir, || {
                    Self::create_default(&path, data_dir, sealed_files)
                })
            }
        }
    }

    /// Generates the default key file at `path` (the data directory locked),
    /// unless another process just did or sealed data exists without it.
    fn create_default(
        path: &Path,
        data_dir: &Path,
        sealed_files: impl FnOnce() -> bool,
    ) -> Result<Self, SealingError> {
        if path.exists() {
            return Self::from_file(path);
        }
        if sealed_files() {
            return Err(SealingError::NodeKeyMissing(format!(
                "{} holds encrypted data but its node key file {} is gone; restore it, or \
                 name the key with node-key-file or {DEFAULT_NODE_KEY_ENV}",
                data_dir.display(),
                path.display()
            )));
        }
        let key = Self::generate();
        write_atomically(path, format!("{}\n", hex::encode(key.bytes)).as_bytes())?;
        tracing::info!(
            path = %path.display(),
            fingerprint = %key.fingerprint(),
            "generated a node key inside the data directory; for protection against a copy \
             of this disk keep the key elsewhere (node-key-file or {DEFAULT_NODE_KEY_ENV})"
        );
        Ok(key)
    }

    fn from_env(name: &str) -> Result<Self, SealingError> {
        let source_name = format!("environment variable {name}");
        let text = std::env::var(name)
            .map_err(|_| SealingError::NodeKeyMissing(format!("{source_name} is not set")))?;
        Self::from_hex(&text, &source_name)
    }

    fn from_file(path: &Path) -> Result<Self, SealingError> {
        let source_name = format!("file {}", path.display());
        let text = std::fs::read_to_string(path)
            .map_err(|e| SealingError::NodeKeyMissing(format!("cannot read {source_name}: {e}")))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(SealingError::io(path))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(SealingError::NodeKeyInvalid {
                    source_name,
                    why: format!(
                        "it is readable by other users (mode {:o}); make it the node's \
                         alone (chmod 600)",
                        mode & 0o777
                    ),
                });
            }
        }
        Self::from_hex(&text, &source_name)
    }

    /// A short public name of this key: the first 8 bytes of a hash of it,
    /// in hex. Tells keys apart in messages without revealing them.
    pub fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(b"sovra node key fingerprint v1\0");
        hash.update(self.bytes);
        hex::encode(&hash.finalize()[..8])
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_BYTES] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_exactly_64_hex_digits_and_not_all_zero() {
        let good = "ab".repeat(32);
        assert!(NodeKey::from_hex(&format!("  {good}\n"), "test").is_ok());
        for bad in [
            "",
            "ab",
            &"zz".repeat(32),
            &"00".repeat(32),
            &"ab".repeat(33),
        ] {
            let error = NodeKey::from_hex(bad, "test").unwrap_err().to_string();
            assert!(error.contains("invalid node key from test"), "{error}");
        }
    }

    #[test]
    fn the_default_key_is_generated_once_and_never_over_sealed_data() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeKey::load(&NodeKeySource::Default, dir.path(), || false).unwrap();
        let again = NodeKey::load(&NodeKeySource::Default, dir.path(), || true).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        std::fs::remove_file(dir.path().join(NODE_KEY_FILE)).unwrap();
        let error = NodeKey::load(&NodeKeySource::Default, dir.path(), || true).unwrap_err();
        assert!(matches!(error, SealingError::NodeKeyMissing(_)), "{error}");
    }

    #[test]
    fn processes_starting_together_on_a_new_directory_get_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let fingerprints: Vec<String> = std::thread::scope(|scope| {
            let starts: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        NodeKey::load(&NodeKeySource::Default, dir.path(), || false)
                            .unwrap()
                            .fingerprint()
                    })
                })
                .collect();
            starts.into_iter().map(|s| s.join().unwrap()).collect()
        });
        let on_disk = NodeKey::load(&NodeKeySource::Default, dir.path(), || true).unwrap();
        assert!(
            fingerprints.iter().all(|f| *f == on_disk.fingerprint()),
            "{fingerprints:?}"
        );
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "cd".repeat(32)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = NodeKey::load(&NodeKeySource::File(path.clone()), dir.path(), || false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("chmod 600"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(NodeKey::load(&NodeKeySource::File(path), dir.path(), || false).is_ok());
    }
}
