//! `POST /v1/tenants/{tenant}/installs/{plugin}/invoke`: one invocation of an
//! installed plugin, answered as JSON or as server-sent events.
//!
//! Both answers come from one path: admission, the install, then
//! [`spawn_invocation`] runs the invocation in its own task (a client that
//! hangs up does not cut it short, so it still ends cleanly and is audited),
//! and [`Outcome`] is what the client is told at the end, as the JSON body or
//! as the stream's last event.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sovra_runtime::audit::NotAudited;
use sovra_runtime::tools::{InstalledTool, ToolCatalog, ToolLookup};
use sovra_runtime::{Invocation, InvocationReport, InvokeError, LiveEvent, LogLine, TenantId};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::oneshot;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::body::JsonObject;
use super::tenant::{NOT_INSTALLED, ready_install};
use super::{ApiError, OperatorToo, require_serving, require_tenant};
use crate::limiter::Refusal;
use crate::state::{AppState, ReadyInstall};

/// The tools a node's invocation may reach: the tenant's installs of tool
/// plugins.
pub(super) fn node_tools(state: &Arc<AppState>) -> Arc<dyn ToolCatalog> {
    Arc::new(NodeTools {
        state: Arc::clone(state),
    })
}

/// When a caller should retry an invocation the node could not serve
/// (its tenant storage stayed busy, or a model was over capacity).
const UNAVAILABLE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

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
    let permit = admit(&state, &tenant)?;
    let ready = ready_install(&state, &tenant, &plugin).await?;
    let tenant_id = TenantId::new(&tenant).map_err(ApiError::internal)?;
    let mut invocation = Invocation::new(tenant_id, body.input);
    invocation.grants = ready.grants.clone();
    invocation.limits = ready.limits;
    invocation.metadata = body.metadata.into_iter().collect();
    invocation.tools = Some(node_tools(&state));
    invocation.token_budget = state.token_budget(&tenant);
    let streamed = body.stream || accepts_event_stream(&headers);
    if !streamed {
        let outcome = spawn_invocation(state, tenant, ready, invocation, permit)
            .await
            .map_err(ApiError::internal)?;
        return Ok(match outcome {
            Outcome::Answered(body) => (StatusCode::OK, Json(body)).into_response(),
            Outcome::Failed(error) => error.into_response(),
        });
    }
    let (events, receiver) = tokio::sync::mpsc::unbounded_channel();
    invocation.events = Some(events);
    let outcome = spawn_invocation(state, tenant, ready, invocation, permit);
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
        let event = match outcome.await {
            Ok(Outcome::Answered(body)) => Event::default().event("result").data(body.to_string()),
            Ok(Outcome::Failed(error)) => Event::default().event("error").data(
                json!({
                    "invocation_id": error.extra.as_ref().and_then(|e| e.get("invocation_id")),
                    "error": {"code": error.code, "message": error.message},
                })
                .to_string(),
            ),
            Err(_) => Event::default().event("error").data(
                json!({"error": {"code": "internal", "message": "the invocation was lost"}})
                    .to_string(),
            ),
        };
        Ok::<_, Infallible>(event)
    });
    Ok(Sse::new(live.chain(last))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// A tenant's tools on this node: its installs of tool plugins, each with
/// its own install's grants and limits.
#[derive(Debug)]
struct NodeTools {
    state: Arc<AppState>,
}

impl ToolCatalog for NodeTools {
    fn tool<'a>(&'a self, tenant: &'a TenantId, name: &'a str) -> ToolLookup<'a> {
        Box::pin(async move {
            match ready_install(&self.state, tenant.as_str(), name).await {
                Ok(ready) => Ok(Some(InstalledTool {
                    agent: Arc::clone(&ready.agent),
                    grants: ready.grants.clone(),
                    limits: ready.limits,
                })),
                Err(error) if error.code == NOT_INSTALLED => Ok(None),
                Err(error) => Err(error.message),
            }
        })
    }
}

/// Whether the client asked for server-sent events by its `Accept` header.
fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// The tenant's admission permit, or the 429 that says which limit it hit:
/// its rate, its calls in flight, or its daily quota (checked last, so that
/// only a call that runs is counted against it).
pub(super) fn admit(state: &AppState, tenant: &str) -> Result<OwnedSemaphorePermit, ApiError> {
    let permit = admit_within_rate(state, tenant)?;
    let now = crate::db::now_ms().max(0) as u64;
    state
        .quotas
        .admit(tenant, state.runtime.audit(), now)
        .map_err(|exceeded| {
            state.metrics.refused(tenant, "quota");
            ApiError::too_many(
                "quota-exceeded",
                format!(
                    "tenant `{tenant}` used its {} invocations of today (UTC)",
                    exceeded.limit
                ),
                exceeded.retry_after,
            )
        })?;
    Ok(permit)
}

