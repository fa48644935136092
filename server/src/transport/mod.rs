//! How the node meets the network: its own accept loop over hyper's HTTP/1.1
//! connections, so that no client can hold what others need.
//!
//! - Connections are capped below the descriptor budget ([`descriptors`]);
//!   at the cap the longest-idle connection makes room, and when all are
//!   busy a new one gets a fast 503 ([`connections`]).
//! - A client must send a request's headers within the header timeout, which
//!   also closes a keep-alive connection idle for that long; heads are
//!   bounded in size.
//! - hyper's own error answers are JSON like every other ([`framing`]).
//! - On shutdown the port stays open while invocations drain: `/readyz`
//!   answers 503 and new invocations are refused, then the listener closes,
//!   connections finish their request, and the node exits.

pub mod connections;
pub mod descriptors;
pub mod framing;

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower_service::Service;

use crate::state::AppState;
use connections::{BusyUntilSent, ConnectionSlot, Connections};
use framing::JsonFramingErrors;

/// Largest request head (request line and headers) in bytes.
/// Stops: a client making the node buffer megabytes of headers per
/// connection.
pub const MAX_HEAD_BYTES: usize = 64 << 10;

/// Most headers in one request. Stops: header-count parsing bombs.
pub const MAX_HEADERS: usize = 100;

/// Pause after the process ran out of descriptors in `accept`, before
/// trying again (an idle connection was closed to make room).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// How long connections get to finish their last request once the node
/// stops, beyond the longest request it allows.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long stopped episodes may take to end and record their summaries.
const EPISODE_STOP_GRACE: Duration = Duration::from_secs(5);

/// The answer to a connection over the cap while every one is busy.
static OVER_CAPACITY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = r#"{"error":{"code":"too-many-connections","message":"the node is at its connection limit; retry"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// Serves `state` on `listener` until `shutdown` resolves, then drains:
/// readiness turns 503 while in-flight invocations run to their end (the
/// port stays open meanwhile), then the listener closes and every connection
/// finishes its request before this returns.
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = crate::api::router(Arc::clone(&state));
    let connections = Arc::clone(&state.connections);
    let (stop, stopped) = watch::channel(false);
    let node = Node {
        app,
        connections: Arc::clone(&connections),
        header_timeout: state.config.limits.header_timeout,
        stopped,
    };

    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => {}
        () = node.accept_forever(&listener) => {}
    }
    state.draining.store(true, Ordering::Release);
    tracing::info!("shutting down: stopping episodes, draining in-flight invocations");
    // Stopped episodes record their summaries within a tick or two.
    state.episodes.stop_all();
    if tokio::time::timeout(EPISODE_STOP_GRACE, state.episodes.all_ended())
        .await
        .is_err()
    {
        tracing::warn!("episodes still running after {EPISODE_STOP_GRACE:?}; stopping anyway");
    }
    // Invocations whose client went away run on after their connection;
    // wait for them too (their deadline bounds the wait).
    let grace = state.config.ceilings.timeout + Duration::from_secs(5);
    tokio::select! {
        finished = tokio::time::timeout(grace, state.in_flight.idle()) => {
            if finished.is_err() {
                tracing::warn!("invocations still running after {grace:?}; stopping anyway");
            }
        }
        () = node.accept_forever(&listener) => {}
    }
    drop(listener);
    let _ = stop.send(true);
    let longest = state.config.limits.request_timeout + STOP_GRACE;
    if tokio::time::timeout(longest, connections.all_closed())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.open(),
            "connections still open after {longest:?}; stopping anyway"
        );
    }
    state.runtime.audit().flush();
    Ok(())
}

/// What each connection is served with.
struct Node {
    app: Router,
    connections: Arc<Connections>,
    header_timeout: Duration,
    stopped: watch::Receiver<bool>,
}

impl Node {
    /// Accepts connections until the process ends (the caller stops it).
    async fn accept_forever(&self, listener: &TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, _peer)) => match self.connections.admit() {
                    Some(slot) => {
                        tokio::spawn(self.serve_connection(stream, slot));
                    }
                    None => refuse(stream),
                },
                Err(error) if out_of_descriptors(&error) => {
                    tracing::warn!(%error, "out of file descriptors; closing an idle connection");
                    self.connections.close_an_idle_one();
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                // A connection that failed before it was accepted: its own
                // problem, not the listener's.
                Err(error) => tracing::debug!(%error, "accept failed"),
            }
        }
    }

    fn serve_connection(
        &self,
        stream: TcpStream,
        slot: ConnectionSlot,
    ) -> impl Future<Output = ()> + Send + 'static {
        let _ = stream.set_nodelay(true);
        let app = self.app.clone();
        let mut stopped = self.stopped.clone();
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .max_buf_size(MAX_HEAD_BYTES)
            .max_header_size(MAX_HEAD_BYTES)
            .max_headers(MAX_HEADERS);
        async move {
            let slot = Arc::new(slot);
            let requests = Arc::clone(&slot);
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let in_flight = requests.request();
                let mut app = app.clone();
                async move {
                    let response = app.call(request.map(axum::body::Body::new)).await?;
                    Ok::<_, Infallible>(response.map(|body| BusyUntilSent::new(body, in_flight)))
                }
            });
            let connection =
                http.serve_connection(TokioIo::new(JsonFramingErrors::new(stream)), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = slot.closed_for_room() => return,
                () = stopping(&mut stopped) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
    }
}

/// Resolves once the node stops.
async fn stopping(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Answers a connection over the cap with a 503 and closes it, without a
/// task: what the client sent is read off first (so the close is not a
/// reset that could swallow the answer), as much as has arrived.
fn refuse(stream: TcpStream) {
    let mut scratch = [0u8; 4096];
    for _ in 0..16 {
        match stream.try_read(&mut scratch) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
    let _ = stream.try_write(&OVER_CAPACITY);
}

fn out_of_descriptors(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(code) if code == rustix::io::Errno::MFILE.raw_os_error()
            || code == rustix::io::Errno::NFILE.raw_os_error()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_over_capacity_answer_is_well_framed_json() {
        let text = std::str::from_utf8(&OVER_CAPACITY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(value["error"]["code"], "too-many-connections");
    }
}
