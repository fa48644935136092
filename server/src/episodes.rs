//! Controller episodes a node runs for its tenants: admission (a bound per
//! node and per tenant), one loop thread per episode (the host's clock; the
//! guest runs on a thread of its own), telemetry at a reduced rate to live
//! subscribers and, batched off the loop's thread, to the tenant's own
//! database, and the summary recorded there when the episode ends.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sovra_control::{EpisodeMetrics, EpisodePlan, SpecError, StopHandle, run_sandboxed, simulated};
use sovra_runtime::capability::ImportNeed;
use sovra_runtime::storage::{EpisodeRecord, TelemetryRecord, TenantDb};
use sovra_runtime::{Agent, ControllerSetup, Grants, Runtime, TenantId};
use tokio::sync::{broadcast, watch};

use crate::db::now_ms;

/// Episodes a node runs at once.
/// Stops: episodes holding every core and every sandbox slot of a node.
pub const MAX_LIVE_EPISODES: usize = 16;

/// Episodes one tenant runs at once.
/// Stops: one tenant taking all of a node's episode slots.
pub const MAX_EPISODES_PER_TENANT: usize = 4;

/// Fastest telemetry a client may ask for.
/// Stops: telemetry at the tick rate turning the loop into a logger.
pub const MAX_TELEMETRY_HZ: u32 = 50;

/// Telemetry rate when the client names none.
pub const DEFAULT_TELEMETRY_HZ: u32 = 10;

/// Samples a live subscriber may fall behind by before it misses some.
const SUBSCRIBER_BUFFER: usize = 256;

/// Samples waiting for the database writer; beyond it samples are dropped
/// (the loop never waits for the disk).
const WRITER_QUEUE: usize = 4_096;

/// How often telemetry is written to the tenant's database.
const WRITE_EVERY: Duration = Duration::from_millis(250);

/// A running episode.
#[derive(Debug)]
pub struct LiveEpisode {
    pub record: EpisodeRecord,
    pub tenant: String,
    pub stop: StopHandle,
    telemetry: broadcast::Sender<Arc<TelemetryRecord>>,
    /// The summary (JSON) once the episode has ended and been recorded.
    finished: watch::Sender<Option<Arc<serde_json::Value>>>,
}

impl LiveEpisode {
    /// Its telemetry from now on, and the summary when it ends.
    pub fn subscribe(
        &self,
    ) -> (
        broadcast::Receiver<Arc<TelemetryRecord>>,
        watch::Receiver<Option<Arc<serde_json::Value>>>,
    ) {
        (self.telemetry.subscribe(), self.finished.subscribe())
    }
}

/// Why an episode was not started.
#[derive(Debug, thiserror::Error)]
pub enum StartRefusal {
    #[error("{0}")]
    Invalid(String),
    #[error("the controller imports `{interface}` but the install does not grant `{capability}`")]
    NotGranted {
        interface: String,
        capability: sovra_runtime::Capability,
    },
    #[error("{0}")]
    TooMany(String),
    #[error("the tenant's storage is unavailable: {0}")]
    Storage(String),
    #[error("cannot start the episode's thread: {0}")]
    Thread(String),
}

impl From<SpecError> for StartRefusal {
    fn from(error: SpecError) -> Self {
        StartRefusal::Invalid(error.to_string())
    }
}

/// The episodes running on a node, and the figures of all it ran.
#[derive(Debug, Default)]
pub struct Episodes {
    live: Mutex<HashMap<String, Arc<LiveEpisode>>>,
    pub metrics: EpisodeMetrics,
}

/// What one episode runs.
#[derive(Debug)]
pub struct EpisodeStart {
    pub tenant: TenantId,
    pub agent: Arc<Agent>,
    pub grants: Grants,
    pub max_memory: u64,
    pub plan: EpisodePlan,
    pub telemetry_hz: u32,
}

impl Episodes {
    fn live_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<LiveEpisode>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `tenant`'s running episode `id`.
    pub fn live(&self, tenant: &str, id: &str) -> Option<Arc<LiveEpisode>> {
        self.live_map()
            .get(id)
            .filter(|episode| episode.tenant == tenant)
            .cloned()
    }

    pub fn live_count(&self) -> usize {
        self.live_map().len()
    }

    /// Stops every running episode (the node is shutting down).
    pub fn stop_all(&self) {
        for episode in self.live_map().values() {
            episode.stop.stop();
        }
    }

