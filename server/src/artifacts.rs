//! Plugin components stored by the sha256 of their bytes
//! (`artifacts/sha256/<hex>.wasm`). A name is its content, so a stored file
//! can never be swapped for other bytes under the same name, and storing the
//! same component twice is a no-op. Writes go to a temporary file that is
//! synced and renamed into place: a crash leaves no half-written artifact.

use std::io::Write;
use std::path::{Path, PathBuf};

use sovra_runtime::Digest;

/// The content-addressed artifact store.
#[derive(Debug)]
pub struct ArtifactStore {
    dir: PathBuf,
}

impl ArtifactStore {
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("artifacts").join("sha256");
        std::fs::create_dir_all(&dir)?;
        Ok(ArtifactStore { dir })
    }

    pub fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.wasm"))
    }

    /// Stores `bytes`; returns their digest (hex).
    pub fn put(&self, bytes: &[u8]) -> std::io::Result<String> {
        let digest = Digest::of(bytes).to_hex();
        let path = self.path(&digest);
        if path.exists() {
            return Ok(digest);
        }
        // A private temporary name: two stores of the same bytes at once
        // never write one file.
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        file.write_all(bytes)?;
        file.as_file().sync_all()?;
        file.persist(&path).map_err(|e| e.error)?;
        Ok(digest)
    }

    /// The bytes stored under `digest`, checked against it.
    pub fn get(&self, digest: &str) -> std::io::Result<Vec<u8>> {
        let bytes = std::fs::read(self.path(digest))?;
        if Digest::of(&bytes).to_hex() != digest {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("artifact sha256:{digest} does not match its content"),
            ));
        }
        Ok(bytes)
    }

    /// Removes an artifact (after a submission failed past storing it).
    pub fn remove(&self, digest: &str) {
        let _ = std::fs::remove_file(self.path(digest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_addressed_round_trip_and_tamper_check() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path()).unwrap();
        let digest = store.put(b"component").unwrap();
        assert_eq!(store.put(b"component").unwrap(), digest);
        assert_eq!(store.get(&digest).unwrap(), b"component");
        std::fs::write(store.path(&digest), b"swapped").unwrap();
        assert!(store.get(&digest).is_err());
    }
}
