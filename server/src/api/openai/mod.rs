//! An OpenAI-compatible API on the node, for clients that already speak it
//! (the official `openai` libraries, their many wrappers): `GET /v1/models`,
//! `POST /v1/chat/completions` (JSON, or server-sent chunks with
//! `stream`), `POST /v1/completions`, `POST /v1/embeddings`.
//!
//! The same rules as guest calls: a tenant's own API key (`Authorization:
//! Bearer`), the models on its allowlist only, its invocation rate and
//! concurrency, the engine's per-tenant share, and every call audited in the
//! tenant's chain with the tokens it computed (so `GET
//! /v1/tenants/T/usage` counts them). Errors come in OpenAI's shape
//! (`{"error": {"message", "type", "param", "code"}}`) with sovra's status
//! and code. What sovra does not do (several choices, log-probabilities,
//! tools other than functions) is refused by name, never silently ignored.
//!
//! Structured output: `response_format` (`json_object`, `json_schema`)
//! holds the answer to the schema token by token; `tools` with
//! `tool_choice` (`auto`, `required`, one function) hold it to text or one
//! call whose arguments validate against its function's `parameters`,
//! answered as `tool_calls` ([`request`] shapes the engine's request). A
//! streamed answer that may be a call comes in one piece once it is known.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sovra_gpu::structured::tool_calls::{self, Answer as ToolAnswer, ToolSpec};
use sovra_gpu::{FinishReason, GenerationEvent, InferenceError, ModelKind, RequestContext};
use sovra_runtime::ModelUsage;
use sovra_runtime::audit::AuditRecord;
use tokio::sync::OwnedSemaphorePermit;

use super::invoke::{admit, token_quota_exceeded};
use super::{ApiError, Caller, caller};
use crate::state::AppState;
use request::{CompletionRequest, Prepared, Shape};
use sovra_runtime::budget::BudgetedGeneration;

mod embeddings;
mod request;

pub use embeddings::embeddings;

/// Where the ids of completions come from (unique within this process; the
/// audit record carries them).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// An [`ApiError`] answered in OpenAI's error shape, its status, code and
/// headers kept.
#[derive(Debug)]
pub struct OpenAiError(ApiError);

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        OpenAiError(error)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let kind = match self.0.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        };
        let body = json!({"error": {
            "message": self.0.message,
            "type": kind,
            "param": null,
            "code": self.0.code,
        }});
        let (parts, _) = self.0.into_response().into_parts();
        Response::from_parts(parts, Body::from(body.to_string()))
    }
}

type Answer = Result<Response, OpenAiError>;

/// The calling tenant, from its own API key.
fn tenant(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    match caller(state, headers)? {
        Caller::Tenant(tenant) => Ok(tenant),
        Caller::Operator => Err(ApiError::forbidden(
            "tenant-only",
            "these endpoints serve tenants: use a tenant's API key",
        )),
        Caller::DisabledTenant(tenant) => Err(ApiError::forbidden(
            "tenant-disabled",
            format!("tenant `{tenant}` is disabled"),
        )),
        Caller::Anonymous => Err(ApiError::unauthorized()),
    }
}

/// A JSON body of the documented fields, or the error naming what is wrong.
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("bad-body", format!("the request body: {e}")))
}

