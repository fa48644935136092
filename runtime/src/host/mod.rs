//! Host implementations of the `sovra:agent` interfaces, one module per
//! capability. Each checks its grant first, then acts; failures the guest can
//! handle come back as WIT `error` values, and only host bugs or exhausted
//! per-invocation budgets trap.

pub(crate) mod inference;
mod kv;
mod log;
mod sql;
mod vector;
pub(crate) mod wasi;

use std::future::Future;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::{self, GuestError};
use crate::sandbox::Sandbox;
use crate::storage::StorageError;

/// Links every sovra interface and the WASI slice into `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    wasi::add_to_linker(linker)?;
    bindings::Agent::add_to_linker::<Sandbox, HasSelf<Sandbox>>(linker, |sandbox| sandbox)
}

impl bindings::sovra::agent::types::Host for Sandbox {}

impl Sandbox {
    /// Converts a storage failure into the guest's error, remembering denials
    /// for the audit record.
    pub(crate) fn storage_error(&mut self, error: StorageError) -> GuestError {
        match error {
            StorageError::QuotaExceeded { .. } => GuestError::QuotaExceeded(error.to_string()),
            StorageError::InvalidInput(message) => GuestError::InvalidInput(message),
            StorageError::LimitExceeded(message) => GuestError::LimitExceeded(message),
            StorageError::Denied(message) => {
                self.denials.push(format!("sql: {message}"));
                GuestError::AccessDenied(message)
            }
            StorageError::Io { .. } | StorageError::Open { .. } => {
                tracing::error!(error = %error, "tenant storage unavailable");
                self.host_unavailable = true;
                GuestError::Unavailable("tenant storage is unavailable; retry later".into())
            }
            StorageError::Busy(message) => {
                tracing::warn!(error = %message, "tenant storage stayed busy past its timeout");
                self.host_unavailable = true;
                GuestError::Unavailable("tenant storage is busy; retry later".into())
            }
            StorageError::Internal(message) => {
                tracing::error!(error = %message, "tenant storage failure");
                GuestError::Internal("storage failure".into())
            }
        }
    }

    /// The error for a capability the tenant did not grant.
    pub(crate) fn not_granted(&mut self, capability: &str) -> GuestError {
        self.denials.push(format!("capability: {capability}"));
        GuestError::AccessDenied(format!("the tenant has not granted `{capability}`"))
    }
}

impl Sandbox {
    /// Runs blocking host work (storage, a model) off the async workers,
    /// giving the invocation's execution slot to others meanwhile.
    pub(crate) fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = wasmtime::Result<T>> + Send + 'static {
        let turns = Arc::clone(&self.turns);
        async move {
            turns
                .away(tokio::task::spawn_blocking(work))
                .await
                .map_err(|e| wasmtime::Error::msg(format!("host worker failed: {e}")))
        }
    }
}
