//! Parsers that read files (they map them) get the fuzzed bytes as one.

use std::io::Write;
use std::path::{Path, PathBuf};

/// `data` written to a fresh file named `name` in a directory of its own
/// (in memory where /dev/shm exists); both go when the guard is dropped.
pub(crate) fn as_file(name: &str, data: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .expect("a temporary directory");
    let path = dir.path().join(name);
    std::fs::File::create(&path)
        .and_then(|mut file| file.write_all(data))
        .expect("the input is written");
    (dir, path)
}

/// The repository's root (for the real models some targets use).
pub(crate) fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
