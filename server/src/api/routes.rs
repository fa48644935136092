//! The node's endpoints, listed once: each with its method, path, handler,
//! how long it may take and how large a body it takes. The router is built
//! from this list, and the OpenAPI document is checked against it.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};

use super::{ApiError, episodes, http_trigger, invoke, openai, operator, plugins, system, tenant};
use crate::config::NodeConfig;
use crate::state::AppState;

/// The HTTP trigger's root and the paths below it.
const HTTP_TRIGGER_ROOT: &str = "/v1/tenants/{tenant}/installs/{plugin}/http";
const HTTP_TRIGGER: &str = "/v1/tenants/{tenant}/installs/{plugin}/http/{*path}";

/// Time an invocation's response may take beyond its own timeout (the
/// sandbox's outer deadline and the audit write).
const INVOKE_GRACE: Duration = Duration::from_secs(5);

/// How long an endpoint may take to produce its response (a streamed body,
/// once started, runs under the invocation's own deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// The node's `limits.request-timeout`.
    Request,
    /// A submission: the request timeout plus the compile worker's.
    Submission,
    /// An invocation: at least the longest timeout an install may have.
    Invocation,
}

impl Deadline {
    fn limit(self, config: &NodeConfig) -> Duration {
        let request = config.limits.request_timeout;
        match self {
            Deadline::Request => request,
            Deadline::Submission => request + config.compile.timeout,
            Deadline::Invocation => request.max(config.ceilings.timeout + INVOKE_GRACE),
        }
    }
}

/// The largest body an endpoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyLimit {
    /// The node's `limits.max-body`.
    Request,
    /// A plugin submission: `limits.max-plugin`.
    Plugin,
}

/// One endpoint.
pub(super) struct Endpoint {
    /// Read by the tests that check the list against the OpenAPI document
    /// (the handler already carries it).
    #[cfg_attr(not(test), expect(dead_code))]
    pub(super) method: Method,
    pub(super) path: &'static str,
    handler: MethodRouter<Arc<AppState>>,
    deadline: Deadline,
    body: BodyLimit,
}

fn endpoint<H, T>(method: Method, path: &'static str, handler: H) -> Endpoint
where
    H: Handler<T, Arc<AppState>>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("the table's methods are standard");
    Endpoint {
        method,
        path,
        handler: on(filter, handler),
        deadline: Deadline::Request,
        body: BodyLimit::Request,
    }
}

impl Endpoint {
    fn deadline(self, deadline: Deadline) -> Self {
        Endpoint { deadline, ..self }
    }

    fn body(self, body: BodyLimit) -> Self {
        Endpoint { body, ..self }
    }
}

