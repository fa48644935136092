//! Host implementations of the `sovra:agent` interfaces, one module per
//! capability; `wasi:nn` over the same tensor models ([`nn`]) and Spin's
//! LLM interface over the same engine (`spin_llm`), for guests written for
//! them. Each checks its grant first, then acts; how a failure reaches
//! the guest (a WIT `error` value, or a trap) is decided in [`error`].

pub(crate) mod error;
pub(crate) mod inference;
mod kv;
mod log;
pub(crate) mod nn;
mod safety;
mod spin_llm;
mod sql;
mod tools;
mod vector;
pub(crate) mod wasi;

use std::future::Future;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

pub use error::HostError;

use crate::bindings::{self, GuestError};
use crate::sandbox::Sandbox;
use crate::storage::TenantDb;

/// Links every sovra interface and the WASI slice into `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    wasi::add_to_linker(linker)?;
    bindings::Agent::add_to_linker::<Sandbox, HasSelf<Sandbox>>(linker, |sandbox| sandbox)?;
    bindings::controller::sovra::agent::safety::add_to_linker::<Sandbox, HasSelf<Sandbox>>(
        linker,
        |sandbox| sandbox,
    )?;
    bindings::nn::Ml::add_to_linker::<Sandbox, HasSelf<Sandbox>>(linker, |sandbox| sandbox)?;
    bindings::spin::SpinLlm::add_to_linker::<Sandbox, HasSelf<Sandbox>>(linker, |sandbox| sandbox)
}

impl bindings::sovra::agent::types::Host for Sandbox {
    fn convert_error(&mut self, error: HostError) -> wasmtime::Result<GuestError> {
        error::convert(self, error)
    }
}

/// The granted capabilities' handles: a capability the tenant did not grant
/// is [`HostError::NotGranted`].
impl Sandbox {
    pub(crate) fn kv(&self) -> Result<Arc<TenantDb>, HostError> {
        self.kv.clone().ok_or(HostError::NotGranted("kv"))
    }

    pub(crate) fn sql(&self) -> Result<Arc<TenantDb>, HostError> {
        self.sql.clone().ok_or(HostError::NotGranted("sql"))
    }

    pub(crate) fn vector(&self) -> Result<Arc<TenantDb>, HostError> {
        self.vector.clone().ok_or(HostError::NotGranted("vector"))
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
