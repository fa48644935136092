//! The runtime's own audit log: one row per invocation in a SQLite database
//! that no guest can reach.
//!
//! [`AuditLog::record`] queues a record; awaiting its [`AuditReceipt`]
//! appends it to a journal file (one JSON line; the records of concurrent
//! callers go out in one `write`), after which it survives a crash of the
//! process (kill -9 included). A node answers an invocation only after that.
//! A writer thread moves the records into the database every
//! [`COMMIT_INTERVAL`] in one transaction (synchronous, so the database is on
//! disk), journaling what was not yet and starting a fresh journal file
//! first, and deleting the old one once its records are committed. Opening
//! the log replays any journal a crash left behind (records already
//! committed are skipped by their id). So the answer waits for one small
//! write and no thread hand-over, concurrent invocations share one disk
//! flush, and a caller that needs no such promise pays nothing.
//! [`AuditLog::flush`] commits what is queued now (the CLI calls it before
//! exiting, tests before reading).

//!
//! The database is encrypted at rest (see [`crate::sealing`]).
//!
//! Each tenant's records form a hash chain (module `chain`), which
//! [`verify`] checks; the tokens each invocation cost are part of its record
//! and [`AuditLog::usage`] sums them per model and day.

mod chain;
mod journal;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

pub use chain::{ChainReport, GENESIS};
use chain::{StoredRecord, load_heads, record_hash};
use journal::{Journal, LineSeal, journal_path, journals, open_journal, orphaned_journal};

use crate::sealing::{NodeKey, SealedDatabase, SealingError};

/// How the audit database is named in its key file's seals.
pub const AUDIT_LABEL: &str = "audit";

use crate::invocation::ModelUsage;

/// How often journaled records are committed to the database.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(50);

/// Journaled records that wake the writer before its interval ends.
/// Stops: a burst of invocations growing the journal and the queue between
/// commits.
const EARLY_COMMIT: usize = 8_192;

/// One invocation, as audited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub invocation_id: String,
    pub tenant: String,
    pub agent: String,
    pub agent_digest: String,
    /// Start time, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    pub duration_us: u64,
    /// `ok`, or the [`InvokeError::kind`](crate::InvokeError::kind) of the failure.
    pub outcome: String,
    pub error: Option<String>,
    /// Capabilities or models the invocation was denied, in order.
    pub denials: Vec<String>,
    /// Tokens each model computed for it (the ground for usage and quotas).
    #[serde(default)]
    pub usage: Vec<ModelUsage>,
    /// The invocation that called this one as a tool, if any.
    #[serde(default)]
    pub parent: Option<String>,
}

impl AuditRecord {
    /// The record that ends an erased tenant's chain: who erased it and
    /// when, nothing of what it held.
    pub fn erasure(tenant: &str, started_at_ms: u64, duration_us: u64) -> Self {
        AuditRecord {
            invocation_id: format!("erase-{started_at_ms}-{tenant}"),
            tenant: tenant.to_owned(),
            agent: "operator".into(),
            agent_digest: String::new(),
            started_at_ms,
            duration_us,
            outcome: "tenant-erased".into(),
            error: None,
            denials: Vec::new(),
            usage: Vec::new(),
            parent: None,
        }
    }
}

/// A recorded invocation's place in the log; awaiting [`Self::durable`]
/// journals it (with every record before it not yet journaled).
#[derive(Debug, Default)]
pub struct AuditReceipt(Option<(Arc<Shared>, u64)>);

/// The audit record of an invocation could not be made durable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the audit record could not be written (the operator's log has the cause)")]
pub struct NotAudited;

impl AuditReceipt {
    /// Makes the record safe from a crash of the process: appends it to the
    /// journal unless it already is there (or in the database). Concurrent
    /// callers' records go out in one write.
    pub async fn durable(self) -> Result<(), NotAudited> {
        let Some((shared, sequence)) = self.0 else {
            return Ok(());
        };
        let mut journal = shared.journal();
        if sequence < journal.journaled_upto() {
            return Ok(());
        }
        journal.write_pending().map_err(|error| {
            tracing::error!(%error, path = %shared.path.display(), "cannot journal audit records");
            NotAudited
        })
    }
}

