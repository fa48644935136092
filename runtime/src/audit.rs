//! The runtime's own audit log: one row per invocation in a SQLite database
//! that no guest can reach.
//!
//! Records are written by a background thread in batches, every
//! [`AUDIT_FLUSH_INTERVAL`], so an invocation never waits for a disk flush and
//! never wakes another thread; [`AuditLog::flush`] waits until everything sent
//! so far is durable (the CLI calls it before exiting, tests before reading).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, params};

/// Records waiting for the writer before senders wait.
/// Stops: an invocation flood growing the queue without bound.
const AUDIT_QUEUE: usize = 16_384;

/// How often the writer commits what has been queued. Waking it per record
/// would cost every invocation a cross-thread wake-up.
pub const AUDIT_FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// One invocation, as audited.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

enum Message {
    Record(AuditRecord),
    Flush(SyncSender<()>),
}

/// Why the audit log could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {message}")]
pub struct AuditError {
    pub path: PathBuf,
    pub message: String,
}

/// Handle to the audit database and its writer thread.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    sender: Option<SyncSender<Message>>,
    writer: Option<JoinHandle<()>>,
}

impl AuditLog {
    /// Opens (creating if needed) the audit database at `path`.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let error = |e: rusqlite::Error| AuditError {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let conn = Connection::open(path).map_err(error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(error)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(error)?;
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
                 denials TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS invocations_by_tenant
                 ON invocations (tenant, started_at_ms);",
        )
        .map_err(error)?;
        let (sender, receiver) = sync_channel(AUDIT_QUEUE);
        let writer = std::thread::Builder::new()
            .name("sovra-audit".into())
            .spawn(move || write_loop(conn, receiver))
            .map_err(|e| AuditError {
                path: path.to_owned(),
                message: format!("cannot start writer thread: {e}"),
            })?;
        Ok(AuditLog {
            path: path.to_owned(),
            sender: Some(sender),
            writer: Some(writer),
        })
    }

    /// Queues a record; it is written within one batch.
    pub fn record(&self, record: AuditRecord) {
        if let Some(sender) = &self.sender
            && sender.send(Message::Record(record)).is_err()
        {
            tracing::error!(path = %self.path.display(), "audit writer is gone; record lost");
        }
    }

    /// Waits until every record queued so far is committed.
    pub fn flush(&self) {
        let (Some(sender), Some(writer)) = (&self.sender, &self.writer) else {
            return;
        };
        let (done, wait) = sync_channel(1);
        if sender.send(Message::Flush(done)).is_ok() {
            writer.thread().unpark();
            let _ = wait.recv();
        }
    }

    /// The most recent records of `tenant`, newest first.
    pub fn recent(&self, tenant: &str, limit: usize) -> Result<Vec<AuditRecord>, AuditError> {
        self.flush();
        let error = |e: rusqlite::Error| AuditError {
            path: self.path.clone(),
            message: e.to_string(),
        };
        let conn = Connection::open(&self.path).map_err(error)?;
        let mut stmt = conn
            .prepare(
                "SELECT invocation_id, tenant, agent, agent_digest, started_at_ms, duration_us,
                        outcome, error, denials
                 FROM invocations WHERE tenant = ?1
                 ORDER BY started_at_ms DESC, id DESC LIMIT ?2",
            )
            .map_err(error)?;
        let rows = stmt
            .query_map(params![tenant, limit as i64], |row| {
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
                })
            })
            .map_err(error)?;
        rows.collect::<Result<_, _>>().map_err(error)
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        // Closing the channel ends the writer after it drains the queue.
        self.sender.take();
        if let Some(writer) = self.writer.take() {
            writer.thread().unpark();
            let _ = writer.join();
        }
    }
}

/// Every interval (or when a flush unparks it), commits whatever is queued;
/// exits once the log is dropped and the queue is drained.
fn write_loop(mut conn: Connection, receiver: Receiver<Message>) {
    loop {
        std::thread::park_timeout(AUDIT_FLUSH_INTERVAL);
        let mut records = Vec::new();
        let mut waiting = Vec::new();
        let closed = loop {
            match receiver.try_recv() {
                Ok(Message::Record(record)) => records.push(record),
                Ok(Message::Flush(done)) => waiting.push(done),
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        if let Err(e) = write_batch(&mut conn, &records) {
            tracing::error!(error = %e, lost = records.len(), "cannot write audit records");
        }
        for done in waiting {
            let _ = done.send(());
        }
        if closed {
            return;
        }
    }
}

fn write_batch(conn: &mut Connection, records: &[AuditRecord]) -> rusqlite::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO invocations (invocation_id, tenant, agent, agent_digest,
                 started_at_ms, duration_us, outcome, error, denials)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for record in records {
            insert.execute(params![
                record.invocation_id,
                record.tenant,
                record.agent,
                record.agent_digest,
                record.started_at_ms,
                record.duration_us,
                record.outcome,
                record.error,
                serde_json::to_string(&record.denials).unwrap_or_else(|_| "[]".into()),
            ])?;
        }
    }
    tx.commit()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
