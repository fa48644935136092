//! The lock on a runtime's data directory: every runtime over it holds the
//! lock shared, and offline maintenance (changing a tenant's key) holds it
//! exclusively, so a database is never rewritten under a running node or
//! `sovra run` that has it open (whose writes would go to the replaced file
//! and be lost). An advisory `flock`: it ends with the process, so a crash
//! never leaves a directory locked.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// Name of the lock file inside a data directory.
pub const LOCK_FILE: &str = "lock";

/// A held lock on a data directory; released when dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Why a data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum DirLockError {
    #[error(
        "{dir} is in use ({why}); stop the node or `sovra run` using it first",
        dir = .0.display(), why = .1
    )]
    InUse(PathBuf, &'static str),
    #[error("cannot lock {path}: {source}", path = .0.display(), source = .1)]
    Io(PathBuf, std::io::Error),
}

impl DataDirLock {
    /// Locks `dir` shared: any number of runtimes may use it at once.
    pub fn shared(dir: &Path) -> Result<Self, DirLockError> {
        Self::take(dir, false)
    }

    /// Locks `dir` for this process alone.
    pub fn exclusive(dir: &Path) -> Result<Self, DirLockError> {
        Self::take(dir, true)
    }

    fn take(dir: &Path, exclusive: bool) -> Result<Self, DirLockError> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| DirLockError::Io(path.clone(), e))?;
        let taken = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match taken {
            Ok(()) => Ok(DataDirLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(DirLockError::InUse(
                dir.to_owned(),
                if exclusive {
                    "a runtime has it open"
                } else {
                    "maintenance holds it"
                },
            )),
            Err(TryLockError::Error(e)) => Err(DirLockError::Io(path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_share_a_directory_and_maintenance_excludes_them() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::shared(dir.path()).unwrap();
        let second = DataDirLock::shared(dir.path()).unwrap();
        let refused = DataDirLock::exclusive(dir.path()).unwrap_err();
        assert!(refused.to_string().contains("stop the node"), "{refused}");
        drop((first, second));
        let maintenance = DataDirLock::exclusive(dir.path()).unwrap();
        assert!(DataDirLock::shared(dir.path()).is_err());
        drop(maintenance);
        assert!(DataDirLock::shared(dir.path()).is_ok());
    }
}
