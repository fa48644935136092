//! The state of one sandbox: everything a single invocation's `Store` holds.
//!
//! A fresh [`Sandbox`] is built for every invocation from the tenant's grants;
//! it holds only what was granted (a kv or sql handle exists only if that
//! capability was granted) and is dropped with the store when the call ends,
//! so nothing survives from one invocation to the next except what the tenant's
//! storage keeps.

use std::sync::Arc;
use std::time::Instant;

use sovra_gpu::{ModelRegistry, UsageMeter};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::capability::Grants;
use crate::controller::ControllerSignals;
use crate::fair_share::Turns;
use crate::invocation::{EventSink, LiveEvent};
use crate::limits::{
    MAX_LOG_BYTES, MAX_LOG_FIELD_BYTES, MAX_LOG_FIELDS, MAX_LOG_LINES, MAX_LOG_MESSAGE_BYTES,
    MAX_RESOURCES, MemoryLimiter,
};
use crate::names::TenantId;
use crate::runtime::Runtime;
use crate::storage::TenantDb;
use crate::tools::ToolCatalog;

/// Who is running, for log fields and engine requests. Set by the host.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) tenant: TenantId,
    pub(crate) agent: String,
    pub(crate) invocation_id: String,
}

/// Severity of a guest log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// One structured log line from a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

/// Log lines kept for the invocation's report, bounded.
#[derive(Debug, Default)]
pub(crate) struct LogBuffer {
    pub(crate) lines: Vec<LogLine>,
    pub(crate) dropped: usize,
    bytes: usize,
}

impl LogBuffer {
    /// Keeps `line` (cut to size) unless the buffer is full; returns the kept line.
    pub(crate) fn push(&mut self, mut line: LogLine) -> Option<&LogLine> {
        truncate_to_char_boundary(&mut line.message, MAX_LOG_MESSAGE_BYTES);
        line.fields.truncate(MAX_LOG_FIELDS);
        for (key, value) in &mut line.fields {
            truncate_to_char_boundary(key, MAX_LOG_FIELD_BYTES);
            truncate_to_char_boundary(value, MAX_LOG_FIELD_BYTES);
        }
        let size = line.message.len()
            + line
                .fields
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if self.lines.len() >= MAX_LOG_LINES || self.bytes + size > MAX_LOG_BYTES {
            self.dropped += 1;
            return None;
        }
        self.bytes += size;
        self.lines.push(line);
        self.lines.last()
    }
}

pub(crate) fn truncate_to_char_boundary(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// The trap raised when a guest makes more host calls than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("more than {limit} host calls in one invocation")]
pub(crate) struct HostCallLimitExceeded {
    pub(crate) limit: u64,
}

/// The trap raised by the epoch callback once the deadline has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invocation deadline exceeded")]
pub(crate) struct DeadlineExceeded;

/// The tenant database handles of the storage capabilities that were granted.
#[derive(Debug, Default)]
pub(crate) struct GrantedStorage {
    pub(crate) kv: Option<Arc<TenantDb>>,
    pub(crate) sql: Option<Arc<TenantDb>>,
    pub(crate) vector: Option<Arc<TenantDb>>,
}

/// What the inference capability may reach.
#[derive(Debug)]
pub(crate) struct InferenceAccess {
    pub(crate) registry: Arc<ModelRegistry>,
    pub(crate) grants: Arc<Grants>,
    pub(crate) deadline: Instant,
    /// The tenant's token quotas, charged at each step.
    pub(crate) budget: Option<Arc<dyn crate::budget::TokenBudget>>,
}

/// What the tools capability may reach: the tenant's tools, and where this
/// invocation sits in a chain of tool calls.
#[derive(Debug)]
pub(crate) struct ToolAccess {
    pub(crate) catalog: Option<Arc<dyn ToolCatalog>>,
    /// The runtime that runs each tool call in a sandbox of its own.
    pub(crate) runtime: Runtime,
    /// 0 for an agent a caller invoked, the chain's depth for a tool.
    pub(crate) depth: u32,
    /// Tool calls made so far.
    pub(crate) calls: u32,
}

/// Store data of one invocation.
pub(crate) struct Sandbox {
    pub(crate) table: ResourceTable,
    pub(crate) wasi: WasiCtx,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) identity: Arc<Identity>,
    pub(crate) host_calls: u64,
    /// Host calls this invocation may make: [`MAX_HOST_CALLS`](crate::limits::MAX_HOST_CALLS), or what its
    /// caller had left for a tool.
    pub(crate) host_call_limit: u64,
    /// Present only when the tenant granted `kv`.
    pub(crate) kv: Option<Arc<TenantDb>>,
    /// Present only when the tenant granted `sql`.
    pub(crate) sql: Option<Arc<TenantDb>>,
    /// Present only when the tenant granted `vector`.
    pub(crate) vector: Option<Arc<TenantDb>>,
    pub(crate) inference: InferenceAccess,
    pub(crate) tools: ToolAccess,
    pub(crate) logs: LogBuffer,
    /// Capabilities and models refused during this invocation, for the audit.
    pub(crate) denials: Vec<String>,
    /// Where live events go, when the caller streams.
    pub(crate) events: Option<EventSink>,
    /// Tokens models generated for this invocation.
    pub(crate) meters: Vec<(String, Arc<UsageMeter>)>,
    /// The host answered a call with `unavailable` (storage busy or not
    /// openable): an agent that passes that error on is not at fault.
    pub(crate) host_unavailable: bool,
    /// The invocation's turns at the node's execution slots.
    pub(crate) turns: Arc<Turns>,
    /// A controller's episode signals (`None` for agents and tools).
    pub(crate) controller: Option<Arc<ControllerSignals>>,
    /// Bytes of `wasi:nn` tensors the host holds for this invocation.
    pub(crate) nn_tensor_bytes: usize,
    /// `wasi:http/types` state for an HTTP handler's request and response.
    pub(crate) http: WasiHttpCtx,
    http_hooks: NoOutgoingHttp,
}