/// The 429 for a call refused by a token quota (`why` names it).
pub(super) fn token_quota_exceeded(state: &AppState, tenant: &str, why: String) -> ApiError {
    state.metrics.refused(tenant, "quota");
    let now = crate::db::now_ms().max(0) as u64;
    let next_day = now / 86_400_000 * 86_400_000 + 86_400_000;
    ApiError::too_many(
        "quota-exceeded",
        why,
        std::time::Duration::from_millis(next_day - now),
    )
}

fn admit_within_rate(state: &AppState, tenant: &str) -> Result<OwnedSemaphorePermit, ApiError> {
    state
        .limiter
        .admit(tenant)
        .map_err(|refusal| match refusal {
            Refusal::Rate(wait) => {
                state.metrics.refused(tenant, "rate");
                ApiError::too_many(
                    "rate-limited",
                    format!("tenant `{tenant}` is over its invocation rate"),
                    wait,
                )
            }
            Refusal::Concurrency(limit) => {
                state.metrics.refused(tenant, "concurrency");
                ApiError::too_many(
                    "too-many-in-flight",
                    format!("tenant `{tenant}` already has {limit} invocations in flight"),
                    std::time::Duration::from_secs(1),
                )
            }
        })
}

/// What the client is told when an invocation ends.
pub(super) enum Outcome {
    /// The agent answered: the JSON body (without the logs when they were
    /// streamed as they happened).
    Answered(Value),
    /// The invocation failed, or ran but could not be recorded.
    Failed(ApiError),
}

/// Runs one admitted invocation in its own task; the receiver gets its
/// outcome once its audit record is durable (see [`run_audited`]).
pub(super) fn spawn_invocation(
    state: Arc<AppState>,
    tenant: String,
    ready: Arc<ReadyInstall>,
    invocation: Invocation,
    permit: OwnedSemaphorePermit,
) -> oneshot::Receiver<Outcome> {
    let streamed = invocation.events.is_some();
    let (done, outcome) = oneshot::channel();
    tokio::spawn(async move {
        let _running = state.in_flight.enter();
        let (report, audited) = run_audited(&state, &tenant, &ready, invocation, permit).await;
        let _ = done.send(outcome_of(&report, audited, streamed));
    });
    outcome
}

fn outcome_of(
    report: &InvocationReport,
    audited: Result<(), NotAudited>,
    streamed: bool,
) -> Outcome {
    if let Err(error) = audited {
        return Outcome::Failed(not_audited(report, error));
    }
    match &report.result {
        Ok(response) => {
            let mut body = json!({
                "invocation_id": report.invocation_id,
                "output": response.output,
                "metadata": response.metadata.iter().cloned().collect::<BTreeMap<_, _>>(),
                "generated_tokens": report.generated_tokens,
                "duration_ms": report.duration.as_secs_f64() * 1000.0,
            });
            if !streamed {
                body["logs"] = report.logs.iter().map(log_json).collect();
            }
            Outcome::Answered(body)
        }
        Err(error) => {
            let mut api = invoke_error(error);
            api.extra = Some(Box::new(json!({"invocation_id": report.invocation_id})));
            Outcome::Failed(api)
        }
    }
}

/// Runs one admitted invocation and waits until its audit record is
/// durable: an invocation the node answers is in the tenant's history, even
/// if the node crashes right after. The admission permit is held until then.
async fn run_audited(
    state: &AppState,
    tenant: &str,
    ready: &ReadyInstall,
    invocation: Invocation,
    permit: OwnedSemaphorePermit,
) -> (InvocationReport, Result<(), NotAudited>) {
    let mut report = state.runtime.invoke(&ready.agent, invocation).await;
    let outcome = match &report.result {
        Ok(_) => "ok",
        Err(error) => error.kind(),
    };
    state
        .metrics
        .invocation(tenant, outcome, report.duration, report.generated_tokens);
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
    api.extra = Some(Box::new(json!({"invocation_id": report.invocation_id})));
    api
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