/// Why the audit log could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {message}")]
pub struct AuditError {
    pub path: PathBuf,
    pub message: String,
}

/// What the log's handle and its writer thread share.
#[derive(Debug)]
struct Shared {
    path: PathBuf,
    journal: Mutex<Journal>,
    /// Held while journaled records move into the database.
    writer: Mutex<Writer>,
}

/// The writing connection and each tenant's chain head.
#[derive(Debug)]
struct Writer {
    conn: Connection,
    heads: HashMap<String, String>,
}

/// Handle to the audit database and its writer thread.
#[derive(Debug)]
pub struct AuditLog {
    shared: Arc<Shared>,
    /// One connection for every reader: history calls share it rather than
    /// each opening the database (and its descriptors) anew.
    reader: Mutex<Connection>,
    writer: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Shared {
    fn journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves what is journaled into the database: a fresh journal file
    /// takes new records, the old one's records are committed in one
    /// transaction, and the old file goes once they are on disk.
    fn commit(&self) {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let (records, old) = {
            let mut journal = self.journal();
            if journal.records.is_empty() {
                return;
            }
            // Everything taken is journaled first: should the commit fail,
            // the next start replays the old file.
            if let Err(error) = journal.write_pending() {
                tracing::error!(%error, path = %self.path.display(), "cannot journal audit records");
            }
            let generation = journal.generation + 1;
            let path = journal_path(&self.path, generation);
            match open_journal(&path) {
                Ok(file) => {
                    journal.file = file;
                    let old = journal_path(&self.path, journal.generation);
                    journal.generation = generation;
                    let records = std::mem::take(&mut journal.records);
                    journal.first += records.len() as u64;
                    journal.journaled = 0;
                    (records, old)
                }
                Err(error) => {
                    // Keep appending to the old file; try again next time.
                    tracing::error!(%error, path = %path.display(), "cannot start a new audit journal");
                    return;
                }
            }
        };
        let Writer { conn, heads } = &mut *writer;
        match write_batch(conn, heads, &records) {
            Ok(()) => {
                if let Err(error) = std::fs::remove_file(&old) {
                    tracing::warn!(%error, path = %old.display(), "cannot remove a committed audit journal");
                }
            }
            // The journal file stays: the next start replays it.
            Err(error) => {
                tracing::error!(%error, kept = %old.display(), "cannot commit audit records")
            }
        }
    }
}

impl AuditLog {
    /// Opens (creating if needed) the audit database at `path`, sealed by
    /// `node_key`, first committing any journal a crash left behind.
    pub fn open(path: &Path, node_key: &NodeKey) -> Result<Self, AuditError> {
        let error = |e: rusqlite::Error| AuditError {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let io_error = |e: std::io::Error| AuditError {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let sealing_error = |e: SealingError| AuditError {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let sealed = SealedDatabase::prepare(path, node_key, AUDIT_LABEL).map_err(sealing_error)?;
        let mut conn = sealed.open_read_write().map_err(sealing_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(error)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(error)?;
        prepare_schema(&conn).map_err(error)?;
        let mut heads = load_heads(&conn).map_err(error)?;
        let seal = LineSeal::new(sealed.key());
        for journal in journals(path).map_err(io_error)? {
            if let Some(records) = orphaned_journal(&journal, &seal).map_err(io_error)? {
                write_batch(&mut conn, &mut heads, &records).map_err(error)?;
                std::fs::remove_file(&journal).map_err(io_error)?;
            }
        }
        let generation = 0;
        let file = open_journal(&journal_path(path, generation)).map_err(io_error)?;
        let reader = sealed.open_read_write().map_err(sealing_error)?;
        reader.busy_timeout(Duration::from_secs(5)).map_err(error)?;
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            journal: Mutex::new(Journal {
                file,
                generation,
                records: Vec::new(),
                journaled: 0,
                first: 0,
                seal,
            }),
            writer: Mutex::new(Writer { conn, heads }),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("sovra-audit".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        std::thread::park_timeout(COMMIT_INTERVAL);
                        shared.commit();
                    }
                })
                .map_err(io_error)?
        };
        Ok(AuditLog {
            shared,
            reader: Mutex::new(reader),
            writer: Some((stop, writer)),
        })
    }

    /// Queues a record for the next commit; awaiting the receipt journals
    /// it first (what a node does before it answers).
    pub fn record(&self, record: AuditRecord) -> AuditReceipt {
        let mut journal = self.shared.journal();
        let sequence = journal.first + journal.records.len() as u64;
        journal.records.push(record);
        let many = journal.records.len() >= EARLY_COMMIT;
        drop(journal);
        if many && let Some((_, writer)) = &self.writer {
            writer.thread().unpark();
        }
        AuditReceipt(Some((Arc::clone(&self.shared), sequence)))
    }

    /// Commits every record journaled so far.
    pub fn flush(&self) {
        self.shared.commit();
    }

    /// The most recent records of `tenant`, newest first.
    pub fn recent(&self, tenant: &str, limit: usize) -> Result<Vec<AuditRecord>, AuditError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT invocation_id, tenant, agent, agent_digest, started_at_ms, duration_us,
                        outcome, error, denials, usage, parent
                 FROM invocations WHERE tenant = ?1
                 ORDER BY started_at_ms DESC, id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![tenant, limit as i64], |row| {
                let denials: String = row.get(8)?;
                Ok(AuditRecord {
                    invocation_id: row.get(0)?,
                    tenant: row.get(1)?,
                    agent: row.get(2)?,
                    agent_digest: row.get(3)?,
                    started_at_ms: row.get(4)?,
                    duration_us: row.get(5)?,
                    outcome: row.get(6)?,
                    error: row.get(7)?,
                    denials: serde_json::from_str(&denials).unwrap_or_default(),
                    usage: row
                        .get::<_, Option<String>>(9)?
                        .and_then(|u| serde_json::from_str(&u).ok())
                        .unwrap_or_default(),
                    parent: row.get(10)?,
                })
            })?;
            rows.collect()
        })
    }

    /// How many invocations `tenant` ran since `since_ms`: calls that did
    /// work (OpenAI-compatible ones included), not refusals, not a tool's
    /// own invocation inside another, not the operator's records.
    pub fn invocations_since(&self, tenant: &str, since_ms: u64) -> Result<u64, AuditError> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT count(*) FROM invocations
                 WHERE tenant = ?1 AND started_at_ms >= ?2 AND parent IS NULL
                   AND outcome NOT LIKE 'refused-%' AND agent != 'operator'",
            )?
            .query_row(params![tenant, since_ms], |row| row.get(0))
        })
    }

    /// Every record of `tenant`'s chain, oldest first, each with its chain
    /// hash (`null` for records from before chaining): what a tenant's
    /// export carries so that the chain can be checked outside the node.
    pub fn chain_of(&self, tenant: &str) -> Result<Vec<serde_json::Value>, AuditError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT invocation_id, agent, agent_digest, started_at_ms, duration_us,
                        outcome, error, denials, usage, parent, hash
                 FROM invocations WHERE tenant = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([tenant], |row| {
                let json = |i: usize| -> rusqlite::Result<serde_json::Value> {
                    Ok(row
                        .get::<_, Option<String>>(i)?
                        .and_then(|text| serde_json::from_str(&text).ok())
                        .unwrap_or(serde_json::Value::Null))
                };
                Ok(serde_json::json!({
                    "invocation_id": row.get::<_, String>(0)?,
                    "agent": row.get::<_, String>(1)?,
                    "agent_digest": row.get::<_, String>(2)?,
                    "started_at_ms": row.get::<_, i64>(3)?,
                    "duration_us": row.get::<_, i64>(4)?,
                    "outcome": row.get::<_, String>(5)?,
                    "error": row.get::<_, Option<String>>(6)?,
                    "denials": json(7)?,
                    "usage": json(8)?,
                    "parent": row.get::<_, Option<String>>(9)?,
                    "hash": row.get::<_, Option<String>>(10)?,
                }))
            })?;
            rows.collect()
        })
    }

    /// Runs a query on the reader connection, after committing what is
    /// queued (a caller reads what it has recorded).
    fn read<T>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, AuditError> {
        self.flush();
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        query(&conn).map_err(|e| AuditError {
            path: self.shared.path.clone(),
            message: e.to_string(),
        })
    }
}

