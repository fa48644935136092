//! The publisher log: every registration, submission, approval and yank, in
//! order, each entry carrying the hash of the one before. Changing, removing
//! or reordering any past entry breaks every hash after it, which
//! [`verify`] (and `sovra plugin log --verify`) reports. The head hash can be
//! copied elsewhere so that cutting entries off the end is detectable too.

use rusqlite::{Connection, params};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::db::{DbError, now_ms};

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub seq: i64,
    pub at_ms: i64,
    pub action: String,
    pub subject: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of an entry's content chained to the previous hash. Fields are
/// length-prefixed so no two different entries hash the same text.
fn hash(prev: &str, seq: i64, at_ms: i64, action: &str, subject: &str, detail: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"sovra-publisher-log-v1\n");
    for field in [
        prev,
        &seq.to_string(),
        &at_ms.to_string(),
        action,
        subject,
        detail,
    ] {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Appends an entry (inside the caller's transaction).
pub(crate) fn append(
    connection: &Connection,
    action: &str,
    subject: &str,
    detail: &str,
) -> Result<(), DbError> {
    let (last_seq, prev): (i64, String) = connection
        .query_row(
            "SELECT seq, hash FROM publisher_log ORDER BY seq DESC LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok((0, GENESIS.to_owned())),
            e => Err(e),
        })?;
    let seq = last_seq + 1;
    let at_ms = now_ms();
    let hash = hash(&prev, seq, at_ms, action, subject, detail);
    connection.execute(
        "INSERT INTO publisher_log (seq, at_ms, action, subject, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![seq, at_ms, action, subject, detail, prev, hash],
    )?;
    Ok(())
}

pub(crate) fn entries(connection: &Connection) -> Result<Vec<Entry>, DbError> {
    let mut statement = connection.prepare(
        "SELECT seq, at_ms, action, subject, detail, prev_hash, hash
         FROM publisher_log ORDER BY seq",
    )?;
    let rows = statement.query_map([], |row| {
        Ok(Entry {
            seq: row.get(0)?,
            at_ms: row.get(1)?,
            action: row.get(2)?,
            subject: row.get(3)?,
            detail: row.get(4)?,
            prev_hash: row.get(5)?,
            hash: row.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    #[error("entry {seq}: expected sequence number {expected} (an entry was removed or moved)")]
    Gap { seq: i64, expected: i64 },
    #[error("entry {seq}: it does not point at the entry before it (history was rewritten)")]
    Link { seq: i64 },
    #[error("entry {seq}: its content does not match its hash (the entry was altered)")]
    Content { seq: i64 },
}

/// Checks the whole chain; returns the head hash when it is intact.
pub fn verify(entries: &[Entry]) -> Result<String, Broken> {
    let mut prev = GENESIS.to_owned();
    for (i, entry) in entries.iter().enumerate() {
        let expected = i as i64 + 1;
        if entry.seq != expected {
            return Err(Broken::Gap {
                seq: entry.seq,
                expected,
            });
        }
        if entry.prev_hash != prev {
            return Err(Broken::Link { seq: entry.seq });
        }
        let recomputed = hash(
            &entry.prev_hash,
            entry.seq,
            entry.at_ms,
            &entry.action,
            &entry.subject,
            &entry.detail,
        );
        if recomputed != entry.hash {
            return Err(Broken::Content { seq: entry.seq });
        }
        prev = entry.hash.clone();
    }
    Ok(prev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> Connection {
        let connection = Connection::open_in_memory().unwrap();
        connection
            .execute_batch(
                "CREATE TABLE publisher_log (seq INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL,
                 action TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL,
                 prev_hash TEXT NOT NULL, hash TEXT NOT NULL)",
            )
            .unwrap();
        for i in 0..4 {
            append(&connection, "submitted", &format!("p@0.{i}.0"), "sha256=ab").unwrap();
        }
        connection
    }

    #[test]
    fn an_untouched_log_verifies_and_every_tampering_is_found() {
        let connection = log();
        let head = verify(&entries(&connection).unwrap()).unwrap();
        assert_eq!(head, entries(&connection).unwrap()[3].hash);

        let tampered = |sql: &str| {
            let connection = log();
            connection.execute_batch(sql).unwrap();
            verify(&entries(&connection).unwrap()).unwrap_err()
        };
        assert_eq!(
            tampered("UPDATE publisher_log SET subject = 'evil@1.0.0' WHERE seq = 2"),
            Broken::Content { seq: 2 }
        );
        assert_eq!(
            tampered("DELETE FROM publisher_log WHERE seq = 2"),
            Broken::Gap {
                seq: 3,
                expected: 2
            }
        );
        // Rewriting an entry with a fresh, self-consistent hash still breaks
        // the link from the next one.
        let connection = log();
        let e = &entries(&connection).unwrap()[1];
        let forged = hash(
            &e.prev_hash,
            e.seq,
            e.at_ms,
            "yanked",
            &e.subject,
            &e.detail,
        );
        connection
            .execute(
                "UPDATE publisher_log SET action = 'yanked', hash = ?1 WHERE seq = 2",
                [forged],
            )
            .unwrap();
        assert_eq!(
            verify(&entries(&connection).unwrap()).unwrap_err(),
            Broken::Link { seq: 3 }
        );
    }
}
