//! Vector memory on the tenant's host connection: exact cosine search over
//! one collection (a scan: exact, and fast enough for the per-tenant
//! collections agents keep; bounded by [`MAX_COLLECTION_ENTRIES`]).

use rusqlite::{TransactionBehavior, params};

use super::{StorageError, TenantDb};

/// Host table holding every tenant vector (in the tenant's own database).
pub(super) const VECTOR_TABLE: &str = "_sovra_vectors";

/// Dimensions of one vector.
pub const MAX_VECTOR_DIMS: usize = 4096;

/// Entries in one collection.
/// Stops: collections whose scan would hold a query for seconds.
pub const MAX_COLLECTION_ENTRIES: usize = 100_000;

/// Results of one query.
pub const MAX_QUERY_RESULTS: u32 = 100;

/// Bytes of the text stored with an entry.
pub const MAX_VECTOR_TEXT_BYTES: usize = 64 * 1024;

/// One stored entry, as a query returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorHit {
    pub id: String,
    pub score: f32,
    pub text: String,
    pub metadata: Vec<(String, String)>,
}

fn check_name(what: &str, name: &str) -> Result<(), StorageError> {
    if name.is_empty() || name.len() > 256 {
        return Err(StorageError::InvalidInput(format!(
            "{what} must be 1 to 256 bytes"
        )));
    }
    Ok(())
}

fn check_vector(vector: &[f32]) -> Result<(), StorageError> {
    if vector.is_empty() || vector.len() > MAX_VECTOR_DIMS {
        return Err(StorageError::InvalidInput(format!(
            "vectors must have 1 to {MAX_VECTOR_DIMS} dimensions"
        )));
    }
    if vector.iter().any(|v| !v.is_finite()) {
        return Err(StorageError::InvalidInput("vectors must be finite".into()));
    }
    Ok(())
}

fn to_blob(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn cosine(a: &[f32], blob: &[u8], a_norm: f32) -> f32 {
    let mut dot = 0.0f32;
    let mut norm = 0.0f32;
    for (x, b) in a.iter().zip(blob.chunks_exact(4)) {
        let y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        dot += x * y;
        norm += y * y;
    }
    if a_norm == 0.0 || norm == 0.0 {
        0.0
    } else {
        dot / (a_norm * norm.sqrt())
    }
}

impl TenantDb {
    pub(super) fn create_vector_table(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {VECTOR_TABLE} (
                 collection TEXT NOT NULL,
                 id TEXT NOT NULL,
                 dims INTEGER NOT NULL,
                 embedding BLOB NOT NULL,
                 text TEXT NOT NULL,
                 metadata TEXT NOT NULL,
                 PRIMARY KEY (collection, id)
             ) WITHOUT ROWID;"
        ))
    }

    /// Stores `vector` as `id` in `collection`, replacing an earlier entry.
    pub fn vector_upsert(
        &self,
        collection: &str,
        id: &str,
        vector: &[f32],
        text: &str,
        metadata: &[(String, String)],
    ) -> Result<(), StorageError> {
        check_name("collection", collection)?;
        check_name("id", id)?;
        check_vector(vector)?;
        if text.len() > MAX_VECTOR_TEXT_BYTES {
            return Err(StorageError::LimitExceeded(format!(
                "text is longer than {MAX_VECTOR_TEXT_BYTES} bytes"
            )));
        }
        // Count and insert in one write transaction, so concurrent upserts
        // cannot together pass the collection's limit; the write lock is taken
        // first so that the transaction can wait for other writers.
        let mut conn = self.host();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.sqlite_error(e))?;
        let count: i64 = tx
            .query_row(
                &format!("SELECT count(*) FROM {VECTOR_TABLE} WHERE collection = ?1"),
                [collection],
                |r| r.get(0),
            )
            .map_err(|e| self.sqlite_error(e))?;
        if count as usize >= MAX_COLLECTION_ENTRIES {
            return Err(StorageError::LimitExceeded(format!(
                "collection `{collection}` already holds {MAX_COLLECTION_ENTRIES} entries"
            )));
        }
        if let Some(quota) = self.vector_quota() {
            let (total, replaces): (i64, bool) = tx
                .query_row(
                    &format!(
                        "SELECT count(*),
                                count(*) FILTER (WHERE collection = ?1 AND id = ?2) > 0
                         FROM {VECTOR_TABLE}"
                    ),
                    [collection, id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(|e| self.sqlite_error(e))?;
            if !replaces && total as u64 >= quota {
                return Err(StorageError::LimitExceeded(format!(
                    "quota-exceeded: the tenant's quota of {quota} vectors is used up"
                )));
            }
        }
        let metadata =
            serde_json::to_string(metadata).map_err(|e| StorageError::Internal(e.to_string()))?;
        tx.prepare_cached(&format!(
            "INSERT INTO {VECTOR_TABLE} (collection, id, dims, embedding, text, metadata)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (collection, id) DO UPDATE SET
                 dims = excluded.dims, embedding = excluded.embedding,
                 text = excluded.text, metadata = excluded.metadata"
        ))
        .and_then(|mut stmt| {
            stmt.execute(params![
                collection,
                id,
                vector.len() as i64,
                to_blob(vector),
                text,
                metadata
            ])
        })
        .map_err(|e| self.sqlite_error(e))?;
        tx.commit().map_err(|e| self.sqlite_error(e))
    }

    /// The `k` entries of `collection` most similar to `vector` (entries of
    /// another dimension are skipped).
    pub fn vector_query(
        &self,
        collection: &str,
        vector: &[f32],
        k: u32,
    ) -> Result<Vec<VectorHit>, StorageError> {
        check_name("collection", collection)?;
        check_vector(vector)?;
        let k = k.clamp(1, MAX_QUERY_RESULTS) as usize;
        let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        let conn = self.host();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT id, embedding, text, metadata FROM {VECTOR_TABLE} WHERE collection = ?1 AND dims = ?2"
            ))
            .map_err(|e| self.sqlite_error(e))?;
        let mut rows = stmt
            .query(params![collection, vector.len() as i64])
            .map_err(|e| self.sqlite_error(e))?;
        let mut scored: Vec<(f32, String, String, String)> = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.sqlite_error(e))? {
            let blob: Vec<u8> = row.get(1).map_err(|e| self.sqlite_error(e))?;
            let score = cosine(vector, &blob, norm);
            scored.push((
                score,
                row.get(0).map_err(|e| self.sqlite_error(e))?,
                row.get(2).map_err(|e| self.sqlite_error(e))?,
                row.get(3).map_err(|e| self.sqlite_error(e))?,
            ));
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        scored.truncate(k);
        Ok(scored
            .into_iter()
            .map(|(score, id, text, metadata)| VectorHit {
                id,
                score,
                text,
                metadata: serde_json::from_str(&metadata).unwrap_or_default(),
            })
            .collect())
    }

    pub fn vector_delete(&self, collection: &str, id: &str) -> Result<bool, StorageError> {
        self.host()
            .prepare_cached(&format!(
                "DELETE FROM {VECTOR_TABLE} WHERE collection = ?1 AND id = ?2"
            ))
            .and_then(|mut stmt| stmt.execute([collection, id]))
            .map(|n| n > 0)
            .map_err(|e| self.sqlite_error(e))
    }
}

