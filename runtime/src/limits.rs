//! Every limit the host enforces on a guest, as named constants whose docs say
//! which attack they stop, plus the per-invocation [`Limits`] a tenant or
//! operator may set within the ceilings, and the [`MemoryLimiter`] that
//! enforces memory, table and instance caps inside wasmtime.

use std::time::Duration;

use wasmtime::ResourceLimiter;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Wall-clock budget of one invocation unless the tenant sets another.
/// Stops: an agent that spins forever and holds a worker and its memory.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest budget anyone may set for one invocation.
/// Stops: a grant that lets one agent pin a sandbox slot indefinitely.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// How often the epoch ticker advances; a guest checks its deadline, yields
/// to other work on its thread, and may give its execution slot up (see
/// `fair_share`) at this granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Extra time the outer async timeout allows beyond the deadline before it
/// abandons a call stuck inside the host.
/// Stops: a guest parked in a host call that never returns (the epoch
/// deadline only fires while guest code runs).
pub const HOST_CALL_GRACE: Duration = Duration::from_millis(250);

/// Total linear memory of one instance (all its memories together) unless
/// the tenant sets another.
/// Stops: memory-growth bombs starving the node.
pub const DEFAULT_MAX_MEMORY: u64 = 64 * MIB;

/// The most linear memory anyone may grant one instance; also the size of a
/// pooling-allocator memory slot.
pub const MAX_MEMORY_CEILING: u64 = 1024 * MIB;

/// Elements of all tables of one instance.
/// Stops: table-growth bombs (each element is host memory).
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Core and component instances created by one component.
/// Stops: components that nest instances to multiply memory and tables.
pub const MAX_INSTANCES: usize = 64;

/// Tables per instance.
pub const MAX_TABLES: usize = 64;

/// Linear memories per instance.
pub const MAX_MEMORIES: usize = 4;

/// Guest stack depth in bytes.
/// Stops: deep recursion exhausting the host thread's stack.
pub const MAX_WASM_STACK: usize = 512 * KIB as usize;

/// Bytes a guest may pass to the host in one host call (strings, lists).
/// Stops: a guest making the host allocate without bound on its behalf.
pub const MAX_HOSTCALL_BYTES: usize = 8 * MIB as usize;

/// Live resource handles (generations, streams) in one invocation.
/// Stops: handle floods exhausting host memory.
pub const MAX_RESOURCES: usize = 1024;

/// Random bytes one `wasi:random` call may ask for. The host makes them in
/// one uninterruptible call, so the deadline cannot stop it.
/// Stops: a guest asking for gigabytes of random bytes in one call.
pub const MAX_WASI_RANDOM_BYTES: u64 = 1 << 20;

/// Calls to sovra's own host functions (kv, sql, log, inference) per invocation.
/// Stops: a flood of host calls monopolising storage or the log pipeline.
pub const MAX_HOST_CALLS: u64 = 100_000;

/// How deep tool calls nest: an agent's call is depth 1, a tool that calls a
/// tool makes depth 2, and so on.
/// Stops: tools calling each other in a cycle until the node runs out of
/// sandboxes.
pub const MAX_TOOL_DEPTH: u32 = 4;

/// Tool calls one invocation may make (each tool's own calls count toward
/// its own invocation).
/// Stops: fan-out that multiplies one invocation into hundreds of sandboxes.
pub const MAX_TOOL_CALLS: u32 = 32;

/// Share of its caller's remaining time a tool call may take, in percent.
/// Stops: a tool that runs out the clock leaving its caller no time to
/// handle the failure and answer.
pub const TOOL_TIME_SHARE_PERCENT: u32 = 90;

/// Size of a tool's input JSON Schema.
/// Stops: a tool whose schema takes the host long to compile or to apply.
pub const MAX_TOOL_SCHEMA_BYTES: usize = 64 * KIB as usize;

/// How long a tool may take to describe itself (the host asks once per
/// component and keeps the answer).
/// Stops: a tool whose `describe` spins to stall every caller of `list-tools`.
pub const TOOL_DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes of the response body an HTTP handler (a guest written for Spin)
/// may give one invocation.
/// Stops: a guest streaming an unbounded body into host memory.
pub const MAX_HTTP_RESPONSE_BYTES: usize = 16 * MIB as usize;

/// How long the host still reads an HTTP handler's response once the
/// handler has returned (its body is in memory by then).
/// Stops: a handler that returns without ever finishing its response
/// holding the caller until the deadline.
pub const HTTP_RESPONSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Bytes of stdout, and separately of stderr, captured per invocation.
/// Stops: output floods filling host memory or logs.
pub const MAX_CAPTURED_OUTPUT: usize = 64 * KIB as usize;

/// Log lines kept per invocation (later lines are counted and dropped).
/// Stops: log floods; the agent still runs.
pub const MAX_LOG_LINES: usize = 1_000;

/// Bytes kept of one log message (longer ones are cut).
pub const MAX_LOG_MESSAGE_BYTES: usize = 4 * KIB as usize;

/// Fields kept per log line, and bytes per field key or value.
/// Stops: a guest parking megabytes in log fields, which are kept for the
/// report and streamed to callers.
pub const MAX_LOG_FIELDS: usize = 32;
pub const MAX_LOG_FIELD_BYTES: usize = KIB as usize;

/// Bytes of log lines (messages and fields) kept per invocation; lines past
/// it are dropped and counted.
/// Stops: many maximal lines adding up to a memory bomb.
pub const MAX_LOG_BYTES: usize = MIB as usize;

/// Size of the request input an agent is given.
/// Stops: oversized requests copied into every sandbox.
pub const MAX_INPUT_BYTES: usize = 4 * MIB as usize;

