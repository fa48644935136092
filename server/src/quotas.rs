//! Per-tenant quotas the operator sells: invocations per UTC day, tokens
//! (prompt and generated together) per model per UTC day and month, the
//! size of the tenant's storage and the entries in its vector memory. They live in the node database (so they
//! outlive restarts), are checked before any work starts (every call that
//! runs an agent or a model counts as an invocation), tokens again at each
//! step of a generation (see `sovra_runtime::budget`), and a tenant sees
//! them, with what it used, beside its usage.
//!
//! What was used is kept in memory and seeded from the audit log the first
//! time a tenant with a quota calls each day (and month), so a restart
//! neither forgets what was used nor starts a new allowance.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sovra_runtime::audit::{AuditLog, utc_day};
use sovra_runtime::budget::TokenBudget;

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
    /// Tokens (prompt and generated) per model per UTC day.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tokens_per_day: BTreeMap<String, u64>,
    /// Tokens (prompt and generated) per model per UTC calendar month.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tokens_per_month: BTreeMap<String, u64>,
    /// Size of the tenant's database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_bytes: Option<u64>,
    /// Entries in the tenant's vector memory, all collections together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vectors: Option<u64>,
}

impl Quotas {
    /// What the runtime limits the tenant's storage to.
    pub fn storage_limits(&self) -> sovra_runtime::storage::TenantLimits {
        sovra_runtime::storage::TenantLimits {
            storage_bytes: self.storage_bytes,
            vectors: self.vectors,
        }
    }

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

/// Every tenant's quotas, today's invocation counts and token ledgers.
#[derive(Debug, Default)]
pub struct QuotaBook {
    quotas: RwLock<HashMap<String, Quotas>>,
    today: Mutex<HashMap<String, DayCount>>,
    tokens: Mutex<HashMap<String, TokenLedger>>,
}

/// One tenant's tokens per model this UTC day and month.
#[derive(Debug, Default)]
struct TokenLedger {
    day: String,
    month: String,
    used_day: HashMap<String, u64>,
    used_month: HashMap<String, u64>,
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
            tokens: Mutex::default(),
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
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tenant);
    }

    /// The token budget of `tenant`'s calls from `now_ms`, if it has token
    /// quotas: its ledger seeded from the audit log for this day and month.
    pub fn token_budget(
        self: &Arc<Self>,
        tenant: &str,
        audit: &AuditLog,
        now_ms: u64,
    ) -> Option<Arc<dyn TokenBudget>> {
        let quotas = self.get(tenant)?;
        if quotas.tokens_per_day.is_empty() && quotas.tokens_per_month.is_empty() {
            return None;
        }
        let (day, month) = day_and_month(now_ms);
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let ledger = tokens.entry(tenant.to_owned()).or_default();
        if ledger.month != month || ledger.day != day {
            let month_start = month_start_ms(now_ms);
            match audit.usage(tenant, month_start) {
                Ok(daily) => {
                    *ledger = TokenLedger {
                        day: day.clone(),
                        month,
                        ..TokenLedger::default()
                    };
                    for used in daily {
                        let tokens = used.prompt_tokens + used.generated_tokens;
                        *ledger.used_month.entry(used.model.clone()).or_default() += tokens;
                        if used.day == day {
                            *ledger.used_day.entry(used.model).or_default() += tokens;
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, tenant, "cannot read this month's tokens; counting from now");
                    *ledger = TokenLedger {
                        day,
                        month,
                        ..TokenLedger::default()
                    };
                }
            }
        }
        Some(Arc::new(TenantBudget {
            book: Arc::clone(self),
            tenant: tenant.to_owned(),
        }))
    }

    /// Tokens `tenant` used on each model this day and month, as counted.
    pub fn tokens_used(&self, tenant: &str) -> (HashMap<String, u64>, HashMap<String, u64>) {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(tenant)
            .map(|ledger| (ledger.used_day.clone(), ledger.used_month.clone()))
            .unwrap_or_default()
    }

    /// Why `tenant` may not use `model` now, if it may not.
    fn over(&self, tenant: &str, model: &str) -> Result<(), String> {
        // Borrowed, not cloned: this runs at every step of a generation.
        let quotas = self.quotas.read().unwrap_or_else(|p| p.into_inner());
        let Some(quotas) = quotas.get(tenant) else {
            return Ok(());
        };
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let Some(ledger) = tokens.get(tenant) else {
            return Ok(());
        };
        for (period, limits, used) in [
            ("today (UTC)", &quotas.tokens_per_day, &ledger.used_day),
            (
                "this month (UTC)",
                &quotas.tokens_per_month,
                &ledger.used_month,
            ),
        ] {
            if let Some(&limit) = limits.get(model) {
                let used = used.get(model).copied().unwrap_or(0);
                if used >= limit {
                    return Err(format!(
                        "tenant `{tenant}` used {used} of its {limit} tokens of `{model}` {period}"
                    ));
                }
            }
        }
        Ok(())
    }

    fn add_tokens(&self, tenant: &str, model: &str, tokens: u64) {
        let mut ledgers = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let ledger = ledgers.entry(tenant.to_owned()).or_default();
        *ledger.used_day.entry(model.to_owned()).or_default() += tokens;
        *ledger.used_month.entry(model.to_owned()).or_default() += tokens;
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

impl QuotaBook {
    /// Prometheus lines of every tenant's quotas and what it used of them
    /// (the operator's `/metrics/tenants`).
    pub fn render_metrics(self: &Arc<Self>, audit: &AuditLog, now_ms: u64) -> String {
        use std::fmt::Write;
        let quotas: Vec<(String, Quotas)> = {
            let quotas = self.quotas.read().unwrap_or_else(|p| p.into_inner());
            let mut all: Vec<_> = quotas.iter().map(|(t, q)| (t.clone(), q.clone())).collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all
        };
        let mut out = String::from(
            "# HELP sovra_tenant_quota A tenant's quota (tokens per model).\n\
             # TYPE sovra_tenant_quota gauge\n\
             # HELP sovra_tenant_quota_used What a tenant used of its quota this period.\n\
             # TYPE sovra_tenant_quota_used gauge\n",
        );
        let mut line =
            |tenant: &str, quota: &str, model: Option<&str>, limit: u64, used: Option<u64>| {
                let model = model.map_or(String::new(), |m| {
                    format!(",model=\"{}\"", crate::metrics::label(m))
                });
                let labels = format!(
                    "tenant=\"{}\",quota=\"{quota}\"{model}",
                    crate::metrics::label(tenant)
                );
                let _ = writeln!(out, "sovra_tenant_quota{{{labels}}} {limit}");
                if let Some(used) = used {
                    let _ = writeln!(out, "sovra_tenant_quota_used{{{labels}}} {used}");
                }
            };
        for (tenant, quotas) in &quotas {
            if let Some(limit) = quotas.invocations_per_day {
                let used = self.used_today(tenant, audit, now_ms);
                line(tenant, "invocations_per_day", None, limit, Some(used));
            }
            // Seeds the tenant's ledger from the audit log if need be.
            drop(self.token_budget(tenant, audit, now_ms));
            let (day, month) = self.tokens_used(tenant);
            for (model, &limit) in &quotas.tokens_per_day {
                let used = day.get(model).copied().unwrap_or(0);
                line(tenant, "tokens_per_day", Some(model), limit, Some(used));
            }
            for (model, &limit) in &quotas.tokens_per_month {
                let used = month.get(model).copied().unwrap_or(0);
                line(tenant, "tokens_per_month", Some(model), limit, Some(used));
            }
            if let Some(limit) = quotas.storage_bytes {
                line(tenant, "storage_bytes", None, limit, None);
            }
            if let Some(limit) = quotas.vectors {
                line(tenant, "vectors", None, limit, None);
            }
        }
        out
    }
}

/// A tenant's token budget: the book's ledger, charged by the runtime.
#[derive(Debug)]
struct TenantBudget {
    book: Arc<QuotaBook>,
    tenant: String,
}

impl TokenBudget for TenantBudget {
    fn check(&self, model: &str) -> Result<(), String> {
        self.book.over(&self.tenant, model)
    }

    fn charge(&self, model: &str, tokens: u64) -> Result<(), String> {
        self.book.add_tokens(&self.tenant, model, tokens);
        self.book.over(&self.tenant, model)
    }
}

/// The UTC day (`YYYY-MM-DD`) and month (`YYYY-MM`) of `now_ms`.
fn day_and_month(now_ms: u64) -> (String, String) {
    let day = utc_day(now_ms);
    let month = day[..7].to_owned();
    (day, month)
}

/// The first millisecond of the UTC month of `now_ms`.
fn month_start_ms(now_ms: u64) -> u64 {
    let mut start = now_ms / DAY_MS * DAY_MS;
    let month = &utc_day(now_ms)[..7];
    while start >= DAY_MS && utc_day(start - DAY_MS).starts_with(month) {
        start -= DAY_MS;
    }
    start
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
                ..Quotas::default()
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
            storage_bytes: Some(bytes),
            ..Quotas::default()
        };
        assert!(quota(1 << 20).validate(256 << 20).is_ok());
        assert!(quota(1).validate(256 << 20).is_err());
        assert!(quota(1 << 30).validate(256 << 20).is_err());
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;
    use sovra_runtime::ModelUsage;
    use sovra_runtime::audit::AuditRecord;
    use sovra_runtime::sealing::NodeKey;

    #[test]
    fn months_start_on_their_first_day() {
        let day = |d: &str| -> u64 {
            (0..30_000u64)
                .map(|n| n * DAY_MS)
                .find(|&ms| utc_day(ms) == d)
                .unwrap()
        };
        assert_eq!(month_start_ms(day("2026-12-07") + 5_000), day("2026-12-01"));
        assert_eq!(month_start_ms(day("2024-03-01")), day("2024-03-01"));
        assert_eq!(month_start_ms(day("2024-02-29") + 1), day("2024-02-01"));
    }

    #[test]
    fn a_token_budget_counts_the_month_from_the_audit_log_and_stops_at_the_quota() {
        let dir = tempfile::tempdir().unwrap();
        let audit = AuditLog::open(&dir.path().join("audit.db"), &NodeKey::generate()).unwrap();
        let now = 20_431 * DAY_MS + 1_000; // 2025-12-09
        let used = |id: &str, at: u64, tokens: u64| AuditRecord {
            invocation_id: id.into(),
            tenant: "acme".into(),
            agent: "chat".into(),
            agent_digest: String::new(),
            started_at_ms: at,
            duration_us: 1,
            outcome: "ok".into(),
            error: None,
            denials: Vec::new(),
            usage: vec![ModelUsage {
                model: "smollm2".into(),
                prompt_tokens: tokens,
                generated_tokens: tokens,
            }],
            parent: None,
        };
        audit.record(used("earlier", now - 3 * DAY_MS, 30)); // this month
        audit.record(used("today", now - 500, 5));
        let quotas = |day: u64, month: u64| {
            let mut quotas = Quotas::default();
            quotas.tokens_per_day.insert("smollm2".into(), day);
            quotas.tokens_per_month.insert("smollm2".into(), month);
            Arc::new(QuotaBook::new([("acme".to_owned(), quotas)]))
        };
        let book = quotas(50, 1000);
        let budget = book.token_budget("acme", &audit, now).unwrap();
        assert_eq!(book.tokens_used("acme").0["smollm2"], 10);
        assert_eq!(book.tokens_used("acme").1["smollm2"], 70);
        budget.check("smollm2").unwrap();
        budget.check("other").unwrap();
        budget.charge("smollm2", 39).unwrap();
        let over = budget.charge("smollm2", 1).unwrap_err();
        assert!(
            over.contains("50 of its 50 tokens of `smollm2` today"),
            "{over}"
        );
        assert!(budget.check("smollm2").is_err());
        // The next day has a new allowance.
        let tomorrow = book.token_budget("acme", &audit, now + DAY_MS).unwrap();
        tomorrow.check("smollm2").unwrap();
        tomorrow.charge("smollm2", 10).unwrap();
        // The month counts every day of it.
        let book = quotas(1000, 80);
        let budget = book.token_budget("acme", &audit, now).unwrap();
        budget.charge("smollm2", 9).unwrap();
        let over = budget.charge("smollm2", 1).unwrap_err();
        assert!(
            over.contains("80 of its 80 tokens of `smollm2` this month"),
            "{over}"
        );
        assert!(book.token_budget("globex", &audit, now).is_none());
    }
}
