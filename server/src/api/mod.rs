//! The HTTP API (JSON, versioned under `/v1`): routes, credentials, errors.
//!
//! - operator (the node's admin token): tenants and their keys, publishers,
//!   plugin review (approve, yank), the publisher log;
//! - publishers: `POST /v1/plugins` with a signed component (the signature
//!   is the credential);
//! - tenants (their own API keys): installs, invocations (JSON or
//!   server-sent events), invocation history, models.
//!
//! Bodies are JSON objects of the documented fields ([`body`]); handlers
//! that take none still read the body ([`body::NoFields`]): answering before
//! the body is read makes hyper close the connection, which breaks a
//! client's keep-alive.
//!
//! Every error is `{"error": {"code": "...", "message": "..."}}` with a
//! status that says whose fault it is: 401 no or unknown credential, 403 a
//! credential that may not do this, 4xx a request the node refuses (the code
//! names the check), 5xx the node's own failure.

mod body;
mod errors;
mod operator;
mod plugins;
mod system;
mod tenant;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

pub use errors::ApiError;

use crate::state::{AppState, Caller};

/// Every route the node serves, as `(method, path)`; the OpenAPI document
/// describes exactly these (checked by a test).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/metrics/tenants"),
    ("get", "/v1/openapi.json"),
    ("get", "/v1/models"),
    ("post", "/v1/tenants"),
    ("get", "/v1/tenants"),
    ("get", "/v1/tenants/{tenant}"),
    ("post", "/v1/tenants/{tenant}/disable"),
    ("post", "/v1/tenants/{tenant}/enable"),
    ("post", "/v1/tenants/{tenant}/keys"),
    ("get", "/v1/tenants/{tenant}/keys"),
    ("delete", "/v1/tenants/{tenant}/keys/{key}"),
    ("post", "/v1/publishers"),
    ("get", "/v1/publishers"),
    ("get", "/v1/log"),
    ("post", "/v1/plugins"),
    ("get", "/v1/plugins"),
    ("get", "/v1/plugins/{name}/{version}"),
    ("post", "/v1/plugins/{name}/{version}/approve"),
    ("post", "/v1/plugins/{name}/{version}/yank"),
    ("get", "/v1/tenants/{tenant}/installs"),
    ("put", "/v1/tenants/{tenant}/installs/{plugin}"),
    ("get", "/v1/tenants/{tenant}/installs/{plugin}"),
    ("delete", "/v1/tenants/{tenant}/installs/{plugin}"),
    ("post", "/v1/tenants/{tenant}/installs/{plugin}/invoke"),
    ("get", "/v1/tenants/{tenant}/invocations"),
    ("get", "/v1/tenants/{tenant}/usage"),
];

/// The node's router.
pub fn router(state: Arc<AppState>) -> Router {
    let max_plugin = state.config.limits.max_plugin;
    let max_body = state.config.limits.max_body;
    Router::new()
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .route("/metrics/tenants", get(system::tenant_metrics))
        .route("/v1/openapi.json", get(system::openapi))
        .route("/v1/models", get(tenant::models))
        .route(
            "/v1/tenants",
            post(operator::create_tenant).get(operator::list_tenants),
        )
        .route("/v1/tenants/{tenant}", get(operator::show_tenant))
        .route(
            "/v1/tenants/{tenant}/disable",
            post(operator::disable_tenant),
        )
        .route("/v1/tenants/{tenant}/enable", post(operator::enable_tenant))
        .route(
            "/v1/tenants/{tenant}/keys",
            post(operator::create_key).get(operator::list_keys),
        )
        .route(
            "/v1/tenants/{tenant}/keys/{key}",
            axum::routing::delete(operator::revoke_key),
        )
        .route(
            "/v1/publishers",
            post(operator::register_publisher).get(operator::list_publishers),
        )
        .route("/v1/log", get(operator::publisher_log))
        .route(
            "/v1/plugins",
            post(plugins::submit)
                .layer(DefaultBodyLimit::max(max_plugin))
                .get(plugins::list),
        )
        .route("/v1/plugins/{name}/{version}", get(plugins::show))
        .route(
            "/v1/plugins/{name}/{version}/approve",
            post(plugins::approve),
        )
        .route("/v1/plugins/{name}/{version}/yank", post(plugins::yank))
        .route("/v1/tenants/{tenant}/installs", get(tenant::list_installs))
        .route(
            "/v1/tenants/{tenant}/installs/{plugin}",
            put(tenant::install)
                .get(tenant::show_install)
                .delete(tenant::uninstall),
        )
        .route(
            "/v1/tenants/{tenant}/installs/{plugin}/invoke",
            post(tenant::invoke),
        )
        .route("/v1/tenants/{tenant}/invocations", get(tenant::history))
        .route("/v1/tenants/{tenant}/usage", get(tenant::usage))
        .fallback(|| async { ApiError::not_found("no-route", "no such endpoint").into_response() })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            request_deadline,
        ))
        .layer(middleware::from_fn(errors::json_errors))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            audit_refusals,
        ))
        .with_state(state)
}

