//! The runtime's own audit log: one row per invocation in a SQLite database
//! that no guest can reach.
//!
//! Records are committed by one writer thread with group commit: it takes
//! every record queued while its previous commit was on its way to disk and
//! commits them together in one transaction, so concurrent invocations share
//! one disk flush and none waits on a timer. [`AuditLog::record`] returns an
//! [`AuditReceipt`] that resolves once the record is durable; a node awaits it
//! before it answers, so an answered invocation is in the history even after
//! a crash. [`AuditLog::flush`] waits until everything sent so far is durable
//! (the CLI calls it before exiting, tests before reading).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, params};
use tokio::sync::oneshot;

/// Records waiting for the writer before senders wait.
/// Stops: an invocation flood growing the queue without bound.
const AUDIT_QUEUE: usize = 16_384;

/// Records committed in one transaction, at most; a longer queue is taken
/// in several commits so that the first records' callers do not wait for
/// the whole queue.
const MAX_BATCH: usize = 4_096;

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
    Record(AuditRecord, oneshot::Sender<bool>),
    Flush(SyncSender<()>),
}

/// Resolves once an audit record is committed (or its commit failed).
#[derive(Debug, Default)]
pub struct AuditReceipt(Option<oneshot::Receiver<bool>>);

/// The audit record of an invocation could not be made durable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the audit record could not be written (the operator's log has the cause)")]
pub struct NotAudited;

impl AuditReceipt {
    /// Waits until the record is on disk.
    pub async fn durable(self) -> Result<(), NotAudited> {
        match self.0 {
            None => Ok(()),
            Some(receiver) => match receiver.await {
                Ok(true) => Ok(()),
                Ok(false) | Err(_) => Err(NotAudited),
            },
        }
    }
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
    /// One connection for every reader: history calls share it rather than
    /// each opening the database (and its descriptors) anew.
    reader: Mutex<Connection>,
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
        let reader = Connection::open(path).map_err(error)?;
        reader.busy_timeout(Duration::from_secs(5)).map_err(error)?;
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
            reader: Mutex::new(reader),
        })
    }

    /// Queues a record for the next commit; the receipt says when it is
    /// durable.
    pub fn record(&self, record: AuditRecord) -> AuditReceipt {
        let (committed, receipt) = oneshot::channel();
        if let Some(sender) = &self.sender
            && sender.send(Message::Record(record, committed)).is_err()
        {
            tracing::error!(path = %self.path.display(), "audit writer is gone; record lost");
        }
        AuditReceipt(Some(receipt))
    }

    /// Waits until every record queued so far is committed.
    pub fn flush(&self) {
        let Some(sender) = &self.sender else {
            return;
        };
        let (done, wait) = sync_channel(1);
        if sender.send(Message::Flush(done)).is_ok() {
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
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn
            .prepare_cached(
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
            let _ = writer.join();
        }
    }
}

/// Waits for a message, takes everything queued behind it, commits the
/// records in one transaction and answers their receipts; exits once the log
/// is dropped and the queue is drained.
fn write_loop(mut conn: Connection, receiver: Receiver<Message>) {
    let mut batch = Batch::default();
    loop {
        let Ok(first) = receiver.recv() else { return };
        batch.take(first);
        let mut closed = false;
        while batch.records.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(message) => batch.take(message),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let written = write_batch(&mut conn, &batch.records);
        if let Err(e) = &written {
            tracing::error!(error = %e, lost = batch.records.len(), "cannot write audit records");
        }
        batch.answer(written.is_ok());
        if closed {
            return;
        }
    }
}

/// What one commit takes: records with their receipts, and flushes that
/// wait for them.
#[derive(Default)]
struct Batch {
    records: Vec<AuditRecord>,
    receipts: Vec<oneshot::Sender<bool>>,
    flushes: Vec<SyncSender<()>>,
}

impl Batch {
    fn take(&mut self, message: Message) {
        match message {
            Message::Record(record, committed) => {
                self.records.push(record);
                self.receipts.push(committed);
            }
            Message::Flush(done) => self.flushes.push(done),
        }
    }

    /// Answers every receipt and flush of the batch, and empties it. A flush
    /// in the batch was sent after every record before it, and those are in
    /// this batch or an earlier one.
    fn answer(&mut self, committed: bool) {
        self.records.clear();
        for receipt in self.receipts.drain(..) {
            let _ = receipt.send(committed);
        }
        for done in self.flushes.drain(..) {
            let _ = done.send(());
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