/// Every endpoint the node serves; the OpenAPI document describes exactly
/// these (checked by a test).
pub(super) fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    vec![
        endpoint(M::GET, "/healthz", system::healthz),
        endpoint(M::GET, "/readyz", system::readyz),
        endpoint(M::GET, "/metrics", system::metrics),
        endpoint(M::GET, "/metrics/tenants", system::tenant_metrics),
        endpoint(M::GET, "/v1/openapi.json", system::openapi),
        endpoint(M::GET, "/v1/models", openai::models),
        endpoint(M::POST, "/v1/chat/completions", openai::chat_completions)
            .deadline(Deadline::Invocation),
        endpoint(M::POST, "/v1/completions", openai::completions).deadline(Deadline::Invocation),
        endpoint(M::POST, "/v1/embeddings", openai::embeddings).deadline(Deadline::Invocation),
        endpoint(M::POST, "/v1/tenants", operator::create_tenant),
        endpoint(M::GET, "/v1/tenants", operator::list_tenants),
        endpoint(M::GET, "/v1/tenants/{tenant}", operator::show_tenant),
        endpoint(M::DELETE, "/v1/tenants/{tenant}", operator::erase_tenant),
        endpoint(M::PUT, "/v1/tenants/{tenant}/quotas", operator::set_quotas),
        endpoint(
            M::POST,
            "/v1/tenants/{tenant}/disable",
            operator::disable_tenant,
        ),
        endpoint(
            M::POST,
            "/v1/tenants/{tenant}/enable",
            operator::enable_tenant,
        ),
        endpoint(M::POST, "/v1/tenants/{tenant}/keys", operator::create_key),
        endpoint(M::GET, "/v1/tenants/{tenant}/keys", operator::list_keys),
        endpoint(
            M::DELETE,
            "/v1/tenants/{tenant}/keys/{key}",
            operator::revoke_key,
        ),
        endpoint(M::POST, "/v1/publishers", operator::register_publisher),
        endpoint(M::GET, "/v1/publishers", operator::list_publishers),
        endpoint(M::GET, "/v1/log", operator::publisher_log),
        endpoint(M::POST, "/v1/plugins", plugins::submit)
            .deadline(Deadline::Submission)
            .body(BodyLimit::Plugin),
        endpoint(M::GET, "/v1/plugins", plugins::list),
        endpoint(M::GET, "/v1/plugins/{name}/{version}", plugins::show),
        endpoint(
            M::POST,
            "/v1/plugins/{name}/{version}/approve",
            plugins::approve,
        ),
        endpoint(M::POST, "/v1/plugins/{name}/{version}/yank", plugins::yank),
        endpoint(
            M::GET,
            "/v1/tenants/{tenant}/installs",
            tenant::list_installs,
        ),
        endpoint(
            M::PUT,
            "/v1/tenants/{tenant}/installs/{plugin}",
            tenant::install,
        ),
        endpoint(
            M::GET,
            "/v1/tenants/{tenant}/installs/{plugin}",
            tenant::show_install,
        ),
        endpoint(
            M::DELETE,
            "/v1/tenants/{tenant}/installs/{plugin}",
            tenant::uninstall,
        ),
        endpoint(
            M::POST,
            "/v1/tenants/{tenant}/installs/{plugin}/invoke",
            invoke::invoke,
        )
        .deadline(Deadline::Invocation),
        endpoint(
            M::POST,
            "/v1/tenants/{tenant}/installs/{plugin}/episodes",
            episodes::start,
        ),
        // The HTTP trigger of installed HTTP handlers (Spin components).
        endpoint(M::GET, HTTP_TRIGGER_ROOT, http_trigger::trigger).deadline(Deadline::Invocation),
        endpoint(M::POST, HTTP_TRIGGER_ROOT, http_trigger::trigger).deadline(Deadline::Invocation),
        endpoint(M::GET, HTTP_TRIGGER, http_trigger::trigger).deadline(Deadline::Invocation),
        endpoint(M::POST, HTTP_TRIGGER, http_trigger::trigger).deadline(Deadline::Invocation),
        endpoint(M::PUT, HTTP_TRIGGER, http_trigger::trigger).deadline(Deadline::Invocation),
        endpoint(M::DELETE, HTTP_TRIGGER, http_trigger::trigger).deadline(Deadline::Invocation),
        endpoint(M::GET, "/v1/tenants/{tenant}/episodes", episodes::list),
        endpoint(
            M::GET,
            "/v1/tenants/{tenant}/episodes/{episode}",
            episodes::show,
        ),
        endpoint(
            M::POST,
            "/v1/tenants/{tenant}/episodes/{episode}/stop",
            episodes::stop,
        ),
        endpoint(
            M::GET,
            "/v1/tenants/{tenant}/episodes/{episode}/telemetry",
            episodes::telemetry,
        ),
        endpoint(M::GET, "/v1/tenants/{tenant}/invocations", tenant::history),
        endpoint(M::GET, "/v1/tenants/{tenant}/usage", tenant::usage),
        endpoint(M::GET, "/v1/tenants/{tenant}/export", tenant::export),
    ]
}

/// The endpoints' router, each endpoint under its own deadline and body
/// limit; anything else is a JSON 404.
pub(super) fn router(config: &NodeConfig) -> Router<Arc<AppState>> {
    let mut router = Router::new();
    for endpoint in endpoints() {
        let body = match endpoint.body {
            BodyLimit::Request => config.limits.max_body,
            BodyLimit::Plugin => config.limits.max_plugin,
        };
        let handler = endpoint.handler.layer(DefaultBodyLimit::max(body)).layer(
            middleware::from_fn_with_state(endpoint.deadline.limit(config), within_deadline),
        );
        router = router.route(endpoint.path, handler);
    }
    router
        .fallback(|| async { ApiError::not_found("no-route", "no such endpoint").into_response() })
}

/// Ends a request that has not produced its response within `limit`.
async fn within_deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            ApiError::timeout(format!("the request took longer than {limit:?}")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use axum::body::Body;
    use sovra_gpu::ModelRegistry;
    use tower_service::Service;

    use super::*;
    use crate::config::OperatorTokenSource;

    /// Asks the node's router for `method path` and returns the status and
    /// the error code, if the answer is an error.
    async fn ask(router: &mut Router, method: Method, path: &str) -> (u16, Option<String>) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let response = router.call(request).await.unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let code = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
        (status, code)
    }

    #[tokio::test]
    async fn the_router_serves_every_listed_endpoint_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("operator-token");
        std::fs::write(&token, "t".repeat(48)).unwrap();
        let mut config = NodeConfig::new(dir.path().join("data"));
        config.operator_token = OperatorTokenSource::File(token);
        let models = Arc::new(ModelRegistry::empty());
        let state = AppState::open(config, models, PathBuf::from("sovra")).unwrap();
        let mut router = super::super::router(Arc::new(state));
        for endpoint in endpoints() {
            // Every parameter as a plain name: the handler runs (and
            // refuses the anonymous caller) instead of the fallback.
            let mut path = endpoint.path.to_owned();
            while let (Some(open), Some(close)) = (path.find('{'), path.find('}')) {
                path.replace_range(open..=close, "x");
            }
            let (status, code) = ask(&mut router, endpoint.method.clone(), &path).await;
            assert_ne!(status, 405, "{} {path}", endpoint.method);
            assert_ne!(
                code.as_deref(),
                Some("no-route"),
                "{} {path} fell through to the fallback",
                endpoint.method
            );
        }
        let (status, code) = ask(&mut router, Method::GET, "/v1/nowhere").await;
        assert_eq!((status, code.as_deref()), (404, Some("no-route")));
    }
}