/// Verifies the hash chains of the audit database at `path` (every
/// tenant's, or `tenant`'s), reading only: records still in a journal are
/// not seen until a runtime opens the log.
pub fn verify(
    path: &Path,
    node_key: &NodeKey,
    tenant: Option<&str>,
) -> Result<Vec<ChainReport>, AuditError> {
    let error = |e: rusqlite::Error| AuditError {
        path: path.to_owned(),
        message: e.to_string(),
    };
    if !path.exists() {
        return Err(AuditError {
            path: path.to_owned(),
            message: "no audit log here".into(),
        });
    }
    let sealing_error = |e: SealingError| AuditError {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let conn = SealedDatabase::existing(path, node_key, AUDIT_LABEL)
        .and_then(|db| db.open(rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY))
        .map_err(sealing_error)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(error)?;
    chain::verify(&conn, tenant).map_err(error)
}

/// One tenant's tokens on one model on one day (UTC).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DailyUsage {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub model: String,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
    /// Invocations that used the model that day.
    pub invocations: u64,
}

/// The UTC calendar day of a Unix time in milliseconds, as `YYYY-MM-DD`.
pub fn utc_day(unix_ms: u64) -> String {
    // Days to civil date (H. Hinnant's algorithm), for days since 1970.
    let days = (unix_ms / 86_400_000) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

impl AuditLog {
    /// `tenant`'s tokens per model and day since `since_ms`, from its
    /// invocations' records (so usage is kept exactly as long as history).
    pub fn usage(&self, tenant: &str, since_ms: u64) -> Result<Vec<DailyUsage>, AuditError> {
        let records = self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT started_at_ms, usage FROM invocations
                 WHERE tenant = ?1 AND started_at_ms >= ?2 AND usage IS NOT NULL",
            )?;
            let rows = stmt.query_map(params![tenant, since_ms], |row| {
                Ok((row.get::<_, u64>(0)?, row.get::<_, String>(1)?))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let mut totals: std::collections::BTreeMap<(String, String), DailyUsage> =
            std::collections::BTreeMap::new();
        for (at, usage) in records {
            let day = utc_day(at);
            for used in serde_json::from_str::<Vec<ModelUsage>>(&usage).unwrap_or_default() {
                let entry = totals
                    .entry((day.clone(), used.model.clone()))
                    .or_insert_with(|| DailyUsage {
                        day: day.clone(),
                        model: used.model.clone(),
                        ..DailyUsage::default()
                    });
                entry.prompt_tokens += used.prompt_tokens;
                entry.generated_tokens += used.generated_tokens;
                entry.invocations += 1;
            }
        }
        Ok(totals.into_values().collect())
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if let Some((stop, writer)) = self.writer.take() {
            stop.store(true, Ordering::Release);
            writer.thread().unpark();
            let _ = writer.join();
        }
        self.shared.commit();
    }
}

/// Inserts `records` in one transaction, each chained to its tenant's head
/// (`heads` moves on only for records actually inserted: one replayed from
/// a journal whose commit had ended is already there, skipped by its id).
fn write_batch(
    conn: &mut Connection,
    heads: &mut HashMap<String, String>,
    records: &[AuditRecord],
) -> rusqlite::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    let mut moved: HashMap<String, String> = HashMap::new();
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO invocations (invocation_id, tenant, agent, agent_digest,
                 started_at_ms, duration_us, outcome, error, denials, prev_hash, hash, usage,
                 parent)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        for record in records {
            let denials = serde_json::to_string(&record.denials).unwrap_or_else(|_| "[]".into());
            let usage = (!record.usage.is_empty())
                .then(|| serde_json::to_string(&record.usage).unwrap_or_else(|_| "[]".into()));
            let prev = moved
                .get(&record.tenant)
                .or_else(|| heads.get(&record.tenant))
                .map_or(GENESIS, String::as_str)
                .to_owned();
            let hash = record_hash(
                &prev,
                &StoredRecord {
                    invocation_id: &record.invocation_id,
                    tenant: &record.tenant,
                    agent: &record.agent,
                    agent_digest: &record.agent_digest,
                    started_at_ms: record.started_at_ms,
                    duration_us: record.duration_us,
                    outcome: &record.outcome,
                    error: record.error.as_deref(),
                    denials: &denials,
                    usage: usage.as_deref(),
                    parent: record.parent.as_deref(),
                },
            );
            let inserted = insert.execute(params![
                record.invocation_id,
                record.tenant,
                record.agent,
                record.agent_digest,
                record.started_at_ms,
                record.duration_us,
                record.outcome,
                record.error,
                denials,
                prev,
                hash,
                usage,
                record.parent,
            ])?;
            if inserted == 1 {
                moved.insert(record.tenant.clone(), hash);
            }
        }
    }
    tx.commit()?;
    heads.extend(moved);
    Ok(())
}

