//! Liveness, readiness, metrics and the OpenAPI document.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, require_operator};
use crate::db::PluginState;
use crate::metrics::{render_models, render_tenant_models};
use crate::state::AppState;

/// The OpenAPI 3.1 description of every endpoint in [`super::routes`].
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// The process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The node can serve: its database answers and it is not draining.
pub async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    if state.draining.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        );
    }
    match state.db.ping() {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Err(error) => {
            tracing::error!(%error, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "database unavailable"})),
            )
        }
    }
}

/// Prometheus text exposition of node-wide figures (no tenant named).
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    // The counts come from the node database: off the async workers.
    exposition(
        tokio::task::spawn_blocking(move || {
            let tenants = state.db.tenants().map(|t| t.len()).unwrap_or(0) as f64;
            let plugins = |s| state.db.plugins(Some(s)).map(|p| p.len()).unwrap_or(0) as f64;
            let gauges = [
                ("sovra_tenants", "Tenants on this node.", tenants),
                (
                    "sovra_plugins_pending",
                    "Plugin versions waiting for review.",
                    plugins(PluginState::Pending),
                ),
                (
                    "sovra_plugins_approved",
                    "Approved plugin versions.",
                    plugins(PluginState::Approved),
                ),
                (
                    "sovra_connections_open",
                    "HTTP connections open now.",
                    state.connections.open() as f64,
                ),
                (
                    "sovra_connections_max",
                    "HTTP connections the node keeps open at most.",
                    state.budget.connections as f64,
                ),
                (
                    "sovra_refusals_not_audited",
                    "Refusals (401, 403, 429) beyond the audit rate: counted, not recorded.",
                    state
                        .refusals
                        .suppressed
                        .load(std::sync::atomic::Ordering::Relaxed) as f64,
                ),
            ];
            let mut text = state.metrics.render_node(&gauges);
            text.push_str(&render_models(&state.models.statuses()));
            text.push_str(&state.episodes.metrics.render(state.episodes.live_count()));
            text
        })
        .await,
    )
}

/// Prometheus text exposition of per-tenant figures: operator only.
pub async fn tenant_metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(error) = require_operator(&state, &headers) {
        return error.into_response();
    }
    let mut text = state.metrics.render_tenants();
    text.push_str(&render_tenant_models(&state.models.statuses()));
    let now = crate::db::now_ms().max(0) as u64;
    text.push_str(&state.quotas.render_metrics(state.runtime.audit(), now));
    exposition(Ok::<_, ()>(text))
}

fn exposition<E>(text: Result<String, E>) -> Response {
    let content_type = [(header::CONTENT_TYPE, "text/plain; version=0.0.4")];
    match text {
        Ok(text) => (StatusCode::OK, content_type, text).into_response(),
        // An empty 200 would read as a scrape with no series.
        Err(_) => ApiError::internal("cannot gather the metrics").into_response(),
    }
}

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_describes_exactly_the_routes() {
        let document: Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        let mut described = Vec::new();
        for (path, methods) in document["paths"].as_object().unwrap() {
            for method in methods.as_object().unwrap().keys() {
                if method != "parameters" {
                    described.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        let mut served: Vec<(String, String)> = super::super::routes::endpoints()
            .into_iter()
            // The router's catch-all `{*name}` is OpenAPI's `{name}`.
            .map(|e| (e.method.to_string(), e.path.replace("{*", "{")))
            .collect();
        described.sort();
        served.sort();
        assert_eq!(described, served, "the document and the router disagree");
    }
}
