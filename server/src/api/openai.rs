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
//! tools and response formats other than text) is refused by name, never
//! silently ignored.

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
use serde::Deserialize;
use serde_json::{Value, json};
use sovra_gpu::{
    ChatMessage, FinishReason, GenerateRequest, GenerationEvent, InferenceError, ModelKind,
    ModelService, Prompt, RequestContext, Role, Sampling,
};
use sovra_runtime::ModelUsage;
use sovra_runtime::audit::AuditRecord;
use tokio::sync::OwnedSemaphorePermit;

use super::invoke::admit;
use super::{ApiError, Caller, caller};
use crate::state::AppState;

/// Tokens generated when a request names no `max_tokens`.
const DEFAULT_MAX_TOKENS: u32 = 256;

/// Texts one embeddings request may carry.
/// Stops: one request holding the embedding engine for minutes.
const MAX_EMBEDDING_INPUTS: usize = 256;

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

/// One string or several, as OpenAI's `stop` and `input` take them.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Message {
    role: String,
    content: String,
    /// Accepted and not used (a participant's name).
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
}

/// The sampling fields chat and text completions share.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompletionRequest {
    model: String,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stop: Option<OneOrMany>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    /// Only 1 is served.
    #[serde(default)]
    n: Option<u32>,
    /// Accepted (an end-user id for the caller's own records) and not used.
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

/// Which endpoint a completion came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Chat,
    Text,
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

    /// A choice holding `text` (a whole answer, or one streamed piece).
    fn choice(self, text: &str, chunk: bool, finish: Option<FinishReason>) -> Value {
        let finish_reason = finish.map(|f| match f {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "stop",
        });
        match (self, chunk) {
            (Shape::Chat, false) => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
            }),
            (Shape::Chat, true) => json!({
                "index": 0,
                "delta": if text.is_empty() { json!({}) } else { json!({"content": text}) },
                "finish_reason": finish_reason,
            }),
            (Shape::Text, _) => json!({
                "index": 0,
                "text": text,
                "logprobs": null,
                "finish_reason": finish_reason,
            }),
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

