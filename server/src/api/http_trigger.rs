//! `/v1/tenants/{tenant}/installs/{plugin}/http[/{*path}]`: the HTTP trigger
//! of an install whose plugin is an HTTP handler (a component exporting
//! `wasi:http/incoming-handler`, such as one written for Spin).
//!
//! The tenant's request goes to the handler as its own: the method, the path
//! below `/http` (with its query) and the headers, less the tenant's
//! credentials and the hop-by-hop ones, and the body (UTF-8 text). The
//! handler's status, headers and body come back as they are. Admission,
//! grants, limits, quotas and the audit are those of any invocation; the
//! handler reaches no network (see `sovra_runtime::http_trigger`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sovra_runtime::http_trigger::{HEADER_PREFIX, METHOD, PATH, STATUS};
use sovra_runtime::{Invocation, TenantId, World};

use super::invoke::{Outcome, admit, node_tools, spawn_invocation};
use super::tenant::ready_install;
use super::{ApiError, GuestResponse, OperatorToo, require_serving, require_tenant};
use crate::state::AppState;

/// Request headers the handler never sees: the tenant's credentials and
/// what belongs to the connection, not the request.
const WITHHELD_REQUEST_HEADERS: &[HeaderName] = &[
    header::AUTHORIZATION,
    header::COOKIE,
    header::PROXY_AUTHORIZATION,
    header::HOST,
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::UPGRADE,
];

/// Response headers the node sets itself.
const WITHHELD_RESPONSE_HEADERS: &[HeaderName] = &[
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// A request to the handler: at its root (`/http`, no `path` parameter) or
/// below it (`/http/{*path}`).
pub async fn trigger(
    State(state): State<Arc<AppState>>,
    method: Method,
    headers: HeaderMap,
    Path(mut params): Path<HashMap<String, String>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut param = |name: &str| params.remove(name).unwrap_or_default();
    let (tenant, plugin, path) = (param("tenant"), param("plugin"), param("path"));
    require_serving(&state)?;
    require_tenant(&state, &headers, &tenant, OperatorToo::No)?;
    let input = String::from_utf8(body.to_vec()).map_err(|_| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-utf8",
            "the HTTP trigger takes text bodies (UTF-8)",
        )
    })?;
    let permit = admit(&state, &tenant)?;
    let ready = ready_install(&state, &tenant, &plugin).await?;
    if ready.agent.manifest().world != World::Http {
        return Err(ApiError::bad_request(
            "not-http",
            format!(
                "`{plugin}` is not an HTTP handler (its world is `{}`); invoke it at \
                 /v1/tenants/{tenant}/installs/{plugin}/invoke",
                ready.agent.manifest().world.as_str()
            ),
        ));
    }
    let tenant_id = TenantId::new(&tenant).map_err(ApiError::internal)?;
    let mut invocation = Invocation::new(tenant_id, input);
    invocation.grants = ready.grants.clone();
    invocation.limits = ready.limits;
    invocation.tools = Some(node_tools(&state));
    invocation.token_budget = state.token_budget(&tenant);
    invocation.metadata = request_metadata(&method, &path, query.as_deref(), &headers);
    let outcome = spawn_invocation(state, tenant, ready, invocation, permit)
        .await
        .map_err(ApiError::internal)?;
    match outcome {
        Outcome::Answered(body) => Ok(handler_response(&body)),
        Outcome::Failed(error) => Err(error),
    }
}

/// The request's method, path and forwarded headers as invocation metadata.
fn request_metadata(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Vec<(String, String)> {
    let mut target = format!("/{path}");
    if let Some(query) = query {
        target.push('?');
        target.push_str(query);
    }
    let mut metadata = vec![
        (METHOD.to_owned(), method.as_str().to_owned()),
        (PATH.to_owned(), target),
    ];
    for (name, value) in headers {
        if WITHHELD_REQUEST_HEADERS.contains(name) {
            continue;
        }
        if let Ok(value) = value.to_str() {
            metadata.push((format!("{HEADER_PREFIX}{name}"), value.to_owned()));
        }
    }
    metadata
}

/// The handler's response, from the invocation's answer.
fn handler_response(answer: &Value) -> Response {
    let metadata = answer["metadata"].as_object();
    let status = metadata
        .and_then(|m| m.get(STATUS))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut headers = HeaderMap::new();
    for (key, value) in metadata.into_iter().flatten() {
        let Some(name) = key.strip_prefix(HEADER_PREFIX) else {
            continue;
        };
        let (Ok(name), Some(Ok(value))) = (
            HeaderName::try_from(name),
            value.as_str().map(HeaderValue::from_str),
        ) else {
            continue;
        };
        if !WITHHELD_RESPONSE_HEADERS.contains(&name) {
            headers.append(name, value);
        }
    }
    let body = answer["output"].as_str().unwrap_or_default().to_owned();
    let mut response = (status, headers, body).into_response();
    response.extensions_mut().insert(GuestResponse);
    response
}
