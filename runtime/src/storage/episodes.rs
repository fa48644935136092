//! A controller's episodes in its tenant's own database: one row per
//! episode (its summary as JSON, written when it ends) and its telemetry
//! samples. Host-owned tables: guest SQL can never reach them, and the
//! tenant's quota bounds them like everything else it stores.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{StorageError, TenantDb};

const EPISODES_TABLE: &str = "_sovra_episodes";
const TELEMETRY_TABLE: &str = "_sovra_telemetry";

/// Telemetry samples kept per episode.
/// Stops: a day-long episode filling the tenant's quota with samples.
pub const MAX_TELEMETRY_SAMPLES: u64 = 100_000;

/// Episodes one listing returns.
pub const MAX_EPISODE_PAGE: u32 = 100;

/// One episode as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeRecord {
    pub id: String,
    pub controller: String,
    pub world: String,
    pub started_ms: u64,
    /// `None` while it runs.
    pub ended_ms: Option<u64>,
    /// The stop reason's kind, once ended.
    pub stop: Option<String>,
    /// The episode summary (JSON), once ended.
    pub summary: Option<serde_json::Value>,
}

/// One telemetry sample as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryRecord {
    pub tick: u64,
    pub time: f64,
    pub observation: Vec<f32>,
    pub action: Vec<f32>,
    /// The world's safe action replaced the controller's.
    pub safe: bool,
}

