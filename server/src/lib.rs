//! `sovra-server`: `sovra serve`, the node that cloud operators run.
//!
//! One process per node: an HTTP API (axum) over the sovra runtime, with
//! tenants and their API keys, a plugin marketplace (signed submissions,
//! checks, an out-of-process compile, operator review, a hash-chained
//! publisher log), installs with grants under the operator's ceilings,
//! invocations (JSON or streamed), history, metrics and an OpenAPI document.
//!
//! Guide to the modules: [`config`] reads the node's file; [`state`] holds
//! what the node serves from; [`api`] maps HTTP onto it; [`submission`] and
//! [`compile`] take plugins in; [`db`], [`ledger`] and [`artifacts`] keep
//! them; [`keys`], [`limiter`] and [`metrics`] guard and count the calls.

pub mod api;
pub mod artifacts;
pub mod compile;
pub mod config;
pub mod db;
pub mod keys;
pub mod ledger;
pub mod limiter;
pub mod metrics;
pub mod state;
pub mod submission;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub use config::NodeConfig;
pub use state::{AppState, StartError};

/// Serves `state` on `listener` until `shutdown` resolves, then drains:
/// readiness turns 503, no new connections are taken, and in-flight
/// requests (invocations included) run to their end before this returns.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let draining = Arc::clone(&state);
    let app = api::router(Arc::clone(&state));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            draining.draining.store(true, Ordering::Release);
            tracing::info!("shutting down: draining in-flight requests");
        })
        .await?;
    // Invocations whose client went away run on after their connection;
    // wait for them too (their deadline bounds the wait).
    let grace = state.config.ceilings.timeout + std::time::Duration::from_secs(5);
    if tokio::time::timeout(grace, state.in_flight.idle())
        .await
        .is_err()
    {
        tracing::warn!("invocations still running after {grace:?}; stopping anyway");
    }
    state.runtime.audit().flush();
    Ok(())
}