    /// Returns once no episode runs.
    pub async fn all_ended(&self) {
        while self.live_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Checks and starts one episode; returns once it runs. Blocking: it
    /// records the start in the tenant's database.
    pub fn start(
        self: &Arc<Self>,
        runtime: &Runtime,
        start: EpisodeStart,
    ) -> Result<Arc<LiveEpisode>, StartRefusal> {
        let world = simulated(&start.plan.world, &start.plan.world_options)
            .map_err(|e| StartRefusal::Invalid(e.to_string()))?;
        start.plan.spec.validate(world.as_ref())?;
        drop(world);
        if !(1..=MAX_TELEMETRY_HZ).contains(&start.telemetry_hz) {
            return Err(StartRefusal::Invalid(format!(
                "telemetry rate {} Hz is outside 1..={MAX_TELEMETRY_HZ} Hz",
                start.telemetry_hz
            )));
        }
        for (interface, need) in start.agent.needs() {
            if let ImportNeed::Grant(capability) = need
                && !start.grants.allows(*capability)
            {
                return Err(StartRefusal::NotGranted {
                    interface: interface.clone(),
                    capability: *capability,
                });
            }
        }
        let db = runtime
            .tenant_storage(&start.tenant)
            .map_err(|e| StartRefusal::Storage(e.to_string()))?;
        let record = EpisodeRecord {
            id: sovra_control::new_episode_id(),
            controller: start.agent.manifest().name.clone(),
            world: start.plan.world.clone(),
            started_ms: now_ms().max(0) as u64,
            ended_ms: None,
            stop: None,
            summary: None,
        };
        let episode = Arc::new(LiveEpisode {
            record: record.clone(),
            tenant: start.tenant.to_string(),
            stop: StopHandle::default(),
            telemetry: broadcast::channel(SUBSCRIBER_BUFFER).0,
            finished: watch::channel(None).0,
        });
        {
            let mut live = self.live_map();
            if live.len() >= MAX_LIVE_EPISODES {
                return Err(StartRefusal::TooMany(format!(
                    "the node runs {MAX_LIVE_EPISODES} episodes, its most"
                )));
            }
            let tenant = start.tenant.as_str();
            if live.values().filter(|e| e.tenant == tenant).count() >= MAX_EPISODES_PER_TENANT {
                return Err(StartRefusal::TooMany(format!(
                    "tenant `{tenant}` runs {MAX_EPISODES_PER_TENANT} episodes, its most"
                )));
            }
            live.insert(record.id.clone(), Arc::clone(&episode));
        }
        let started = db
            .episode_started(&record)
            .map_err(|e| StartRefusal::Storage(e.to_string()))
            .and_then(|()| self.spawn(runtime.clone(), db, start, Arc::clone(&episode)));
        if let Err(refusal) = started {
            self.live_map().remove(&record.id);
            return Err(refusal);
        }
        Ok(episode)
    }

    fn spawn(
        self: &Arc<Self>,
        runtime: Runtime,
        db: Arc<TenantDb>,
        start: EpisodeStart,
        episode: Arc<LiveEpisode>,
    ) -> Result<(), StartRefusal> {
        let episodes = Arc::clone(self);
        std::thread::Builder::new()
            .name("sovra-episode".into())
            .spawn(move || episodes.run(runtime, db, start, episode))
            .map(drop)
            .map_err(|e| StartRefusal::Thread(e.to_string()))
    }

    /// The episode's thread: the loop, then the record of how it ended.
    fn run(
        &self,
        runtime: Runtime,
        db: Arc<TenantDb>,
        start: EpisodeStart,
        episode: Arc<LiveEpisode>,
    ) {
        let id = episode.record.id.clone();
        let (to_writer, writer_queue) = sync_channel(WRITER_QUEUE);
        let writer = {
            let db = Arc::clone(&db);
            let id = id.clone();
            std::thread::Builder::new()
                .name("sovra-telemetry".into())
                .spawn(move || write_telemetry(&db, &id, writer_queue))
                .ok()
        };
        let mut plan = start.plan;
        plan.spec.telemetry_every = (plan.spec.rate_hz / start.telemetry_hz).max(1);
        let setup = ControllerSetup {
            max_memory: start.max_memory,
            ..ControllerSetup::new(start.tenant, start.grants)
        };
        let outcome = run_sandboxed(
            &runtime,
            start.agent,
            setup,
            &id,
            &plan,
            &episode.stop,
            &mut |sample| {
                let record = Arc::new(TelemetryRecord {
                    tick: sample.tick,
                    time: sample.time,
                    observation: sample.observation.to_vec(),
                    action: sample.action.to_vec(),
                    safe: sample.safe,
                });
                let _ = episode.telemetry.send(Arc::clone(&record));
                let _ = to_writer.try_send(record);
            },
        );
        drop(to_writer);
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        let (stop, summary) = match &outcome {
            Ok(ended) => {
                self.metrics.record(&ended.summary, &ended.times);
                (
                    ended.summary.stop.kind(),
                    serde_json::to_value(&ended.summary).unwrap_or_default(),
                )
            }
            Err(error) => (
                "refused",
                serde_json::json!({"stop": {"kind": "refused", "error": error.to_string()}}),
            ),
        };
        if let Err(error) = db.episode_ended(&id, now_ms().max(0) as u64, stop, &summary) {
            tracing::error!(episode = %id, %error, "cannot record how the episode ended");
        }
        tracing::info!(episode = %id, tenant = %episode.tenant, stop, "episode ended");
        self.live_map().remove(&id);
        episode.finished.send_replace(Some(Arc::new(summary)));
    }
}

/// Writes telemetry in batches until the episode hangs up; a sample the
/// tenant's quota cannot take is dropped (and the episode goes on).
fn write_telemetry(db: &TenantDb, id: &str, queue: Receiver<Arc<TelemetryRecord>>) {
    let mut batch: Vec<TelemetryRecord> = Vec::new();
    let mut open = true;
    while open {
        match queue.recv_timeout(WRITE_EVERY) {
            Ok(sample) => {
                batch.push((*sample).clone());
                batch.extend(queue.try_iter().map(|s| (*s).clone()));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open = false,
        }
        if batch.is_empty() {
            continue;
        }
        if let Err(error) = db.record_telemetry(id, &batch) {
            tracing::warn!(episode = %id, %error, "telemetry not recorded");
        }
        batch.clear();
    }
}