/// Everything an invocation may reach through the host, and how many host
/// calls it may make.
#[derive(Debug)]
pub(crate) struct Access {
    pub(crate) storage: GrantedStorage,
    pub(crate) inference: InferenceAccess,
    pub(crate) tools: ToolAccess,
    pub(crate) host_call_limit: u64,
}

impl Sandbox {
    pub(crate) fn new(
        wasi: WasiCtx,
        limiter: MemoryLimiter,
        identity: Arc<Identity>,
        access: Access,
        events: Option<EventSink>,
        turns: Arc<Turns>,
    ) -> Self {
        let Access {
            storage,
            inference,
            tools,
            host_call_limit,
        } = access;
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Sandbox {
            table,
            wasi,
            limiter,
            identity,
            host_calls: 0,
            host_call_limit,
            kv: storage.kv,
            sql: storage.sql,
            vector: storage.vector,
            inference,
            tools,
            logs: LogBuffer::default(),
            denials: Vec::new(),
            events,
            meters: Vec::new(),
            host_unavailable: false,
            turns,
            controller: None,
            nn_tensor_bytes: 0,
            http: WasiHttpCtx::new(),
            http_hooks: NoOutgoingHttp,
        }
    }

    /// Sends `event` to a streaming caller, if there is one (a caller that
    /// went away is no error: the invocation runs to its end regardless).
    pub(crate) fn emit(&self, event: impl FnOnce() -> LiveEvent) {
        if let Some(events) = &self.events {
            let _ = events.send(event());
        }
    }

    /// Counts one call to a sovra host function; traps past the
    /// invocation's limit (at most [`MAX_HOST_CALLS`](crate::limits::MAX_HOST_CALLS) for a whole chain of
    /// tool calls).
    pub(crate) fn charge_host_call(&mut self) -> wasmtime::Result<()> {
        self.host_calls += 1;
        if self.host_calls > self.host_call_limit {
            return Err(wasmtime::Error::new(HostCallLimitExceeded {
                limit: self.host_call_limit,
            }));
        }
        Ok(())
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Sandbox {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// `wasi:http` hooks that send nothing: `outgoing-handler` is never linked,
/// and were it reached, every request would be denied.
struct NoOutgoingHttp;

impl wasmtime_wasi_http::WasiHttpHooks for NoOutgoingHttp {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _io: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_buffer_is_bounded_and_cuts_on_char_boundaries() {
        let mut buffer = LogBuffer::default();
        for _ in 0..MAX_LOG_LINES + 5 {
            buffer.push(LogLine {
                level: LogLevel::Info,
                message: "é".repeat(MAX_LOG_MESSAGE_BYTES),
                fields: Vec::new(),
            });
        }
        // 4 KiB messages reach the byte budget before the line count.
        assert_eq!(buffer.lines.len(), MAX_LOG_BYTES / MAX_LOG_MESSAGE_BYTES);
        assert_eq!(buffer.dropped, MAX_LOG_LINES + 5 - buffer.lines.len());
        assert!(buffer.lines[0].message.len() <= MAX_LOG_MESSAGE_BYTES);
    }

    #[test]
    fn log_fields_are_bounded_in_number_and_size() {
        let mut buffer = LogBuffer::default();
        let line = buffer
            .push(LogLine {
                level: LogLevel::Info,
                message: "m".into(),
                fields: (0..100)
                    .map(|i| (format!("k{i}"), "v".repeat(MAX_LOG_FIELD_BYTES * 8)))
                    .collect(),
            })
            .unwrap();
        assert_eq!(line.fields.len(), MAX_LOG_FIELDS);
        assert!(
            line.fields
                .iter()
                .all(|(_, v)| v.len() == MAX_LOG_FIELD_BYTES)
        );
    }
}
