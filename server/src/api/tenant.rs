//! Tenant endpoints: installs (with grants no higher than the node's
//! ceilings), invocations (JSON, or server-sent events for tokens and logs as
//! they happen), invocation history, and the models a tenant may use.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sovra_gpu::ModelKind;
use sovra_runtime::audit::NotAudited;
use sovra_runtime::policy::{self, Effective};
use sovra_runtime::{
    Digest, Invocation, InvocationReport, InvokeError, LiveEvent, LogLine, TenantId,
};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::body::{JsonObject, NoFields};
use super::{ApiError, Caller, OperatorToo, caller, require_serving, require_tenant};
use crate::db::{InstallGrants, InstallRow, PluginState, now_ms};
use crate::limiter::Refusal;
use crate::state::{AppState, ReadyInstall};

type Reply = Result<(StatusCode, Json<Value>), ApiError>;

/// When a caller should retry an invocation the node could not serve
/// (its tenant storage stayed busy, or a model was over capacity).
const UNAVAILABLE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Most history records returned at once.
pub const MAX_HISTORY: usize = 500;

fn model_kind(kind: ModelKind) -> &'static str {
    match kind {
        ModelKind::TextGeneration => "text-generation",
        ModelKind::Embedding => "embedding",
        ModelKind::Tensor => "tensor",
    }
}

/// Models this caller may use: a tenant sees its own allowlist.
pub async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Reply {
    let tenant = match caller(&state, &headers)? {
        Caller::Tenant(tenant) => Some(tenant),
        Caller::Operator => None,
        Caller::DisabledTenant(_) => {
            return Err(ApiError::forbidden(
                "tenant-disabled",
                "this tenant is disabled",
            ));
        }
        Caller::Anonymous => return Err(ApiError::unauthorized()),
    };
    let models = match &tenant {
        Some(tenant) => state.models.models_for_tenant(tenant),
        None => state.models.all_models(),
    };
    let statuses: std::collections::BTreeMap<String, sovra_gpu::ModelStatus> =
        state.models.statuses().into_iter().collect();
    let models: Vec<Value> = models
        .into_iter()
        .map(|m| {
            let device = statuses.get(&m.name).map(|s| s.device.clone());
            json!({"name": m.name, "kind": model_kind(m.kind), "device": device,
                   "context_length": m.context_length, "embedding_length": m.embedding_length})
        })
        .collect();
    Ok((StatusCode::OK, Json(json!({"models": models}))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallRequest {
    version: String,
    #[serde(default, deserialize_with = "super::body::object")]
    grants: InstallGrants,
}

pub async fn install(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, plugin)): Path<(String, String)>,
    body: Result<JsonObject<InstallRequest>, ApiError>,
) -> Reply {
    require_tenant(&state, &headers, &tenant, OperatorToo::Yes)?;
    let JsonObject(body) = body?;
    let row = state.db.plugin(&plugin, &body.version)?;
    let row = match row {
        Some(row) if row.state == PluginState::Approved => row,
        Some(row) if row.state == PluginState::Yanked => {
            return Err(ApiError::conflict(
                "yanked",
                format!(
                    "{plugin}@{} was yanked and cannot be installed",
                    body.version
                ),
            ));
        }
        _ => {
            return Err(ApiError::not_found(
                "no-such-plugin",
                format!("no approved plugin {plugin}@{}", body.version),
            ));
        }
    };
    let grants = &body.grants;
    policy::check_ceilings(grants, &state.config.ceilings)
        .map_err(|e| ApiError::forbidden("above-ceiling", e.to_string()))?;
    let allowed = state.models.models_for_tenant(&tenant);
    if let Some(model) = grants
        .models
        .iter()
        .find(|model| !allowed.iter().any(|m| &m.name == *model))
    {
        return Err(ApiError::forbidden(
            "model-not-allowed",
            format!("model `{model}` is not available to tenant `{tenant}` on this node"),
        ));
    }
    policy::check_requested(&format!("{plugin}@{}", body.version), &row.requests, grants)
        .map_err(|e| ApiError::unprocessable("not-requested", e.to_string()))?;
    let install = InstallRow {
        tenant: tenant.clone(),
        plugin: plugin.clone(),
        version: body.version.clone(),
        grants: body.grants.clone(),
        installed_ms: now_ms(),
    };
    state.db.install(&install)?;
    state.forget_install(&tenant, &plugin);
    Ok((StatusCode::OK, Json(json!({"install": install}))))
}

pub async fn list_installs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Reply {
    require_tenant(&state, &headers, &tenant, OperatorToo::Yes)?;
    Ok((
        StatusCode::OK,
        Json(json!({"installs": state.db.installs(&tenant)?})),
    ))
}

fn no_install(tenant: &str, plugin: &str) -> ApiError {
    ApiError::not_found(
        "not-installed",
        format!("tenant `{tenant}` has not installed `{plugin}`"),
    )
}

pub async fn show_install(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, plugin)): Path<(String, String)>,
) -> Reply {
    require_tenant(&state, &headers, &tenant, OperatorToo::Yes)?;
    let row = state
        .db
        .installed(&tenant, &plugin)?
        .ok_or_else(|| no_install(&tenant, &plugin))?;
    Ok((StatusCode::OK, Json(json!({"install": row}))))
}

