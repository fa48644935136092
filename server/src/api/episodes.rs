//! Controller episodes over HTTP: a tenant starts an episode of an installed
//! controller against a simulated world, reads its status and its summary
//! (kept in the tenant's own database), streams its telemetry as
//! server-sent events, and stops it; the operator may stop any episode.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sovra_control::{EpisodePlan, EpisodeSpec, Pacing, WorldOptions};
use sovra_runtime::storage::{EpisodeRecord, MAX_EPISODE_PAGE, TelemetryRecord};
use sovra_runtime::{TenantId, World};
use tokio::sync::broadcast::error::RecvError;

use super::body::{JsonObject, NoFields};
use super::tenant::ready_install;
use super::{ApiError, OperatorToo, require_serving, require_tenant};
use crate::episodes::{DEFAULT_TELEMETRY_HZ, EpisodeStart, StartRefusal};
use crate::state::AppState;

/// Stored samples an ended episode's telemetry stream replays.
const MAX_REPLAYED_SAMPLES: u32 = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpisodeRequest {
    /// The simulated world: `cartpole` or `arm`.
    world: String,
    rate_hz: u32,
    /// World time to run, in seconds.
    duration_s: f64,
    /// Milliseconds after a tick is due its actions must be in.
    #[serde(default)]
    deadline_ms: Option<f64>,
    #[serde(default)]
    miss_limit: Option<u32>,
    /// Actuator ranges narrower than the world's: name -> [min, max].
    #[serde(default)]
    limits: BTreeMap<String, [f32; 2]>,
    #[serde(default)]
    parameters: BTreeMap<String, String>,
    #[serde(default)]
    sensor_noise: f32,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    telemetry_hz: Option<u32>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid-episode", message)
}

impl EpisodeRequest {
    fn plan(self) -> Result<(EpisodePlan, u32), ApiError> {
        let seconds = |value: f64, what: &str| {
            Duration::try_from_secs_f64(value)
                .map_err(|_| bad(format!("{what} must be a positive number of seconds")))
        };
        let mut spec = EpisodeSpec::new(self.rate_hz, seconds(self.duration_s, "duration_s")?);
        spec.deadline = self
            .deadline_ms
            .map(|ms| seconds(ms / 1000.0, "deadline_ms"))
            .transpose()?;
        if let Some(limit) = self.miss_limit {
            spec.miss_limit = limit;
        }
        spec.pacing = Pacing::RealTime;
        spec.limits = self
            .limits
            .into_iter()
            .map(|(name, [min, max])| (name, min, max))
            .collect();
        spec.parameters = self.parameters.into_iter().collect();
        if !(self.sensor_noise.is_finite() && self.sensor_noise >= 0.0) {
            return Err(bad("sensor_noise must be a non-negative number"));
        }
        let plan = EpisodePlan {
            world: self.world,
            world_options: WorldOptions {
                sensor_noise: self.sensor_noise,
                seed: self.seed.unwrap_or(1),
            },
            spec,
        };
        Ok((plan, self.telemetry_hz.unwrap_or(DEFAULT_TELEMETRY_HZ)))
    }
}

/// `POST /v1/tenants/{tenant}/installs/{plugin}/episodes`
pub async fn start(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, plugin)): Path<(String, String)>,
    body: Result<JsonObject<EpisodeRequest>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_serving(&state)?;
    require_tenant(&state, &headers, &tenant, OperatorToo::No)?;
    let JsonObject(body) = body?;
    let ready = ready_install(&state, &tenant, &plugin).await?;
    if ready.agent.manifest().world != World::Controller {
        return Err(ApiError::bad_request(
            "not-a-controller",
            format!(
                "`{plugin}` implements the `{}` world; episodes run controllers",
                ready.agent.manifest().world.as_str()
            ),
        ));
    }
    let (plan, telemetry_hz) = body.plan()?;
    let start = EpisodeStart {
        tenant: TenantId::new(&tenant).map_err(ApiError::internal)?,
        agent: Arc::clone(&ready.agent),
        grants: ready.grants.clone(),
        max_memory: ready.limits.max_memory,
        plan,
        telemetry_hz,
    };
    let episodes = Arc::clone(&state.episodes);
    let runtime = state.runtime.clone();
    let started = tokio::task::spawn_blocking(move || episodes.start(&runtime, start))
        .await
        .map_err(ApiError::internal)?;
    let episode = started.map_err(|refusal| match refusal {
        StartRefusal::Invalid(message) => bad(message),
        error @ StartRefusal::NotGranted { .. } => {
            ApiError::forbidden("not-granted", error.to_string())
        }
        StartRefusal::TooMany(message) => {
            ApiError::too_many("too-many-episodes", message, Duration::from_secs(1))
        }
        StartRefusal::Storage(message) => ApiError::unavailable(message),
        error @ StartRefusal::Thread(_) => ApiError::internal(error),
    })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "episode_id": episode.record.id,
            "status": "running",
            "controller": episode.record.controller,
            "world": episode.record.world,
        })),
    ))
}