/// Creates the schema, or brings an older one up to date (chain columns).
fn prepare_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS invocations (
             id INTEGER PRIMARY KEY,
             invocation_id TEXT NOT NULL,
             tenant TEXT NOT NULL,
             agent TEXT NOT NULL,
             agent_digest TEXT NOT NULL,
             started_at_ms INTEGER NOT NULL,
             duration_us INTEGER NOT NULL,
             outcome TEXT NOT NULL,
             error TEXT,
             denials TEXT NOT NULL,
             prev_hash TEXT,
             hash TEXT,
             usage TEXT,
             parent TEXT
         );
         CREATE INDEX IF NOT EXISTS invocations_by_tenant
             ON invocations (tenant, started_at_ms);
         CREATE UNIQUE INDEX IF NOT EXISTS invocations_by_id
             ON invocations (invocation_id);",
    )?;
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('invocations')")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for column in ["prev_hash", "hash", "usage", "parent"] {
        if !columns.iter().any(|c| c == column) {
            conn.execute_batch(&format!("ALTER TABLE invocations ADD COLUMN {column} TEXT"))?;
        }
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One node key for every log these tests open.
    fn key() -> NodeKey {
        static KEY: std::sync::OnceLock<NodeKey> = std::sync::OnceLock::new();
        KEY.get_or_init(NodeKey::generate).clone()
    }

    /// The seal of `db`'s journals.
    fn seal_of(db: &Path) -> LineSeal {
        LineSeal::new(
            SealedDatabase::existing(db, &key(), AUDIT_LABEL)
                .unwrap()
                .key(),
        )
    }

    /// A keyed connection to `db`, as an operator with the node key and
    /// sqlite3 would have.
    fn keyed(db: &Path) -> Connection {
        SealedDatabase::existing(db, &key(), AUDIT_LABEL)
            .unwrap()
            .open_read_write()
            .unwrap()
    }

    fn record(id: &str) -> AuditRecord {
        AuditRecord {
            invocation_id: id.into(),
            tenant: "acme".into(),
            agent: "hello".into(),
            agent_digest: "00".into(),
            started_at_ms: 1,
            duration_us: 2,
            outcome: "ok".into(),
            error: None,
            denials: vec!["model: x".into()],
            usage: vec![ModelUsage {
                model: "m".into(),
                prompt_tokens: 3,
                generated_tokens: 4,
            }],
            parent: None,
        }
    }

    #[test]
    fn a_record_is_journaled_when_its_receipt_is_awaited_and_committed_later() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let log = AuditLog::open(&db, &key()).unwrap();
        let first = log.record(record("a"));
        let second = log.record(record("b"));
        let journal = || std::fs::read_to_string(journal_path(&db, 0)).unwrap();
        assert_eq!(journal(), "", "queued, not yet journaled");
        // Awaiting the later receipt journals both, in one write.
        futures_executor(second.durable()).unwrap();
        let seal = seal_of(&db);
        let opened: Vec<String> = journal()
            .lines()
            .map(|line| String::from_utf8(seal.open(line.as_bytes()).unwrap()).unwrap())
            .collect();
        assert!(opened[0].contains("\"invocation_id\":\"a\""), "{opened:?}");
        assert!(opened[1].contains("\"invocation_id\":\"b\""), "{opened:?}");
        assert!(
            !journal().contains("invocation_id") && !journal().contains("acme"),
            "the journal is sealed: {}",
            journal()
        );
        futures_executor(first.durable()).unwrap();
        assert_eq!(journal().lines().count(), 2, "nothing written twice");
        log.flush();
        assert_eq!(
            log.recent("acme", 10).unwrap(),
            [record("b"), record("a")],
            "newest first"
        );
        assert!(
            !journal_path(&db, 0).exists(),
            "a committed journal is removed"
        );
    }

    #[test]
    fn a_journal_left_by_a_crash_is_committed_once_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        drop(AuditLog::open(&db, &key()).unwrap());
        // What a process killed mid-write leaves: whole lines, one of them
        // already committed before the crash, and half a line.
        let crashed = db.with_file_name("audit.db.journal.999999.3");
        let seal = seal_of(&db);
        let lines: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|id| {
                let json = serde_json::to_vec(&record(id)).unwrap();
                String::from_utf8(seal.seal(&json)).unwrap()
            })
            .collect();
        std::fs::write(
            &crashed,
            format!("{}\n{}\n{}", lines[0], lines[1], &lines[2][..20]),
        )
        .unwrap();
        {
            let mut conn = keyed(&db);
            let mut heads = load_heads(&conn).unwrap();
            write_batch(&mut conn, &mut heads, &[record("a")]).unwrap();
        }
        let log = AuditLog::open(&db, &key()).unwrap();
        let mut ids: Vec<String> = log
            .recent("acme", 10)
            .unwrap()
            .into_iter()
            .map(|r| r.invocation_id)
            .collect();
        ids.sort();
        assert_eq!(ids, ["a", "b"]);
        assert!(!crashed.exists());
    }

    #[test]
    fn a_journal_another_live_process_writes_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let live = db.with_file_name("audit.db.journal.999999.0");
        let held = open_journal(&live).unwrap();
        std::fs::write(&live, serde_json::to_string(&record("z")).unwrap() + "\n").unwrap();
        let log = AuditLog::open(&db, &key()).unwrap();
        assert!(live.exists(), "a journal still locked by its writer stays");
        assert!(log.recent("acme", 10).unwrap().is_empty());
        drop(held);
    }

    fn chains(db: &Path) -> Vec<ChainReport> {
        verify(db, &key(), None).unwrap()
    }

    #[test]
    fn every_alteration_removal_and_reordering_breaks_a_chain() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        {
            let log = AuditLog::open(&db, &key()).unwrap();
            for id in ["a1", "a2", "a3"] {
                log.record(record(id));
            }
            // A tool's own invocation, called by a3.
            log.record(AuditRecord {
                parent: Some("a3".into()),
                ..record("a4")
            });
            log.record(AuditRecord {
                tenant: "globex".into(),
                ..record("g1")
            });
        }
        let intact = chains(&db);
        assert_eq!(intact.len(), 2);
        assert!(intact.iter().all(ChainReport::intact), "{intact:?}");
        assert_eq!(intact[0].records, 4);
        let head = intact[0].head.clone();
        // Reopening continues each chain where it ended.
        AuditLog::open(&db, &key()).unwrap().record(record("a5"));
        assert!(chains(&db).iter().all(ChainReport::intact));

        keyed(&db)
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        // Each tampering on its own copy, as sqlite3 on the file would do it.
        let broken = |statement: &str, needle: &str| {
            let copy = dir.path().join("tampered.db");
            std::fs::copy(&db, &copy).unwrap();
            std::fs::copy(
                crate::sealing::key_file::path_for(&db),
                crate::sealing::key_file::path_for(&copy),
            )
            .unwrap();
            keyed(&copy).execute_batch(statement).unwrap();
            let acme = verify(&copy, &key(), Some("acme")).unwrap();
            assert!(
                acme[0].problems.iter().any(|p| p.contains(needle)),
                "{statement}: {acme:?}"
            );
            assert!(verify(&copy, &key(), Some("globex")).unwrap()[0].intact());
        };
        broken(
            "UPDATE invocations SET outcome = 'ok ' WHERE invocation_id = 'a2'",
            "altered",
        );
        broken(
            "DELETE FROM invocations WHERE invocation_id = 'a2'",
            "does not follow",
        );
        broken(
            "UPDATE invocations SET started_at_ms = 9 WHERE invocation_id = 'a3'",
            "a3) was altered",
        );
        // Two records swapped, hashes and all.
        broken(
            "UPDATE invocations SET id = -id WHERE invocation_id IN ('a2', 'a3');
             UPDATE invocations SET id = CASE invocation_id WHEN 'a2' THEN 3 ELSE 2 END
                 WHERE invocation_id IN ('a2', 'a3')",
            "does not follow",
        );
        broken(
            "UPDATE invocations SET parent = 'a1' WHERE invocation_id = 'a4'",
            "a4) was altered",
        );
        broken(
            "UPDATE invocations SET parent = 'a3' WHERE invocation_id = 'a2'",
            "a2) was altered",
        );
        broken(
            "UPDATE invocations SET hash = NULL WHERE invocation_id = 'a4'",
            "lost its hash",
        );
        // Removing the newest records leaves a chain that verifies, with an
        // earlier head than the one printed before: what the head is for.
        keyed(&db)
            .execute_batch("DELETE FROM invocations WHERE invocation_id IN ('a4', 'a5')")
            .unwrap();
        let truncated = verify(&db, &key(), Some("acme")).unwrap();
        assert!(truncated[0].intact());
        assert_ne!(truncated[0].head, head);
    }

    #[test]
    fn days_are_utc_calendar_days() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(86_400_000 - 1), "1970-01-01");
        assert_eq!(utc_day(951_782_400_000), "2000-02-29");
        assert_eq!(utc_day(1_796_595_944_668), "2026-12-06");
    }

    #[test]
    fn usage_is_summed_per_model_and_day() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("audit.db"), &key()).unwrap();
        for (id, at) in [("a", 1_000), ("b", 2_000), ("c", 86_400_000 + 5)] {
            log.record(AuditRecord {
                started_at_ms: at,
                ..record(id)
            });
        }
        let days = log.usage("acme", 0).unwrap();
        assert_eq!(days.len(), 2);
        assert_eq!(days[0].day, "1970-01-01");
        assert_eq!(
            (
                days[0].prompt_tokens,
                days[0].generated_tokens,
                days[0].invocations
            ),
            (6, 8, 2)
        );
        assert_eq!(days[1].day, "1970-01-02");
        assert!(log.usage("acme", 86_400_000).unwrap().len() == 1);
        assert!(log.usage("globex", 0).unwrap().is_empty());
    }

    /// Polls a future that never waits (the receipt resolves at once).
    fn futures_executor<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }
}