/// The engine's refusal as the HTTP answer.
fn inference_error(error: InferenceError) -> ApiError {
    let message = error.to_string();
    match error {
        InferenceError::NotFound { .. } => ApiError::not_found("model-not-found", message),
        InferenceError::AccessDenied { .. } => ApiError::forbidden("model-not-allowed", message),
        InferenceError::Unsupported { .. } | InferenceError::InvalidInput(_) => {
            ApiError::bad_request("invalid-input", message)
        }
        InferenceError::LimitExceeded(_) => ApiError::bad_request("limit-exceeded", message),
        InferenceError::Unavailable(_) => ApiError {
            retry_after: Some(Duration::from_secs(1)),
            ..ApiError::unavailable(message)
        },
        InferenceError::Internal(_) => ApiError::internal(message),
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `GET /v1/models`: the models this caller may use, in OpenAI's list shape,
/// each with sovra's own fields (kind, device, context and embedding length).
pub async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Answer {
    let models = match caller(&state, &headers)? {
        Caller::Tenant(tenant) => state.models.models_for_tenant(&tenant),
        Caller::Operator => state.models.all_models(),
        Caller::DisabledTenant(_) => {
            return Err(ApiError::forbidden("tenant-disabled", "this tenant is disabled").into());
        }
        Caller::Anonymous => return Err(ApiError::unauthorized().into()),
    };
    let statuses: BTreeMap<String, sovra_gpu::ModelStatus> =
        state.models.statuses().into_iter().collect();
    let data: Vec<Value> = models
        .into_iter()
        .map(|m| {
            let device = statuses.get(&m.name).map(|s| s.device.clone());
            json!({
                "id": m.name,
                "object": "model",
                "created": 0,
                "owned_by": "sovra",
                "kind": model_kind(m.kind),
                "device": device,
                "context_length": m.context_length,
                "embedding_length": m.embedding_length,
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

pub(super) fn model_kind(kind: ModelKind) -> &'static str {
    match kind {
        ModelKind::TextGeneration => "text-generation",
        ModelKind::Embedding => "embedding",
        ModelKind::Tensor => "tensor",
    }
}

impl Shape {
    fn object(self, chunk: bool) -> &'static str {
        match (self, chunk) {
            (Shape::Chat, false) => "chat.completion",
            (Shape::Chat, true) => "chat.completion.chunk",
            (Shape::Text, _) => "text_completion",
        }
    }

    fn audited_as(self) -> &'static str {
        match self {
            Shape::Chat => "openai:chat.completions",
            Shape::Text => "openai:completions",
        }
    }

    /// A choice holding `reply` (a whole answer, or one streamed piece);
    /// `call_id` names a tool call it holds.
    fn choice(
        self,
        reply: &Reply,
        call_id: &str,
        chunk: bool,
        finish: Option<FinishReason>,
    ) -> Value {
        let finish_reason = finish.map(|f| match (f, reply) {
            (_, Reply::Call { .. }) => "tool_calls",
            (FinishReason::Stop | FinishReason::Cancelled, _) => "stop",
            (FinishReason::Length, _) => "length",
        });
        match (self, chunk, reply) {
            (Shape::Chat, false, _) => {
                let mut message = reply.chat_fields(call_id, false);
                message["role"] = json!("assistant");
                json!({"index": 0, "message": message, "finish_reason": finish_reason})
            }
            (Shape::Chat, true, Reply::Text(text)) if text.is_empty() => {
                json!({"index": 0, "delta": {}, "finish_reason": finish_reason})
            }
            (Shape::Chat, true, _) => json!({
                "index": 0,
                "delta": reply.chat_fields(call_id, true),
                "finish_reason": finish_reason,
            }),
            (Shape::Text, _, reply) => json!({
                "index": 0,
                "text": reply.text(),
                "logprobs": null,
                "finish_reason": finish_reason,
            }),
        }
    }
}

/// What a choice carries: text, or the model's call of an offered tool.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Text(String),
    Call { name: String, arguments: Value },
}

impl Reply {
    /// The model's whole answer `text`, read as a call when `tools` were
    /// offered and it is one.
    fn read(text: String, tools: &[ToolSpec]) -> Reply {
        if tools.is_empty() {
            return Reply::Text(text);
        }
        match tool_calls::read_answer(&text, tools) {
            ToolAnswer::ToolCall { name, arguments } => Reply::Call { name, arguments },
            ToolAnswer::Text(text) => Reply::Text(text),
        }
    }

    fn text(&self) -> &str {
        match self {
            Reply::Text(text) => text,
            Reply::Call { .. } => "",
        }
    }

    /// The message (or delta) fields: `content`, or `tool_calls` with the
    /// arguments as JSON text, as OpenAI writes them.
    fn chat_fields(&self, call_id: &str, delta: bool) -> Value {
        match self {
            Reply::Text(text) => json!({"content": text}),
            Reply::Call { name, arguments } => {
                let mut call = json!({
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments.to_string()},
                });
                if delta {
                    call["index"] = json!(0);
                }
                json!({"content": null, "tool_calls": [call]})
            }
        }
    }
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Answer {
    complete(state, headers, bytes, Shape::Chat).await
}

/// `POST /v1/completions`.
pub async fn completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Answer {
    complete(state, headers, bytes, Shape::Text).await
}

async fn complete(state: Arc<AppState>, headers: HeaderMap, bytes: Bytes, shape: Shape) -> Answer {
    let tenant = tenant(&state, &headers)?;
    let body: CompletionRequest = body(&bytes)?;
    let stream = body.stream;
    let include_usage = body
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage);
    let permit = admit(&state, &tenant)?;
    let Prepared { request, tools } = body.prepare(shape)?;
    let model = request.model.clone();
    let service = state
        .models
        .lookup(&tenant, &model)
        .map_err(inference_error)?;
    let context = RequestContext {
        tenant: tenant.clone(),
        deadline: Some(Instant::now() + state.config.ceilings.timeout),
    };
    let budget = state.token_budget(&tenant);
    if let Some(budget) = &budget {
        budget
            .check(&model)
            .map_err(|why| token_quota_exceeded(&state, &tenant, why))?;
    }
    let started = (SystemTime::now(), Instant::now());
    let generation = service
        .start_generation(&context, request)
        .map_err(inference_error)?;
    let generation = BudgetedGeneration::new(generation, budget, model.clone());
    let call = Call {
        state,
        tenant,
        model,
        shape,
        tools,
        id: new_id(match shape {
            Shape::Chat => "chatcmpl",
            Shape::Text => "cmpl",
        }),
        created: unix_seconds(),
        started,
        _permit: permit,
    };
    if stream {
        return Ok(call.stream(generation, include_usage));
    }
    call.whole(generation).await
}

/// One completion being served.
struct Call {
    state: Arc<AppState>,
    tenant: String,
    model: String,
    shape: Shape,
    /// The tools the model was offered: its answer may be a call of one.
    tools: Vec<ToolSpec>,
    id: String,
    created: u64,
    started: (SystemTime, Instant),
    /// The tenant's admission, held until the completion is audited.
    _permit: OwnedSemaphorePermit,
}

impl Call {
    /// The id of the tool call this completion's answer may hold.
    fn call_id(&self) -> String {
        format!("call_{}", self.id)
    }

    fn envelope(&self, choice: Value, chunk: bool) -> Value {
        json!({
            "id": self.id,
            "object": self.shape.object(chunk),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }

    /// Records the completion in the tenant's audit chain (with the tokens
    /// computed, however it ended) and in the metrics; waits until durable.
    async fn audit(&self, meter: &sovra_gpu::UsageMeter, error: Option<&ApiError>) -> bool {
        let served = Served {
            tenant: &self.tenant,
            id: &self.id,
            audited_as: self.shape.audited_as(),
            model: &self.model,
            started: self.started,
        };
        served.audit(&self.state, meter.usage(), error).await
    }

    /// The whole completion as one JSON answer.
    async fn whole(self, mut generation: BudgetedGeneration) -> Answer {
        let meter = generation.meter();
        let mut text = String::new();
        let finished = loop {
            match generation.next().await {
                Some(GenerationEvent::Text(piece)) => text.push_str(&piece),
                Some(GenerationEvent::Finished { reason, usage }) => break Ok((reason, usage)),
                Some(GenerationEvent::Failed(error)) => break Err(inference_error(error)),
                None => {
                    break Err(ApiError::unavailable(
                        "the inference engine stopped this generation",
                    ));
                }
            }
        };
        let (reason, usage) = match finished {
            Ok(done) => done,
            Err(error) => {
                self.audit(&meter, Some(&error)).await;
                return Err(error.into());
            }
        };
        if !self.audit(&meter, None).await {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "not-audited",
                "the completion ran but could not be recorded; its result is withheld",
            )
            .into());
        }
        let reply = Reply::read(text, &self.tools);
        let choice = self
            .shape
            .choice(&reply, &self.call_id(), false, Some(reason));
        let mut body = self.envelope(choice, false);
        body["usage"] = usage_json(usage);
        Ok(Json(body).into_response())
    }

    /// The completion as server-sent chunks, then `[DONE]`. The engine keeps
    /// generating if the client goes away only until the stream is dropped
    /// (dropping the generation cancels it); the tokens computed are audited
    /// either way.
    fn stream(self, mut generation: BudgetedGeneration, include_usage: bool) -> Response {
        let meter = generation.meter();
        let (events, receiver) = tokio::sync::mpsc::unbounded_channel::<Event>();
        tokio::spawn(async move {
            let send = |value: Value| events.send(Event::default().data(value.to_string()));
            if self.shape == Shape::Chat {
                let first = json!({"index": 0, "delta": {"role": "assistant", "content": ""},
                                   "finish_reason": null});
                let _ = send(self.envelope(first, true));
            }
            let mut failure = None;
            // With tools offered, the answer is sent whole once it is
            // known to be text or a call.
            let mut held = (!self.tools.is_empty()).then(String::new);
            let call_id = self.call_id();
            loop {
                match generation.next().await {
                    Some(GenerationEvent::Text(piece)) => {
                        if let Some(held) = &mut held {
                            held.push_str(&piece);
                            continue;
                        }
                        let reply = Reply::Text(piece);
                        let chunk =
                            self.envelope(self.shape.choice(&reply, &call_id, true, None), true);
                        if send(chunk).is_err() {
                            generation.cancel();
                        }
                    }
                    Some(GenerationEvent::Finished { reason, usage }) => {
                        let reply = match held.take() {
                            Some(text) => {
                                let reply = Reply::read(text, &self.tools);
                                let _ = send(self.envelope(
                                    self.shape.choice(&reply, &call_id, true, None),
                                    true,
                                ));
                                reply
                            }
                            None => Reply::Text(String::new()),
                        };
                        let last = match reply {
                            Reply::Call { .. } => reply,
                            Reply::Text(_) => Reply::Text(String::new()),
                        };
                        let _ = send(self.envelope(
                            self.shape.choice(&last, &call_id, true, Some(reason)),
                            true,
                        ));
                        if include_usage {
                            let mut last = self.envelope(Value::Null, true);
                            last["choices"] = json!([]);
                            last["usage"] = usage_json(usage);
                            let _ = send(last);
                        }
                        break;
                    }
                    Some(GenerationEvent::Failed(error)) => {
                        failure = Some(inference_error(error));
                        break;
                    }
                    None => {
                        failure = Some(ApiError::unavailable(
                            "the inference engine stopped this generation",
                        ));
                        break;
                    }
                }
            }
            if let Some(error) = &failure {
                let _ = send(
                    json!({"error": {"message": error.message, "type": "server_error",
                                              "param": null, "code": error.code}}),
                );
            }
            self.audit(&meter, failure.as_ref()).await;
            let _ = events.send(Event::default().data("[DONE]"));
        });
        let chunks = tokio_stream::wrappers::UnboundedReceiverStream::new(receiver);
        let chunks = futures_util::StreamExt::map(chunks, Ok::<_, Infallible>);
        Sse::new(chunks)
            .keep_alive(KeepAlive::default())
            .into_response()
    }
}

/// One call of these endpoints, as the audit chain and the metrics record
/// it.
struct Served<'a> {
    tenant: &'a str,
    id: &'a str,
    audited_as: &'static str,
    model: &'a str,
    started: (SystemTime, Instant),
}

impl Served<'_> {
    /// Records the call in the tenant's audit chain with the tokens it
    /// computed (however it ended) and in `state`'s metrics; waits until
    /// the record is durable, and says whether it is.
    async fn audit(
        &self,
        state: &AppState,
        used: sovra_gpu::Usage,
        error: Option<&ApiError>,
    ) -> bool {
        let duration = self.started.1.elapsed();
        let outcome = error.map_or("ok", |e| e.code);
        state.metrics.invocation(
            self.tenant,
            outcome,
            duration,
            u64::from(used.generated_tokens),
        );
        let receipt = state.runtime.audit().record(AuditRecord {
            invocation_id: self.id.to_owned(),
            tenant: self.tenant.to_owned(),
            agent: self.audited_as.to_owned(),
            agent_digest: String::new(),
            started_at_ms: sovra_runtime::audit::unix_millis(self.started.0),
            duration_us: duration.as_micros() as u64,
            outcome: outcome.to_owned(),
            error: error.map(|e| e.message.clone()),
            denials: Vec::new(),
            usage: vec![ModelUsage {
                model: self.model.to_owned(),
                prompt_tokens: u64::from(used.prompt_tokens),
                generated_tokens: u64::from(used.generated_tokens),
            }],
            parent: None,
        });
        receipt.durable().await.is_ok()
    }
}

/// A new id for a call of these endpoints (`prefix-<ms>-<n>`).
fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}-{:x}-{}",
        crate::db::now_ms(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    )
}

fn usage_json(usage: sovra_gpu::Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.generated_tokens,
        "total_tokens": usage.prompt_tokens + usage.generated_tokens,
    })
}