/// Ends a request that has not produced its response in time (a streamed
/// body, once started, runs under the invocation's own deadline).
/// Submissions get the compile worker's time on top, and invocations at
/// least the longest timeout an install may have, so that neither is cut
/// short by the generic limit.
async fn request_deadline(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let limits = &state.config;
    let generic = limits.limits.request_timeout;
    let path = request.uri().path();
    let limit = if path == "/v1/plugins" && request.method() == axum::http::Method::POST {
        generic + limits.compile.timeout
    } else if path.ends_with("/invoke") {
        generic.max(limits.ceilings.timeout + INVOKE_GRACE)
    } else {
        generic
    };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            ApiError::timeout(format!("the request took longer than {limit:?}")).into_response()
        }
    }
}

/// Records refusals (401, 403, 429) in the audit log.
async fn audit_refusals(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let started = (crate::db::now_ms(), std::time::Instant::now());
    let method = request.method().clone();
    let uri = request.uri().clone();
    let response = next.run(request).await;
    state.refusals.record(
        state.runtime.audit(),
        (&method, uri.path()),
        response.status(),
        response
            .extensions()
            .get::<crate::refusals::ErrorCode>()
            .copied(),
        started,
    );
    response
}

/// Time an invocation's response may take beyond its own timeout (the
/// sandbox's outer deadline and the audit write).
const INVOKE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The caller, resolved from the request's credential.
fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    Ok(state.caller(bearer(headers))?)
}

/// Only the operator may go on.
fn require_operator(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match caller(state, headers)? {
        Caller::Operator => Ok(()),
        Caller::Anonymous => Err(ApiError::unauthorized()),
        _ => Err(ApiError::forbidden(
            "operator-only",
            "this endpoint needs the operator token",
        )),
    }
}

/// Whether the operator may act on a tenant route too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OperatorToo {
    Yes,
    No,
}

/// Only `tenant`'s own keys (and, where allowed, the operator) may go on.
fn require_tenant(
    state: &AppState,
    headers: &HeaderMap,
    tenant: &str,
    operator: OperatorToo,
) -> Result<Caller, ApiError> {
    let caller = caller(state, headers)?;
    match &caller {
        Caller::Tenant(own) if own == tenant => Ok(caller),
        // A tenant's own key proves it exists; the operator may name any.
        Caller::Operator if operator == OperatorToo::Yes => match state.db.tenant(tenant)? {
            Some(_) => Ok(caller),
            None => Err(ApiError::not_found(
                "no-such-tenant",
                format!("no tenant `{tenant}`"),
            )),
        },
        Caller::Operator => Err(ApiError::forbidden(
            "tenant-only",
            "only the tenant's own API key may do this",
        )),
        Caller::Tenant(_) => Err(ApiError::forbidden(
            "wrong-tenant",
            format!("this API key does not belong to tenant `{tenant}`"),
        )),
        Caller::DisabledTenant(own) => Err(ApiError::forbidden(
            "tenant-disabled",
            format!("tenant `{own}` is disabled"),
        )),
        Caller::Anonymous => Err(ApiError::unauthorized()),
    }
}

/// Refuses new work while the node drains for shutdown.
fn require_serving(state: &AppState) -> Result<(), ApiError> {
    if state.draining.load(Ordering::Acquire) {
        return Err(ApiError::unavailable("the node is shutting down"));
    }
    Ok(())
}
