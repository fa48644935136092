//! The audit journal: records appended as lines to a file of this process's
//! (one `write` for all records pending), so that they survive a crash of
//! the process until the writer commits them to the database; and finding,
//! after a crash, the journals no live process holds any more. Each line is
//! a record's JSON sealed (ChaCha20-Poly1305) under a key derived from the
//! audit database's key: a record's error text may quote a guest, and the
//! journal is on the same disk as the encrypted database.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicU64, Ordering};

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

use super::AuditRecord;
use crate::sealing::DatabaseKey;

/// Bytes of a line's nonce (XChaCha20: large enough that a random start per
/// process never meets another process's).
const NONCE_BYTES: usize = 24;

/// Bytes of a nonce drawn at random once per [`LineSeal`]; the rest counts.
const NONCE_PREFIX_BYTES: usize = 16;

/// Seals and opens journal lines. Nonces are a random prefix drawn once and
/// a counter, so sealing a line costs no system call.
pub(super) struct LineSeal {
    cipher: XChaCha20Poly1305,
    prefix: [u8; NONCE_PREFIX_BYTES],
    counter: AtomicU64,
}

impl std::fmt::Debug for LineSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LineSeal(..)")
    }
}

impl LineSeal {
    /// The seal of the journals of the audit database keyed by `key`.
    pub(super) fn new(key: &DatabaseKey) -> Self {
        let mut prefix = [0u8; NONCE_PREFIX_BYTES];
        getrandom::fill(&mut prefix).expect("the operating system's random source failed");
        LineSeal {
            cipher: XChaCha20Poly1305::new(Key::from_slice(key.derive("audit journal").as_slice())),
            prefix,
            counter: AtomicU64::new(0),
        }
    }

    /// `plain` sealed as one line of hex (no newline).
    pub(super) fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        nonce[..NONCE_PREFIX_BYTES].copy_from_slice(&self.prefix);
        let count = self.counter.fetch_add(1, Ordering::Relaxed);
        nonce[NONCE_PREFIX_BYTES..].copy_from_slice(&count.to_le_bytes());
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plain)
            .expect("sealing a record cannot fail");
        let mut line = hex::encode(nonce).into_bytes();
        line.extend_from_slice(hex::encode(sealed).as_bytes());
        line
    }

    /// What `line` sealed, or `None` for a line that is not one of this
    /// seal's whole lines (cut short by a crash, or altered).
    pub(super) fn open(&self, line: &[u8]) -> Option<Vec<u8>> {
        let bytes = hex::decode(line).ok()?;
        if bytes.len() < NONCE_BYTES {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        self.cipher.decrypt(XNonce::from_slice(nonce), sealed).ok()
    }
}

/// The journal being appended to and the records not yet committed.
#[derive(Debug)]
pub(super) struct Journal {
    pub(super) file: File,
    pub(super) generation: u64,
    /// Recorded, not yet committed; the first `journaled` are in `file`.
    pub(super) records: Vec<AuditRecord>,
    pub(super) journaled: usize,
    /// Sequence number of `records[0]`: every record before it is
    /// committed (or being committed, journaled first).
    pub(super) first: u64,
    pub(super) seal: LineSeal,
}

impl Journal {
    /// Records before this sequence number survive a crash.
    pub(super) fn journaled_upto(&self) -> u64 {
        self.first + self.journaled as u64
    }

    /// Appends every record not yet journaled, in one write.
    pub(super) fn write_pending(&mut self) -> std::io::Result<()> {
        if self.journaled == self.records.len() {
            return Ok(());
        }
        let mut lines = Vec::with_capacity(256 * (self.records.len() - self.journaled));
        for record in &self.records[self.journaled..] {
            let json = serde_json::to_vec(record).map_err(std::io::Error::other)?;
            lines.extend_from_slice(&self.seal.seal(&json));
            lines.push(b'\n');
        }
        self.file.write_all(&lines)?;
        self.journaled = self.records.len();
        Ok(())
    }
}

/// This process's journal file of `generation` beside the database at `db`.
/// Each process has its own (two `sovra run` may share a data directory).
pub(super) fn journal_path(db: &Path, generation: u64) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".journal.{}.{generation}", std::process::id()));
    db.with_file_name(name)
}

/// Journal files beside `db`, any process's, oldest first.
pub(super) fn journals(db: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = db
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!(
        "{}.journal.",
        db.file_name().unwrap_or_default().to_string_lossy()
    );
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some((pid, generation)) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|rest| rest.split_once('.'))
        else {
            continue;
        };
        if let (Ok(pid), Ok(generation)) = (pid.parse::<u32>(), generation.parse::<u64>()) {
            found.push((generation, pid, entry.path()));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, _, path)| path).collect())
}

/// The records of a journal that no live process holds (a crash left it),
/// or `None` while its process still writes it (it holds a lock on it). A
/// line cut short by the crash (or one that does not open under `seal`) is
/// skipped.
pub(super) fn orphaned_journal(
    path: &Path,
    seal: &LineSeal,
) -> std::io::Result<Option<Vec<AuditRecord>>> {
    let file = File::open(path)?;
    if file.try_lock().is_err() {
        return Ok(None);
    }
    let text = std::fs::read(path)?;
    Ok(Some(
        text.split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .filter_map(|line| seal.open(line))
            .filter_map(|json| serde_json::from_slice(&json).ok())
            .collect(),
    ))
}

/// A new journal file, locked for as long as this process keeps it open.
pub(super) fn open_journal(path: &Path) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.lock()?;
    Ok(file)
}
