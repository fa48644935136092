//! The audit journal: records appended as JSON lines to a file of this
//! process's (one `write` for all records pending), so that they survive a
//! crash of the process until the writer commits them to the database; and
//! finding, after a crash, the journals no live process holds any more.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::AuditRecord;

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
            serde_json::to_writer(&mut lines, record).map_err(std::io::Error::other)?;
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
/// line cut short by the crash is skipped.
pub(super) fn orphaned_journal(path: &Path) -> std::io::Result<Option<Vec<AuditRecord>>> {
    let file = File::open(path)?;
    if file.try_lock().is_err() {
        return Ok(None);
    }
    let text = std::fs::read(path)?;
    Ok(Some(
        text.split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .filter_map(|line| serde_json::from_slice(line).ok())
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