#[cfg(test)]
mod quota_tests {
    use crate::storage::tests::db;

    #[test]
    fn a_vector_quota_counts_every_collection_and_a_replacement_is_not_a_new_entry() {
        let (_dir, db) = db();
        db.set_vector_quota(Some(2));
        db.vector_upsert("a", "1", &[1.0, 0.0], "one", &[]).unwrap();
        db.vector_upsert("b", "1", &[0.0, 1.0], "two", &[]).unwrap();
        let refused = db
            .vector_upsert("a", "2", &[1.0, 1.0], "three", &[])
            .unwrap_err();
        assert!(
            refused.to_string().contains("quota of 2 vectors"),
            "{refused}"
        );
        db.vector_upsert("a", "1", &[0.5, 0.5], "one again", &[])
            .unwrap();
        db.set_vector_quota(None);
        db.vector_upsert("a", "2", &[1.0, 1.0], "three", &[])
            .unwrap();
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::tests::db;

    #[test]
    fn nearest_first_with_metadata_and_replacement() {
        let (_dir, db) = db();
        let meta = vec![("source".to_owned(), "a.txt".to_owned())];
        db.vector_upsert("docs", "x", &[1.0, 0.0], "east", &meta)
            .unwrap();
        db.vector_upsert("docs", "y", &[0.0, 1.0], "north", &[])
            .unwrap();
        db.vector_upsert("docs", "z", &[0.7, 0.7], "north-east", &[])
            .unwrap();
        db.vector_upsert("other", "w", &[1.0, 0.0], "elsewhere", &[])
            .unwrap();
        let hits = db.vector_query("docs", &[1.0, 0.1], 2).unwrap();
        assert_eq!(
            hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
            ["x", "z"]
        );
        assert_eq!(hits[0].metadata, meta);
        db.vector_upsert("docs", "x", &[0.0, 1.0], "now north", &[])
            .unwrap();
        assert_eq!(db.vector_query("docs", &[1.0, 0.1], 1).unwrap()[0].id, "z");
        assert!(db.vector_delete("docs", "z").unwrap());
        assert!(db.vector_query("docs", &[f32::NAN], 1).is_err());
    }
}
