//! Per-tenant quotas the operator sells: invocations per UTC day and the
//! size of the tenant's storage. They live in the node database (so they
//! outlive restarts), are checked before any work starts (every call that
//! runs an agent or a model counts as an invocation), and a tenant sees
//! them, with what it used, beside its usage.
//!
//! Today's count is kept in memory and seeded from the audit log the first
//! time a tenant with a daily quota calls each day, so a restart neither
//! forgets what was used nor starts a new allowance.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sovra_runtime::audit::AuditLog;

/// Smallest storage quota accepted. Stops: a limit below what an empty
/// tenant database needs, which would fail every call with a confusing error.
pub const MIN_STORAGE_QUOTA: u64 = 64 << 10;

const DAY_MS: u64 = 86_400_000;

/// What the operator sets for one tenant; a field left out is not limited
/// beyond the node's own limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Invocations (agent calls and OpenAI-compatible calls) per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocations_per_day: Option<u64>,
    /// Size of the tenant's database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_bytes: Option<u64>,
}

impl Quotas {
    /// Checks the values; `node_storage` is the most one tenant's storage
    /// may hold on this node.
    pub fn validate(&self, node_storage: u64) -> Result<(), String> {
        if let Some(bytes) = self.storage_bytes
            && !(MIN_STORAGE_QUOTA..=node_storage).contains(&bytes)
        {
            return Err(format!(
                "storage_bytes must be between {MIN_STORAGE_QUOTA} and this node's \
                 {node_storage}"
            ));
        }
        Ok(())
    }
}

/// A tenant's daily quota is used up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExceeded {
    pub limit: u64,
    /// Until the next UTC day.
    pub retry_after: Duration,
}

/// Every tenant's quotas and today's invocation counts.
#[derive(Debug, Default)]
pub struct QuotaBook {
    quotas: RwLock<HashMap<String, Quotas>>,
    today: Mutex<HashMap<String, DayCount>>,
}

#[derive(Debug, Clone, Copy)]
struct DayCount {
    day_start_ms: u64,
    used: u64,
}

impl QuotaBook {
    /// A book holding `quotas` (from the node database).
    pub fn new(quotas: impl IntoIterator<Item = (String, Quotas)>) -> Self {
        QuotaBook {
            quotas: RwLock::new(quotas.into_iter().collect()),
            today: Mutex::default(),
        }
    }

    pub fn get(&self, tenant: &str) -> Option<Quotas> {
        self.quotas
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            .cloned()
    }

    pub fn set(&self, tenant: &str, quotas: Quotas) {
        self.quotas
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.to_owned(), quotas);
    }

    /// Forgets `tenant` (erased).
    pub fn remove(&self, tenant: &str) {
        self.quotas
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tenant);
        self.today
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tenant);
    }

    /// Counts one invocation of `tenant` at `now_ms`, or refuses it when its
    /// daily quota is used up. Tenants without one are not counted here.
    pub fn admit(&self, tenant: &str, audit: &AuditLog, now_ms: u64) -> Result<(), QuotaExceeded> {
        let Some(limit) = self.get(tenant).and_then(|q| q.invocations_per_day) else {
            return Ok(());
        };
        let mut today = self.today.lock().unwrap_or_else(|p| p.into_inner());
        let count = self.count(&mut today, tenant, audit, now_ms);
        if count.used >= limit {
            return Err(QuotaExceeded {
                limit,
                retry_after: Duration::from_millis(count.day_start_ms + DAY_MS - now_ms),
            });
        }
        count.used += 1;
        Ok(())
    }

    /// Invocations `tenant` ran today (UTC) as of `now_ms`.
    pub fn used_today(&self, tenant: &str, audit: &AuditLog, now_ms: u64) -> u64 {
        let mut today = self.today.lock().unwrap_or_else(|p| p.into_inner());
        self.count(&mut today, tenant, audit, now_ms).used
    }

    /// `tenant`'s count for the day of `now_ms`, seeded from the audit log
    /// when there is none for that day yet.
    fn count<'a>(
        &self,
        today: &'a mut HashMap<String, DayCount>,
        tenant: &str,
        audit: &AuditLog,
        now_ms: u64,
    ) -> &'a mut DayCount {
        let day_start_ms = now_ms / DAY_MS * DAY_MS;
        let count = today.entry(tenant.to_owned()).or_insert(DayCount {
            day_start_ms: 0,
            used: 0,
        });
        if count.day_start_ms != day_start_ms {
            let used = audit
                .invocations_since(tenant, day_start_ms)
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, tenant, "cannot count today's invocations; counting from now");
                    0
                });
            *count = DayCount { day_start_ms, used };
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sovra_runtime::audit::AuditRecord;
    use sovra_runtime::sealing::NodeKey;

    fn record(id: &str, at_ms: u64, outcome: &str) -> AuditRecord {
        AuditRecord {
            invocation_id: id.into(),
            tenant: "acme".into(),
            agent: "counter".into(),
            agent_digest: String::new(),
            started_at_ms: at_ms,
            duration_us: 1,
            outcome: outcome.into(),
            error: None,
            denials: Vec::new(),
            usage: Vec::new(),
            parent: None,
        }
    }

    #[test]
    fn a_day_allows_its_quota_counting_what_the_audit_log_holds_and_the_next_day_starts_anew() {
        let dir = tempfile::tempdir().unwrap();
        let audit = AuditLog::open(&dir.path().join("audit.db"), &NodeKey::generate()).unwrap();
        let day = 20_000 * DAY_MS;
        // Before a restart: one call yesterday, two today, a refusal today.
        audit.record(record("y", day - 5, "ok"));
        audit.record(record("a", day + 5, "ok"));
        audit.record(record("b", day + 6, "trap"));
        audit.record(record("r", day + 7, "refused-429"));
        let book = QuotaBook::new([(
            "acme".to_owned(),
            Quotas {
                invocations_per_day: Some(3),
                storage_bytes: None,
            },
        )]);
        let now = day + 10_000;
        assert_eq!(book.used_today("acme", &audit, now), 2);
        book.admit("acme", &audit, now).unwrap();
        let refused = book.admit("acme", &audit, now).unwrap_err();
        assert_eq!(refused.limit, 3);
        assert_eq!(refused.retry_after, Duration::from_millis(DAY_MS - 10_000));
        assert!(
            book.admit("acme", &audit, day + DAY_MS).is_ok(),
            "a new day"
        );
        assert!(
            book.admit("globex", &audit, now).is_ok(),
            "no quota, no count"
        );
    }

    #[test]
    fn storage_quotas_are_bounded() {
        let quota = |bytes| Quotas {
            invocations_per_day: None,
            storage_bytes: Some(bytes),
        };
        assert!(quota(1 << 20).validate(256 << 20).is_ok());
        assert!(quota(1).validate(256 << 20).is_err());
        assert!(quota(1 << 30).validate(256 << 20).is_err());
    }
}
