//! Invoking a guest that exports `wasi:http/incoming-handler` (a Spin HTTP
//! component, say): the invocation becomes an HTTP request to the handler,
//! and its response becomes the invocation's response.
//!
//! Request: the input is the body; metadata `http-method` (default `POST`,
//! or `GET` for an empty input), `http-path` (default `/`, with any query)
//! and `http-header:NAME` set the rest. Response: the body (UTF-8) is the
//! output; metadata `http-status` and `http-header:NAME` carry the rest.
//! Nothing reaches the network: `wasi:http/outgoing-handler` is never
//! linked, so a guest importing it is refused at load.

use std::pin::pin;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use wasmtime::Store;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::bindings::GuestError;
use crate::error::InvokeError;
use crate::invocation::AgentResponse;
use crate::limits::{HTTP_RESPONSE_GRACE, MAX_HTTP_RESPONSE_BYTES};
use crate::sandbox::Sandbox;

/// Metadata naming the request's method, path and headers, and the
/// response's status and headers.
pub const METHOD: &str = "http-method";
pub const PATH: &str = "http-path";
pub const STATUS: &str = "http-status";
pub const HEADER_PREFIX: &str = "http-header:";

/// The authority requests carry (the guest's own name for itself).
const AUTHORITY: &str = "sovra.localhost";

/// The HTTP request an invocation of `input` with `metadata` makes.
pub(crate) fn request(
    input: String,
    metadata: &[(String, String)],
) -> Result<http::Request<Full<Bytes>>, InvokeError> {
    let invalid = |what: String| InvokeError::InvalidInvocation(what);
    let get = |key: &str| {
        metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let method = get(METHOD).unwrap_or(if input.is_empty() { "GET" } else { "POST" });
    let path = get(PATH).unwrap_or("/");
    if !path.starts_with('/') {
        return Err(invalid(format!("`{PATH}` must start with '/': `{path}`")));
    }
    let mut builder = http::Request::builder()
        .method(method)
        .uri(format!("http://{AUTHORITY}{path}"));
    for (key, value) in metadata {
        if let Some(name) = key.strip_prefix(HEADER_PREFIX) {
            builder = builder.header(name, value);
        }
    }
    builder
        .body(Full::new(Bytes::from(input)))
        .map_err(|e| invalid(format!("not a valid HTTP request: {e}")))
}

/// Calls the handler of `pre` with `request` in `store`, reading its
/// response while it runs (the body flows through a bounded pipe).
pub(crate) async fn call(
    pre: &ProxyPre<Sandbox>,
    store: &mut Store<Sandbox>,
    request: http::Request<Full<Bytes>>,
) -> wasmtime::Result<Result<AgentResponse, GuestError>> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let (request, outparam) = {
        let mut http = store.data_mut().http();
        (
            http.new_incoming_request(Scheme::Http, request)?,
            http.new_response_outparam(sender)?,
        )
    };
    let proxy = pre.instantiate_async(&mut *store).await?;
    let mut handled = pin!(proxy.wasi_http_incoming_handler().call_handle(
        &mut *store,
        request,
        outparam
    ));
    let mut answered = pin!(async move {
        match receiver.await {
            Ok(Ok(response)) => read(response).await,
            Ok(Err(code)) => Err(GuestError::Internal(format!(
                "the handler answered with an error: {code:?}"
            ))),
            Err(_) => Err(GuestError::Internal("the handler set no response".into())),
        }
    });
    let mut returned = None;
    loop {
        tokio::select! {
            result = &mut handled, if returned.is_none() => returned = Some(result),
            answer = &mut answered => {
                match returned {
                    // A response that could not be read (too large, not
                    // text) ends the call: the guest may be blocked writing
                    // a body no one reads.
                    None if answer.is_err() => {}
                    None => handled.await?,
                    Some(result) => result?,
                }
                return Ok(answer);
            }
            () = tokio::time::sleep(HTTP_RESPONSE_GRACE), if returned.is_some() => {
                returned.take().expect("checked")?;
                return Ok(Err(GuestError::Internal(
                    "the handler returned without finishing its response".into(),
                )));
            }
        }
    }
}

/// The handler's response as the invocation's: the body (bounded, UTF-8)
/// and the status and headers as metadata.
async fn read(response: http::Response<HyperOutgoingBody>) -> Result<AgentResponse, GuestError> {
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_HTTP_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| {
            GuestError::LimitExceeded(format!(
                "the response body could not be read (at most {MAX_HTTP_RESPONSE_BYTES} bytes): {e}"
            ))
        })?
        .to_bytes();
    let output = String::from_utf8(body.to_vec())
        .map_err(|_| GuestError::Internal("the response body is not UTF-8".into()))?;
    let mut metadata = vec![(STATUS.to_owned(), parts.status.as_u16().to_string())];
    for (name, value) in &parts.headers {
        if let Ok(value) = value.to_str() {
            metadata.push((format!("{HEADER_PREFIX}{name}"), value.to_owned()));
        }
    }
    Ok(AgentResponse { output, metadata })
}
