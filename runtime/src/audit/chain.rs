//! Hash chains over the audit log, one per tenant: each record carries the
//! hash of the tenant's record before it and its own hash over that and
//! every stored field. An `UPDATE` of a record breaks its own hash; a
//! `DELETE`, an insert or a reordering breaks the link of the record after
//! it. Records removed from the end leave a shorter chain that verifies:
//! the head hash [`verify`] prints is what an operator keeps elsewhere to
//! compare.

use std::collections::HashMap;

use rusqlite::{Connection, params};
use sha2::{Digest as _, Sha256};

/// The `prev_hash` of a tenant's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One record's stored fields, in the order they are hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StoredRecord<'a> {
    pub(super) invocation_id: &'a str,
    pub(super) tenant: &'a str,
    pub(super) agent: &'a str,
    pub(super) agent_digest: &'a str,
    pub(super) started_at_ms: u64,
    pub(super) duration_us: u64,
    pub(super) outcome: &'a str,
    pub(super) error: Option<&'a str>,
    /// As stored: a JSON array.
    pub(super) denials: &'a str,
    /// As stored (a JSON array), when the invocation used a model; hashed
    /// only then, so records from before usage was kept verify as they were.
    pub(super) usage: Option<&'a str>,
    /// The calling invocation of a tool's own; hashed only when there is one
    /// (tagged, so it cannot pass for `usage`).
    pub(super) parent: Option<&'a str>,
}

/// The hash of a record that follows `prev`.
pub(super) fn record_hash(prev: &str, record: &StoredRecord<'_>) -> String {
    let mut fields = serde_json::json!([
        record.invocation_id,
        record.tenant,
        record.agent,
        record.agent_digest,
        record.started_at_ms,
        record.duration_us,
        record.outcome,
        record.error,
        record.denials,
    ]);
    if let Some(list) = fields.as_array_mut() {
        if let Some(usage) = record.usage {
            list.push(usage.into());
        }
        if let Some(parent) = record.parent {
            list.push(serde_json::json!({ "parent": parent }));
        }
    }
    let mut hasher = Sha256::new();
    hasher.update(prev.as_bytes());
    hasher.update(b"\n");
    hasher.update(fields.to_string().as_bytes());
    hex::encode(hasher.finalize())
}

/// Each tenant's last hash, to chain the next record to.
pub(super) fn load_heads(conn: &Connection) -> rusqlite::Result<HashMap<String, String>> {
    let mut stmt = conn.prepare(
        "SELECT tenant, hash FROM invocations WHERE id IN
             (SELECT max(id) FROM invocations WHERE hash IS NOT NULL GROUP BY tenant)",
    )?;
    let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}

/// What verifying one tenant's chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub tenant: String,
    /// Records in the chain.
    pub records: u64,
    /// Records from before the log was chained (they carry no hash).
    pub unchained: u64,
    /// The hash of the last record: what the next one will link to.
    pub head: String,
    /// Each break found, naming the record.
    pub problems: Vec<String>,
}

impl ChainReport {
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Walks every tenant's chain (or `tenant`'s), in the order records were
/// written, recomputing each hash and checking each link.
pub fn verify(conn: &Connection, tenant: Option<&str>) -> rusqlite::Result<Vec<ChainReport>> {
    let mut stmt = conn.prepare(
        "SELECT id, invocation_id, tenant, agent, agent_digest, started_at_ms, duration_us,
                outcome, error, denials, prev_hash, hash, usage, parent
         FROM invocations WHERE ?1 IS NULL OR tenant = ?1 ORDER BY tenant, id",
    )?;
    let mut rows = stmt.query(params![tenant])?;
    let mut reports: Vec<ChainReport> = Vec::new();
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let (invocation_id, row_tenant, agent, agent_digest): (String, String, String, String) =
            (row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?);
        let (started_at_ms, duration_us): (u64, u64) = (row.get(5)?, row.get(6)?);
        let (outcome, error, denials): (String, Option<String>, String) =
            (row.get(7)?, row.get(8)?, row.get(9)?);
        let (prev_hash, hash): (Option<String>, Option<String>) = (row.get(10)?, row.get(11)?);
        let (usage, parent): (Option<String>, Option<String>) = (row.get(12)?, row.get(13)?);
        if reports.last().is_none_or(|r| r.tenant != row_tenant) {
            reports.push(ChainReport {
                tenant: row_tenant.clone(),
                records: 0,
                unchained: 0,
                head: GENESIS.to_owned(),
                problems: Vec::new(),
            });
        }
        let report = reports.last_mut().expect("pushed above");
        let (Some(prev_hash), Some(hash)) = (prev_hash, hash) else {
            if report.records == 0 {
                report.unchained += 1;
            } else {
                report
                    .problems
                    .push(format!("record {id} ({invocation_id}) lost its hash"));
            }
            continue;
        };
        report.records += 1;
        if prev_hash != report.head {
            report.problems.push(format!(
                "record {id} ({invocation_id}) does not follow the record before it: \
                 a record was removed, inserted or reordered"
            ));
        }
        let stored = StoredRecord {
            invocation_id: &invocation_id,
            tenant: &row_tenant,
            agent: &agent,
            agent_digest: &agent_digest,
            started_at_ms,
            duration_us,
            outcome: &outcome,
            error: error.as_deref(),
            denials: &denials,
            usage: usage.as_deref(),
            parent: parent.as_deref(),
        };
        if record_hash(&prev_hash, &stored) != hash {
            report
                .problems
                .push(format!("record {id} ({invocation_id}) was altered"));
        }
        report.head = hash;
    }
    Ok(reports)
}