impl TenantDb {
    pub(super) fn create_episode_tables(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {EPISODES_TABLE} (
                 id TEXT PRIMARY KEY NOT NULL,
                 controller TEXT NOT NULL,
                 world TEXT NOT NULL,
                 started_ms INTEGER NOT NULL,
                 ended_ms INTEGER,
                 stop TEXT,
                 summary TEXT
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS {TELEMETRY_TABLE} (
                 episode TEXT NOT NULL,
                 tick INTEGER NOT NULL,
                 time REAL NOT NULL,
                 observation TEXT NOT NULL,
                 action TEXT NOT NULL,
                 safe INTEGER NOT NULL,
                 PRIMARY KEY (episode, tick)
             ) WITHOUT ROWID;"
        ))
    }

    /// Records that episode `record.id` started.
    pub fn episode_started(&self, record: &EpisodeRecord) -> Result<(), StorageError> {
        self.host()
            .execute(
                &format!(
                    "INSERT INTO {EPISODES_TABLE} (id, controller, world, started_ms)
                     VALUES (?1, ?2, ?3, ?4)"
                ),
                params![
                    record.id,
                    record.controller,
                    record.world,
                    record.started_ms as i64
                ],
            )
            .map_err(|e| self.sqlite_error(e))?;
        Ok(())
    }

    /// Records how episode `id` ended.
    pub fn episode_ended(
        &self,
        id: &str,
        ended_ms: u64,
        stop: &str,
        summary: &serde_json::Value,
    ) -> Result<(), StorageError> {
        self.host()
            .execute(
                &format!(
                    "UPDATE {EPISODES_TABLE} SET ended_ms = ?2, stop = ?3, summary = ?4
                     WHERE id = ?1"
                ),
                params![id, ended_ms as i64, stop, summary.to_string()],
            )
            .map_err(|e| self.sqlite_error(e))?;
        Ok(())
    }

    /// Appends telemetry samples of episode `id` in one transaction, up to
    /// [`MAX_TELEMETRY_SAMPLES`] per episode; returns how many were kept.
    pub fn record_telemetry(
        &self,
        id: &str,
        samples: &[TelemetryRecord],
    ) -> Result<usize, StorageError> {
        let mut conn = self.host();
        let tx = conn.transaction().map_err(|e| self.sqlite_error(e))?;
        let stored: u64 = tx
            .query_row(
                &format!("SELECT COUNT(*) FROM {TELEMETRY_TABLE} WHERE episode = ?1"),
                [id],
                |row| row.get::<_, i64>(0),
            )
            .map_err(|e| self.sqlite_error(e))? as u64;
        let room = MAX_TELEMETRY_SAMPLES.saturating_sub(stored) as usize;
        let kept = samples.len().min(room);
        {
            let mut insert = tx
                .prepare_cached(&format!(
                    "INSERT OR REPLACE INTO {TELEMETRY_TABLE}
                     (episode, tick, time, observation, action, safe)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                ))
                .map_err(|e| self.sqlite_error(e))?;
            for sample in &samples[..kept] {
                let json = |values: &[f32]| serde_json::to_string(values).unwrap_or_default();
                insert
                    .execute(params![
                        id,
                        sample.tick as i64,
                        sample.time,
                        json(&sample.observation),
                        json(&sample.action),
                        sample.safe
                    ])
                    .map_err(|e| self.sqlite_error(e))?;
            }
        }
        tx.commit().map_err(|e| self.sqlite_error(e))?;
        Ok(kept)
    }

    /// The newest episodes first, at most `limit` (capped at
    /// [`MAX_EPISODE_PAGE`]).
    pub fn episodes(&self, limit: u32) -> Result<Vec<EpisodeRecord>, StorageError> {
        let conn = self.host();
        let mut query = conn
            .prepare(&format!(
                "SELECT id, controller, world, started_ms, ended_ms, stop, summary
                 FROM {EPISODES_TABLE} ORDER BY started_ms DESC, id DESC LIMIT ?1"
            ))
            .map_err(|e| self.sqlite_error(e))?;
        let rows = query
            .query_map([limit.min(MAX_EPISODE_PAGE)], episode_row)
            .map_err(|e| self.sqlite_error(e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| self.sqlite_error(e))
    }

    /// Episode `id`, if this tenant has one.
    pub fn episode(&self, id: &str) -> Result<Option<EpisodeRecord>, StorageError> {
        self.host()
            .query_row(
                &format!(
                    "SELECT id, controller, world, started_ms, ended_ms, stop, summary
                     FROM {EPISODES_TABLE} WHERE id = ?1"
                ),
                [id],
                episode_row,
            )
            .optional()
            .map_err(|e| self.sqlite_error(e))
    }

    /// Telemetry of episode `id` from tick `from` on, at most `limit` samples.
    pub fn telemetry(
        &self,
        id: &str,
        from: u64,
        limit: u32,
    ) -> Result<Vec<TelemetryRecord>, StorageError> {
        let conn = self.host();
        let mut query = conn
            .prepare(&format!(
                "SELECT tick, time, observation, action, safe FROM {TELEMETRY_TABLE}
                 WHERE episode = ?1 AND tick >= ?2 ORDER BY tick LIMIT ?3"
            ))
            .map_err(|e| self.sqlite_error(e))?;
        let rows = query
            .query_map(params![id, from as i64, limit], |row| {
                let values = |text: String| serde_json::from_str(&text).unwrap_or_default();
                Ok(TelemetryRecord {
                    tick: row.get::<_, i64>(0)? as u64,
                    time: row.get(1)?,
                    observation: values(row.get(2)?),
                    action: values(row.get(3)?),
                    safe: row.get(4)?,
                })
            })
            .map_err(|e| self.sqlite_error(e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| self.sqlite_error(e))
    }
}

fn episode_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<EpisodeRecord> {
    Ok(EpisodeRecord {
        id: row.get(0)?,
        controller: row.get(1)?,
        world: row.get(2)?,
        started_ms: row.get::<_, i64>(3)? as u64,
        ended_ms: row.get::<_, Option<i64>>(4)?.map(|v| v as u64),
        stop: row.get(5)?,
        summary: row
            .get::<_, Option<String>>(6)?
            .and_then(|text| serde_json::from_str(&text).ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::db;

    #[test]
    fn an_episode_and_its_telemetry_round_trip_and_telemetry_is_bounded() {
        let (_dir, db) = db();
        let record = EpisodeRecord {
            id: "ep-1".into(),
            controller: "pid".into(),
            world: "cartpole".into(),
            started_ms: 5,
            ended_ms: None,
            stop: None,
            summary: None,
        };
        db.episode_started(&record).unwrap();
        assert_eq!(db.episode("ep-1").unwrap(), Some(record.clone()));
        let sample = |tick| TelemetryRecord {
            tick,
            time: tick as f64 / 100.0,
            observation: vec![0.5, -1.0],
            action: vec![2.0],
            safe: tick % 2 == 0,
        };
        let samples: Vec<_> = (0..10).map(sample).collect();
        assert_eq!(db.record_telemetry("ep-1", &samples).unwrap(), 10);
        assert_eq!(db.telemetry("ep-1", 4, 3).unwrap(), samples[4..7].to_vec());
        let summary = serde_json::json!({"ticks": 10});
        db.episode_ended("ep-1", 9, "completed", &summary).unwrap();
        let ended = db.episode("ep-1").unwrap().unwrap();
        assert_eq!(ended.stop.as_deref(), Some("completed"));
        assert_eq!(ended.summary, Some(summary));
        assert_eq!(db.episodes(10).unwrap(), vec![ended]);
        assert_eq!(db.episode("ep-2").unwrap(), None);
    }

    #[test]
    fn guest_sql_cannot_reach_episode_tables() {
        let (_dir, db) = db();
        for statement in [
            "SELECT * FROM _sovra_episodes",
            "DELETE FROM _sovra_telemetry",
        ] {
            assert!(db.sql_execute(statement, &[]).is_err(), "{statement}");
        }
    }
}