pub async fn uninstall(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, plugin)): Path<(String, String)>,
    body: Result<NoFields, ApiError>,
) -> Reply {
    require_tenant(&state, &headers, &tenant, OperatorToo::Yes)?;
    body?;
    if !state.db.uninstall(&tenant, &plugin)? {
        return Err(no_install(&tenant, &plugin));
    }
    state.forget_install(&tenant, &plugin);
    Ok((StatusCode::OK, Json(json!({"uninstalled": plugin}))))
}

/// The install, loaded and ready (from the cache, or from the database and
/// the artifact store). Code that is not compiled yet (a new engine version)
/// is compiled by the worker process first, never in the node. Grants are
/// cut to the node's current ceilings, which may have changed since install.
async fn ready_install(
    state: &Arc<AppState>,
    tenant: &str,
    plugin: &str,
) -> Result<Arc<ReadyInstall>, ApiError> {
    if let Some(ready) = state.cached_install(tenant, plugin) {
        return Ok(ready);
    }
    let generation = state.install_generation();
    let row = state
        .db
        .installed(tenant, plugin)?
        .ok_or_else(|| no_install(tenant, plugin))?;
    let plugin_row = state.db.plugin(&row.plugin, &row.version)?.ok_or_else(|| {
        ApiError::internal(format!("install of missing {plugin}@{}", row.version))
    })?;
    let digest = Digest::from_hex(&plugin_row.digest)
        .ok_or_else(|| ApiError::internal(format!("bad stored digest {}", plugin_row.digest)))?;
    if !state.runtime.is_compiled(&digest) {
        let _slot = state
            .compile_slots
            .acquire()
            .await
            .map_err(ApiError::internal)?;
        state
            .compiler
            .compile(
                &state.artifacts.path(&plugin_row.digest),
                &state.compiled_dir,
            )
            .await
            .map_err(ApiError::internal)?;
    }
    let loader = Arc::clone(state);
    let hex = plugin_row.digest.clone();
    let agent = tokio::task::spawn_blocking(move || {
        let bytes = loader.artifacts.get(&hex).map_err(ApiError::internal)?;
        loader
            .runtime
            .load(&bytes, None)
            .map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)??;
    // The ceilings may have been lowered since the install: the effective
    // grant follows them.
    let Effective { grants, limits } =
        policy::effective(agent.manifest(), &row.grants, &state.config.ceilings);
    let ready = Arc::new(ReadyInstall {
        row,
        agent,
        grants,
        limits,
    });
    state.cache_install(Arc::clone(&ready), generation);
    Ok(ready)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvokeRequest {
    #[serde(default)]
    input: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// Stream events (as `Accept: text/event-stream` does).
    #[serde(default)]
    stream: bool,
}

pub async fn invoke(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, plugin)): Path<(String, String)>,
    body: Result<JsonObject<InvokeRequest>, ApiError>,
) -> Result<Response, ApiError> {
    require_serving(&state)?;
    require_tenant(&state, &headers, &tenant, OperatorToo::No)?;
    let JsonObject(body) = body?;
    // Admission first: loading an install must not be a way around it.
    let permit = state
        .limiter
        .admit(&tenant)
        .map_err(|refusal| match refusal {
            Refusal::Rate(wait) => {
                state.metrics.refused(&tenant, "rate");
                ApiError::too_many(
                    "rate-limited",
                    format!("tenant `{tenant}` is over its invocation rate"),
                    wait,
                )
            }
            Refusal::Concurrency(limit) => {
                state.metrics.refused(&tenant, "concurrency");
                ApiError::too_many(
                    "too-many-in-flight",
                    format!("tenant `{tenant}` already has {limit} invocations in flight"),
                    std::time::Duration::from_secs(1),
                )
            }
        })?;
    let ready = ready_install(&state, &tenant, &plugin).await?;
    let tenant_id = TenantId::new(&tenant).map_err(ApiError::internal)?;
    let mut invocation = Invocation::new(tenant_id, body.input);
    invocation.grants = ready.grants.clone();
    invocation.limits = ready.limits;
    invocation.metadata = body.metadata.into_iter().collect();
    let wants_stream = body.stream
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
    if !wants_stream {
        // In its own task: a client that hangs up does not cut the
        // invocation short, so it still ends cleanly and is audited.
        let runner = Arc::clone(&state);
        let owner = tenant.clone();
        let (report, audited) = tokio::spawn(async move {
            let _running = runner.in_flight.enter();
            run_audited(&runner, &owner, &ready, invocation, permit).await
        })
        .await
        .map_err(ApiError::internal)?;
        if let Err(error) = audited {
            return Err(not_audited(&report, error));
        }
        return Ok(match report.result {
            Ok(ref response) => (
                StatusCode::OK,
                Json(json!({
                    "invocation_id": report.invocation_id,
                    "output": response.output,
                    "metadata": response.metadata.iter().cloned().collect::<BTreeMap<_, _>>(),
                    "logs": report.logs.iter().map(log_json).collect::<Vec<_>>(),
                    "generated_tokens": report.generated_tokens,
                    "duration_ms": report.duration.as_secs_f64() * 1000.0,
                })),
            )
                .into_response(),
            Err(ref error) => {
                let mut api = invoke_error(error);
                api.extra = Some(json!({"invocation_id": report.invocation_id}));
                api.into_response()
            }
        });
    }

    // Streaming: live events as they happen, then the outcome. The
    // invocation runs to its end even if the client goes away.
    let (events, receiver) = tokio::sync::mpsc::unbounded_channel();
    invocation.events = Some(events);
    let (done, outcome) = tokio::sync::oneshot::channel();
    let runner = Arc::clone(&state);
    tokio::spawn(async move {
        let _running = runner.in_flight.enter();
        let _ = done.send(run_audited(&runner, &tenant, &ready, invocation, permit).await);
    });
    let live = UnboundedReceiverStream::new(receiver).map(|event| {
        Ok::<_, Infallible>(match event {
            LiveEvent::Log(line) => Event::default()
                .event("log")
                .data(log_json(&line).to_string()),
            LiveEvent::Token { model, text } => Event::default()
                .event("token")
                .data(json!({"model": model, "text": text}).to_string()),
        })
    });
    let last = futures_util::stream::once(async move {
        Ok::<_, Infallible>(match outcome.await {
            Ok((report, Err(error))) => {
                let error = not_audited(&report, error);
                Event::default().event("error").data(
                    json!({
                        "invocation_id": report.invocation_id,
                        "error": {"code": error.code, "message": error.message},
                    })
                    .to_string(),
                )
            }
            Ok((report, Ok(()))) => match &report.result {
                Ok(response) => Event::default().event("result").data(
                    json!({
                        "invocation_id": report.invocation_id,
                        "output": response.output,
                        "metadata": response.metadata.iter().cloned().collect::<BTreeMap<_, _>>(),
                        "generated_tokens": report.generated_tokens,
                        "duration_ms": report.duration.as_secs_f64() * 1000.0,
                    })
                    .to_string(),
                ),
                Err(error) => Event::default().event("error").data(
                    json!({
                        "invocation_id": report.invocation_id,
                        "error": {"code": error.kind(), "message": error.to_string()},
                    })
                    .to_string(),
                ),
            },
            Err(_) => Event::default().event("error").data(
                json!({"error": {"code": "internal", "message": "the invocation was lost"}})
                    .to_string(),
            ),
        })
    });
    Ok(Sse::new(live.chain(last))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Runs one admitted invocation and waits until its audit record is
/// durable: an invocation the node answers is in the tenant's history, even
/// if the node crashes right after. The admission permit is held until then.
async fn run_audited(
    state: &AppState,
    tenant: &str,
    ready: &ReadyInstall,
    invocation: Invocation,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> (InvocationReport, Result<(), NotAudited>) {
    let mut report = state.runtime.invoke(&ready.agent, invocation).await;
    record(state, tenant, &report);
    let audited = std::mem::take(&mut report.audited).durable().await;
    drop(permit);
    (report, audited)
}

/// The answer for an invocation that ran but could not be recorded.
fn not_audited(report: &InvocationReport, error: NotAudited) -> ApiError {
    tracing::error!(invocation = %report.invocation_id, "{error}");
    let mut api = ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "not-audited",
        format!("the invocation ran but {error}; its result is withheld"),
    );
    api.extra = Some(json!({"invocation_id": report.invocation_id}));
    api
}

fn record(state: &AppState, tenant: &str, report: &InvocationReport) {
    let outcome = match &report.result {
        Ok(_) => "ok",
        Err(error) => error.kind(),
    };
    state
        .metrics
        .invocation(tenant, outcome, report.duration, report.generated_tokens);
}

fn log_json(line: &LogLine) -> Value {
    json!({
        "level": line.level.as_str(),
        "message": line.message,
        "fields": line.fields.iter().cloned().collect::<BTreeMap<_, _>>(),
    })
}

/// The HTTP form of an invocation failure: whose fault, and which.
fn invoke_error(error: &InvokeError) -> ApiError {
    let status = match error {
        InvokeError::NotGranted { .. } => StatusCode::FORBIDDEN,
        InvokeError::InvalidInvocation(_) => StatusCode::BAD_REQUEST,
        InvokeError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        InvokeError::Unavailable(_) => {
            return ApiError {
                retry_after: Some(UNAVAILABLE_RETRY_AFTER),
                ..ApiError::unavailable(error.to_string())
            };
        }
        InvokeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        // The agent's own fault or refusal: the request was fine.
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(status, error.kind(), error.to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    limit: Option<usize>,
}

pub async fn history(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Reply {
    require_tenant(&state, &headers, &tenant, OperatorToo::Yes)?;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(50).min(MAX_HISTORY);
    let reader = Arc::clone(&state);
    let owner = tenant.clone();
    let records = tokio::task::spawn_blocking(move || reader.runtime.audit().recent(&owner, limit))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let records: Vec<Value> = records
        .into_iter()
        .map(|r| {
            json!({
                "invocation_id": r.invocation_id,
                "agent": r.agent,
                "agent_digest": r.agent_digest,
                "started_at_ms": r.started_at_ms,
                "duration_us": r.duration_us,
                "outcome": r.outcome,
                "error": r.error,
                "denials": r.denials,
            })
        })
        .collect();
    Ok((StatusCode::OK, Json(json!({"invocations": records}))))
}

/// Longest period one usage query covers, in days.
pub const MAX_USAGE_DAYS: u64 = 366;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    days: Option<u64>,
}

/// A tenant's tokens per model and day (UTC) over the last `days` (30 by
/// default): for the tenant itself and for the operator.
pub async fn usage(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Reply {
    require_tenant(&state, &headers, &tenant, OperatorToo::Yes)?;
    let Query(query) = query?;
    let days = query.days.unwrap_or(30).clamp(1, MAX_USAGE_DAYS);
    let today_start = now_ms().max(0) as u64 / 86_400_000 * 86_400_000;
    let since = today_start.saturating_sub((days - 1) * 86_400_000);
    let reader = Arc::clone(&state);
    let owner = tenant.clone();
    let daily = tokio::task::spawn_blocking(move || reader.runtime.audit().usage(&owner, since))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let (prompt, generated) = daily.iter().fold((0, 0), |(p, g), d| {
        (p + d.prompt_tokens, g + d.generated_tokens)
    });
    Ok((
        StatusCode::OK,
        Json(json!({
            "tenant": tenant,
            "since": sovra_runtime::audit::utc_day(since),
            "usage": daily,
            "total": {"prompt_tokens": prompt, "generated_tokens": generated},
        })),
    ))
}
