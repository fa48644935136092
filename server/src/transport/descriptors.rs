//! The node's file-descriptor budget: every open connection and every open
//! tenant database costs descriptors, and a process that runs out can no
//! longer accept a connection nor open a database, for any tenant. At start
//! the node raises its soft `RLIMIT_NOFILE` to the hard limit, counts what it
//! already holds, keeps a reserve, and splits the rest between connections
//! and tenant databases, so that neither can starve the other or the node.

use sovra_runtime::storage::DESCRIPTORS_PER_TENANT_DB;

/// Descriptors kept free beyond those open at start: the audit and node
/// databases' readers, compile workers' pipes, model files, memory images of
/// loaded agents, the odd log file. Stops: the node itself failing to open
/// what it needs once connections and databases have taken their shares.
pub const RESERVED_DESCRIPTORS: u64 = 96;

/// Share of the budget (after the reserve) for tenant databases, in eighths;
/// connections get the rest.
const TENANT_DB_EIGHTHS: u64 = 3;

/// Most connections by default, however many descriptors there are.
/// Stops: per-connection buffers adding up to more memory than the node has.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// Most tenant databases open at once by default, however many descriptors
/// there are. Stops: SQLite page caches of idle tenants adding up.
pub const DEFAULT_MAX_OPEN_TENANT_DBS: usize = 1_024;

/// Fewest connections the node will run with.
const MIN_CONNECTIONS: usize = 16;

/// Fewest tenant databases the node will run with.
const MIN_TENANT_DBS: usize = 4;

/// How the descriptors are shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorBudget {
    /// The soft limit the node runs under.
    pub limit: u64,
    /// Descriptors open when the budget was made.
    pub in_use: u64,
    /// Connections open at once, at most.
    pub connections: usize,
    /// Tenant databases open at once, at most.
    pub tenant_dbs: usize,
}

impl DescriptorBudget {
    /// Shares `limit` descriptors out, `in_use` being held already. A
    /// configured bound is honoured when it fits the budget and cut to it
    /// when it does not (with a warning).
    pub fn plan(
        limit: u64,
        in_use: u64,
        connections: Option<usize>,
        tenant_dbs: Option<usize>,
    ) -> Self {
        let free = limit.saturating_sub(in_use + RESERVED_DESCRIPTORS);
        let db_share = free * TENANT_DB_EIGHTHS / 8;
        let fit_dbs = usize::try_from(db_share / DESCRIPTORS_PER_TENANT_DB as u64)
            .unwrap_or(usize::MAX)
            .max(MIN_TENANT_DBS);
        let tenant_dbs = fitted(
            "tenant databases",
            tenant_dbs,
            DEFAULT_MAX_OPEN_TENANT_DBS,
            fit_dbs,
        );
        let db_descriptors = (tenant_dbs * DESCRIPTORS_PER_TENANT_DB) as u64;
        let fit_connections = usize::try_from(free.saturating_sub(db_descriptors))
            .unwrap_or(usize::MAX)
            .max(MIN_CONNECTIONS);
        let connections = fitted(
            "connections",
            connections,
            DEFAULT_MAX_CONNECTIONS,
            fit_connections,
        );
        DescriptorBudget {
            limit,
            in_use,
            connections,
            tenant_dbs,
        }
    }

    /// The budget for this process now: raises the soft limit first.
    pub fn for_this_process(connections: Option<usize>, tenant_dbs: Option<usize>) -> Self {
        let limit = raise_descriptor_limit();
        Self::plan(limit, descriptors_in_use(), connections, tenant_dbs)
    }
}

/// The configured bound if it fits, else what fits; the default cut to fit.
fn fitted(what: &str, configured: Option<usize>, default: usize, fits: usize) -> usize {
    match configured {
        Some(wanted) if wanted > fits => {
            tracing::warn!(
                wanted,
                fits,
                "the descriptor limit leaves room for only {fits} {what}; \
                 raise the limit (ulimit -n) to allow more"
            );
            fits
        }
        Some(wanted) => wanted.max(1),
        None => default.min(fits),
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft
/// limit now in force.
pub fn raise_descriptor_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit = getrlimit(Resource::Nofile),
            Err(error) => {
                tracing::warn!(%error, "cannot raise the open-files limit to its hard limit")
            }
        }
    }
    // No limit at all: count as much as anything could use.
    limit.current.unwrap_or(u64::MAX / 2)
}

/// Descriptors this process holds now (0 where `/proc` is not there).
pub fn descriptors_in_use() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_limit_is_shared_out_below_the_limit() {
        let budget = DescriptorBudget::plan(1024, 40, None, None);
        let spent = budget.in_use
            + RESERVED_DESCRIPTORS
            + budget.connections as u64
            + (budget.tenant_dbs * DESCRIPTORS_PER_TENANT_DB) as u64;
        assert!(spent <= 1024, "{budget:?} spends {spent}");
        assert!(budget.connections >= 500, "{budget:?}");
        assert!(budget.tenant_dbs >= 50, "{budget:?}");
    }

    #[test]
    fn a_large_limit_stops_at_the_defaults_and_configured_bounds_are_cut_to_fit() {
        let big = DescriptorBudget::plan(1 << 20, 40, None, None);
        assert_eq!(big.connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(big.tenant_dbs, DEFAULT_MAX_OPEN_TENANT_DBS);
        let asked = DescriptorBudget::plan(1 << 20, 40, Some(100), Some(10));
        assert_eq!((asked.connections, asked.tenant_dbs), (100, 10));
        let cut = DescriptorBudget::plan(1024, 40, Some(100_000), Some(100_000));
        assert!(cut.connections < 1024 && cut.tenant_dbs < 200, "{cut:?}");
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let limit = raise_descriptor_limit();
        let now = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(now.current, now.maximum);
        assert_eq!(Some(limit), now.current.or(Some(u64::MAX / 2)));
    }
}