/// The engine request for `body`, refusing what sovra does not serve.
fn generate_request(body: CompletionRequest, shape: Shape) -> Result<GenerateRequest, ApiError> {
    if body.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request(
            "unsupported",
            "`n` other than 1 is not supported",
        ));
    }
    let prompt = match (shape, body.messages, body.prompt) {
        (Shape::Chat, Some(messages), None) => {
            let messages = messages
                .into_iter()
                .map(|m| {
                    let role = match m.role.as_str() {
                        "system" | "developer" => Role::System,
                        "user" => Role::User,
                        "assistant" => Role::Assistant,
                        other => {
                            return Err(ApiError::bad_request(
                                "invalid-input",
                                format!("message role `{other}` is not supported"),
                            ));
                        }
                    };
                    Ok(ChatMessage {
                        role,
                        content: m.content,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Prompt::Chat(messages)
        }
        (Shape::Text, None, Some(prompt)) => Prompt::Text(prompt),
        (Shape::Chat, _, _) => {
            return Err(ApiError::bad_request(
                "invalid-input",
                "a chat completion takes `messages` (and no `prompt`)",
            ));
        }
        (Shape::Text, _, _) => {
            return Err(ApiError::bad_request(
                "invalid-input",
                "a completion takes a `prompt` string (and no `messages`)",
            ));
        }
    };
    let defaults = Sampling::default();
    Ok(GenerateRequest {
        model: body.model,
        prompt,
        sampling: Sampling {
            max_tokens: body
                .max_completion_tokens
                .or(body.max_tokens)
                .unwrap_or(DEFAULT_MAX_TOKENS),
            // OpenAI's default temperature is 1.
            temperature: body.temperature.unwrap_or(1.0),
            top_p: body.top_p.unwrap_or(defaults.top_p),
            seed: body.seed,
            stop: body.stop.map(OneOrMany::into_vec).unwrap_or_default(),
            ..defaults
        },
    })
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
    let request = generate_request(body, shape)?;
    let model = request.model.clone();
    let service = state
        .models
        .lookup(&tenant, &model)
        .map_err(inference_error)?;
    let context = RequestContext {
        tenant: tenant.clone(),
        deadline: Some(Instant::now() + state.config.ceilings.timeout),
    };
    let started = (SystemTime::now(), Instant::now());
    let generation = service
        .start_generation(&context, request)
        .map_err(inference_error)?;
    let call = Call {
        state,
        tenant,
        model,
        shape,
        id: format!(
            "{}-{:x}-{}",
            match shape {
                Shape::Chat => "chatcmpl",
                Shape::Text => "cmpl",
            },
            crate::db::now_ms(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        ),
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
    id: String,
    created: u64,
    started: (SystemTime, Instant),
    /// The tenant's admission, held until the completion is audited.
    _permit: OwnedSemaphorePermit,
}

impl Call {
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
        let used = meter.usage();
        let duration = self.started.1.elapsed();
        let outcome = error.map_or("ok", |e| e.code);
        self.state.metrics.invocation(
            &self.tenant,
            outcome,
            duration,
            u64::from(used.generated_tokens),
        );
        let receipt = self.state.runtime.audit().record(AuditRecord {
            invocation_id: self.id.clone(),
            tenant: self.tenant.clone(),
            agent: self.shape.audited_as().to_owned(),
            agent_digest: String::new(),
            started_at_ms: sovra_runtime::audit::unix_millis(self.started.0),
            duration_us: duration.as_micros() as u64,
            outcome: outcome.to_owned(),
            error: error.map(|e| e.message.clone()),
            denials: Vec::new(),
            usage: vec![ModelUsage {
                model: self.model.clone(),
                prompt_tokens: u64::from(used.prompt_tokens),
                generated_tokens: u64::from(used.generated_tokens),
            }],
            parent: None,
        });
        receipt.durable().await.is_ok()
    }

    /// The whole completion as one JSON answer.
    async fn whole(self, mut generation: sovra_gpu::Generation) -> Answer {
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
        let mut body = self.envelope(self.shape.choice(&text, false, Some(reason)), false);
        body["usage"] = usage_json(usage);
        Ok(Json(body).into_response())
    }

    /// The completion as server-sent chunks, then `[DONE]`. The engine keeps
    /// generating if the client goes away only until the stream is dropped
    /// (dropping the generation cancels it); the tokens computed are audited
    /// either way.
    fn stream(self, mut generation: sovra_gpu::Generation, include_usage: bool) -> Response {
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
            loop {
                match generation.next().await {
                    Some(GenerationEvent::Text(piece)) => {
                        let chunk = self.envelope(self.shape.choice(&piece, true, None), true);
                        if send(chunk).is_err() {
                            generation.cancel();
                        }
                    }
                    Some(GenerationEvent::Finished { reason, usage }) => {
                        let _ =
                            send(self.envelope(self.shape.choice("", true, Some(reason)), true));
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

fn usage_json(usage: sovra_gpu::Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.generated_tokens,
        "total_tokens": usage.prompt_tokens + usage.generated_tokens,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingRequest {
    model: String,
    input: OneOrMany,
    /// `float` (the default) or `base64` (little-endian f32s, as the
    /// official clients ask for by default).
    #[serde(default)]
    encoding_format: Option<String>,
    /// Accepted and not used.
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Answer {
    let tenant = tenant(&state, &headers)?;
    let body: EmbeddingRequest = body(&bytes)?;
    let base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "unsupported",
                format!("`encoding_format: {other}` is not supported (float or base64)"),
            )
            .into());
        }
    };
    let texts = body.input.into_vec();
    if texts.len() > MAX_EMBEDDING_INPUTS {
        return Err(ApiError::bad_request(
            "limit-exceeded",
            format!(
                "{} inputs in one request; the limit is {MAX_EMBEDDING_INPUTS}",
                texts.len()
            ),
        )
        .into());
    }
    let _permit = admit(&state, &tenant)?;
    let service: Arc<dyn ModelService> = state
        .models
        .lookup(&tenant, &body.model)
        .map_err(inference_error)?;
    let context = RequestContext {
        tenant: tenant.clone(),
        deadline: Some(Instant::now() + state.config.ceilings.timeout),
    };
    let vectors = tokio::task::spawn_blocking(move || service.embed(&context, texts))
        .await
        .map_err(ApiError::internal)?
        .map_err(inference_error)?;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, embedding)| {
            let embedding = if base64 {
                use base64::Engine;
                let bytes: Vec<u8> = embedding.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(embedding)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }))
    .into_response())
}