fn record_json(record: &EpisodeRecord, live: bool) -> Value {
    json!({
        "episode_id": record.id,
        "status": if live { "running" } else if record.ended_ms.is_some() { "ended" } else { "interrupted" },
        "controller": record.controller,
        "world": record.world,
        "started_ms": record.started_ms,
        "ended_ms": record.ended_ms,
        "stop": record.stop,
        "summary": record.summary,
    })
}

/// The tenant's database, off the async workers.
async fn with_storage<T: Send + 'static>(
    state: &Arc<AppState>,
    tenant: &str,
    work: impl FnOnce(
        &sovra_runtime::storage::TenantDb,
    ) -> Result<T, sovra_runtime::storage::StorageError>
    + Send
    + 'static,
) -> Result<T, ApiError> {
    let tenant = TenantId::new(tenant).map_err(ApiError::internal)?;
    let runtime = state.runtime.clone();
    tokio::task::spawn_blocking(move || {
        let db = runtime.tenant_storage(&tenant)?;
        work(&db)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|error| {
        tracing::error!(%error, "tenant storage");
        ApiError::unavailable("the tenant's storage is unavailable")
    })
}

fn no_episode(id: &str) -> ApiError {
    ApiError::not_found("no-such-episode", format!("no episode `{id}`"))
}

/// `GET /v1/tenants/{tenant}/episodes`
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_tenant(&state, &headers, &tenant, OperatorToo::No)?;
    let records = with_storage(&state, &tenant, |db| db.episodes(MAX_EPISODE_PAGE)).await?;
    let episodes: Vec<Value> = records
        .iter()
        .map(|r| record_json(r, state.episodes.live(&tenant, &r.id).is_some()))
        .collect();
    Ok(Json(json!({ "episodes": episodes })))
}

/// `GET /v1/tenants/{tenant}/episodes/{episode}`
pub async fn show(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    require_tenant(&state, &headers, &tenant, OperatorToo::No)?;
    let lookup = id.clone();
    let record = with_storage(&state, &tenant, move |db| db.episode(&lookup))
        .await?
        .ok_or_else(|| no_episode(&id))?;
    let live = state.episodes.live(&tenant, &id).is_some();
    Ok(Json(record_json(&record, live)))
}

/// `POST /v1/tenants/{tenant}/episodes/{episode}/stop`: the tenant, or the
/// operator, stops a running episode (the world gets no further action
/// from the controller; the summary says `stopped`).
pub async fn stop(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, id)): Path<(String, String)>,
    _body: NoFields,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_tenant(&state, &headers, &tenant, OperatorToo::Yes)?;
    if let Some(episode) = state.episodes.live(&tenant, &id) {
        episode.stop.stop();
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"episode_id": id, "status": "stopping"})),
        ));
    }
    let lookup = id.clone();
    match with_storage(&state, &tenant, move |db| db.episode(&lookup)).await? {
        Some(_) => Err(ApiError::conflict(
            "episode-ended",
            format!("episode `{id}` has ended"),
        )),
        None => Err(no_episode(&id)),
    }
}

fn sample_event(sample: &TelemetryRecord) -> Event {
    Event::default()
        .event("sample")
        .data(serde_json::to_string(sample).unwrap_or_default())
}

fn summary_event(summary: &Value) -> Event {
    Event::default().event("summary").data(summary.to_string())
}

/// `GET /v1/tenants/{tenant}/episodes/{episode}/telemetry`: server-sent
/// events, a `sample` per telemetry tick, then the `summary`. An episode
/// that has ended replays its stored samples.
pub async fn telemetry(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    require_tenant(&state, &headers, &tenant, OperatorToo::No)?;
    if let Some(episode) = state.episodes.live(&tenant, &id) {
        let (samples, finished) = episode.subscribe();
        let stream = futures_util::stream::unfold(
            (samples, finished, false),
            |(mut samples, mut finished, done)| async move {
                if done {
                    return None;
                }
                loop {
                    tokio::select! {
                        sample = samples.recv() => match sample {
                            Ok(sample) => {
                                return Some((Ok::<_, Infallible>(sample_event(&sample)), (samples, finished, false)));
                            }
                            Err(RecvError::Lagged(_)) => continue,
                            Err(RecvError::Closed) => {}
                        },
                        changed = finished.changed() => {
                            if changed.is_err() {
                                return None;
                            }
                        }
                    }
                    let summary = finished.borrow().clone();
                    if let Some(summary) = summary {
                        return Some((Ok(summary_event(&summary)), (samples, finished, true)));
                    }
                }
            },
        );
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let lookup = id.clone();
    let (record, samples) = with_storage(&state, &tenant, move |db| {
        let record = db.episode(&lookup)?;
        let samples = match record {
            Some(_) => db.telemetry(&lookup, 0, MAX_REPLAYED_SAMPLES)?,
            None => Vec::new(),
        };
        Ok((record, samples))
    })
    .await?;
    let record = record.ok_or_else(|| no_episode(&id))?;
    let summary = record.summary.unwrap_or(Value::Null);
    let events = samples
        .iter()
        .map(sample_event)
        .chain(std::iter::once(summary_event(&summary)))
        .map(Ok::<_, Infallible>)
        .collect::<Vec<_>>();
    Ok(Sse::new(futures_util::stream::iter(events)).into_response())
}
