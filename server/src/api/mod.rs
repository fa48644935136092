//! The HTTP API (JSON, versioned under `/v1`): routes, credentials, errors.
//!
//! - operator (the node's admin token): tenants and their keys, publishers,
//!   plugin review (approve, yank), the publisher log;
//! - publishers: `POST /v1/plugins` with a signed component (the signature
//!   is the credential);
//! - tenants (their own API keys): installs, invocations (JSON or
//!   server-sent events), invocation history, usage, and an
//!   OpenAI-compatible API over the models they may use ([`openai`]),
//!   episodes of installed controllers ([`episodes`]), and the HTTP trigger
//!   of installed HTTP handlers such as Spin components ([`http_trigger`]).
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
mod episodes;
mod errors;
mod http_trigger;
mod invoke;
mod openai;
mod operator;
mod plugins;
mod routes;
mod system;
mod tenant;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::Response;

pub use errors::ApiError;
use errors::GuestResponse;

use crate::state::{AppState, Caller};

/// The node's router: the endpoints of [`routes`], with every error answered
/// as JSON and every refusal audited.
pub fn router(state: Arc<AppState>) -> Router {
    routes::router(&state.config)
        .layer(middleware::from_fn(errors::json_errors))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            audit_refusals,
        ))
        .with_state(state)
}

/// Records the node's refusals (401, 403, 429) in the audit log.
async fn audit_refusals(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let started = (crate::db::now_ms(), std::time::Instant::now());
    let method = request.method().clone();
    let uri = request.uri().clone();
    let response = next.run(request).await;
    // A guest's own answer (an HTTP handler's 403, say) is no refusal of
    // the node's: its invocation is audited already.
    if response.extensions().get::<GuestResponse>().is_some() {
        return response;
    }
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
