//! `POST /v1/embeddings`: vectors for one text or several, as floats or
//! as base64 of little-endian f32s, audited (`openai:embeddings`) with the
//! tokens embedded.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use sovra_gpu::{ModelService, RequestContext, Usage};

use super::request::OneOrMany;
use super::{Answer, Served, body, inference_error, new_id, tenant};
use crate::api::ApiError;
use crate::api::invoke::{admit, token_quota_exceeded};
use crate::state::AppState;

/// Texts one embeddings request may carry.
/// Stops: one request holding the embedding engine for minutes.
const MAX_EMBEDDING_INPUTS: usize = 256;

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
    let budget = state.token_budget(&tenant);
    if let Some(budget) = &budget {
        budget
            .check(&body.model)
            .map_err(|why| token_quota_exceeded(&state, &tenant, why))?;
    }
    let service: Arc<dyn ModelService> = state
        .models
        .lookup(&tenant, &body.model)
        .map_err(inference_error)?;
    let context = RequestContext {
        tenant: tenant.clone(),
        deadline: Some(Instant::now() + state.config.ceilings.timeout),
    };
    let served = Served {
        tenant: &tenant,
        id: &new_id("embd"),
        audited_as: "openai:embeddings",
        model: &body.model,
        started: (SystemTime::now(), Instant::now()),
    };
    let embedded = tokio::task::spawn_blocking(move || service.embed(&context, texts))
        .await
        .map_err(ApiError::internal)?
        .map_err(inference_error);
    let embedded = match embedded {
        Ok(embedded) => embedded,
        Err(error) => {
            served.audit(&state, Usage::default(), Some(&error)).await;
            return Err(error.into());
        }
    };
    let used = Usage {
        prompt_tokens: embedded.tokens,
        generated_tokens: 0,
    };
    if let Some(budget) = &budget {
        // Counted whatever the quota says: the work is done.
        let _ = budget.charge(&body.model, u64::from(embedded.tokens));
    }
    if !served.audit(&state, used, None).await {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "not-audited",
            "the embeddings were computed but could not be recorded; they are withheld",
        )
        .into());
    }
    let data: Vec<Value> = embedded
        .vectors
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
        "usage": {"prompt_tokens": embedded.tokens, "total_tokens": embedded.tokens},
    }))
    .into_response())
}