/// Size of a component file the host will read.
/// Stops: giant files exhausting memory before validation.
pub const MAX_COMPONENT_BYTES: u64 = 64 * MIB;

/// Sandboxes alive at once on this node (pooling allocator slots).
/// Invocations beyond it wait for a free slot.
pub const MAX_CONCURRENT_INVOCATIONS: u32 = 128;

/// Texts in one `embed` call.
/// Stops: one call monopolising the embedding engine.
pub const MAX_EMBED_TEXTS: usize = 256;

/// Dimensions of one tensor passed to `run-tensor`.
pub const MAX_TENSOR_RANK: usize = 8;

/// Bytes of `wasi:nn` tensor data the host holds for one invocation at once
/// (tensors the guest made and outputs it has not dropped).
/// Stops: a guest making the host keep tensors without bound, each
/// constructor call carrying up to [`MAX_HOSTCALL_BYTES`].
pub const MAX_NN_TENSOR_BYTES: usize = 64 * MIB as usize;

/// Length of one kv key in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Size of one kv value in bytes.
/// Stops: single huge values bypassing the page-based quota accounting.
pub const MAX_VALUE_BYTES: usize = 4 * MIB as usize;

/// Keys returned by one `list-keys` page.
pub const MAX_LIST_PAGE: u32 = 1_000;

/// Size of a tenant's database (kv and sql together) unless the operator sets another.
/// Stops: one tenant filling the node's disk.
pub const DEFAULT_STORAGE_QUOTA: u64 = 256 * MIB;

/// Length of one SQL statement in bytes.
/// Stops: parser and planner blow-ups from huge statements.
pub const MAX_SQL_STATEMENT_BYTES: usize = 16 * KIB as usize;

/// Bound parameters of one SQL statement.
pub const MAX_SQL_PARAMS: usize = 256;

/// Rows one query may return.
/// Stops: result sets that exhaust host memory before reaching the guest.
pub const MAX_SQL_ROWS: usize = 10_000;

/// Bytes of values one query may return.
pub const MAX_SQL_RESULT_BYTES: usize = 8 * MIB as usize;

/// Time one SQL statement may run.
/// Stops: runaway queries (recursive CTEs, cross joins) holding the database.
pub const MAX_SQL_TIME: Duration = Duration::from_secs(2);

/// The limits of one invocation, chosen by the tenant or operator within the
/// ceilings above. The agent never chooses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    pub max_memory: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: DEFAULT_TIMEOUT,
            max_memory: DEFAULT_MAX_MEMORY,
        }
    }
}

/// A limit outside what the node allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("timeout {given:?} is outside 1ms..={max:?}")]
    Timeout { given: Duration, max: Duration },
    #[error("max memory of {given} bytes is outside 64KiB..={max} bytes")]
    Memory { given: u64, max: u64 },
}

impl Limits {
    /// Checks the limits against the node's ceilings.
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err(LimitsError::Timeout {
                given: self.timeout,
                max: MAX_TIMEOUT,
            });
        }
        if self.max_memory < 64 * KIB || self.max_memory > MAX_MEMORY_CEILING {
            return Err(LimitsError::Memory {
                given: self.max_memory,
                max: MAX_MEMORY_CEILING,
            });
        }
        Ok(())
    }
}

/// Caps the total linear memory, tables and instances of one store.
///
/// A growth past the cap fails the way Wasm says it should (`memory.grow`
/// returns -1) and is remembered, so that a guest which then traps is
/// reported as having hit its memory limit rather than as a plain crash.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    max_memory: usize,
    memory_in_use: usize,
    table_elements: usize,
    denied_memory_request: Option<usize>,
}

impl MemoryLimiter {
    pub(crate) fn new(max_memory: u64) -> Self {
        MemoryLimiter {
            max_memory: usize::try_from(max_memory).unwrap_or(usize::MAX),
            memory_in_use: 0,
            table_elements: 0,
            denied_memory_request: None,
        }
    }

    /// The total the guest asked for when a growth was refused, if one was.
    pub(crate) fn denied_memory_request(&self) -> Option<usize> {
        self.denied_memory_request
    }

    pub(crate) fn max_memory(&self) -> usize {
        self.max_memory
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .memory_in_use
            .saturating_add(desired.saturating_sub(current));
        if total > self.max_memory {
            self.denied_memory_request = Some(total);
            return Ok(false);
        }
        self.memory_in_use = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .table_elements
            .saturating_add(desired.saturating_sub(current));
        if total > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        self.table_elements = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_cap_counts_all_memories_together() {
        let mut limiter = MemoryLimiter::new(10 * MIB);
        assert!(limiter.memory_growing(0, 6 * MIB as usize, None).unwrap());
        // A second memory of the same instance shares the budget.
        assert!(!limiter.memory_growing(0, 6 * MIB as usize, None).unwrap());
        assert_eq!(limiter.denied_memory_request(), Some(12 * MIB as usize));
        assert!(limiter.memory_growing(0, 4 * MIB as usize, None).unwrap());
    }

    #[test]
    fn limits_outside_ceilings_are_refused() {
        let too_long = Limits {
            timeout: MAX_TIMEOUT * 2,
            ..Limits::default()
        };
        assert!(matches!(
            too_long.validate(),
            Err(LimitsError::Timeout { .. })
        ));
        let too_big = Limits {
            max_memory: MAX_MEMORY_CEILING + 1,
            ..Limits::default()
        };
        assert!(matches!(
            too_big.validate(),
            Err(LimitsError::Memory { .. })
        ));
        assert!(Limits::default().validate().is_ok());
    }
}
