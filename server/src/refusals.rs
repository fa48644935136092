//! Refusals in the audit log: every request the node answers 401, 403 or
//! 429 is recorded in the hash chain of the tenant its path names (`_node`
//! for routes that name none), with the route, the status and the error
//! code, never the credential presented. A flood of refusals is recorded
//! up to a rate and counted beyond it, so that it cannot fill the disk.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::http::{Method, StatusCode};
use sovra_runtime::TenantId;
use sovra_runtime::audit::{AuditLog, AuditRecord};
use sovra_runtime::guest_text::escape_controls;

use crate::db::now_ms;

/// Refusals recorded per second, at most (and the burst).
/// Stops: a flood of bad keys writing the audit log without bound.
pub const MAX_AUDITED_REFUSALS_PER_SECOND: f64 = 200.0;

/// Chain of refusals on routes that name no tenant.
pub const NODE_CHAIN: &str = "_node";

/// Longest path kept in a refusal record. Stops: huge paths in the log.
const MAX_RECORDED_PATH: usize = 256;

/// The error code of an error response, for the refusal's record.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode {
    pub code: &'static str,
    /// The response is an invocation's failure, audited as the invocation.
    pub invocation: bool,
}

/// Records refusals, within the rate.
#[derive(Debug)]
pub struct RefusalAudit {
    bucket: Mutex<(f64, Instant)>,
    recorded: AtomicU64,
    /// Refusals beyond the rate, not recorded.
    pub suppressed: AtomicU64,
    started_ms: u64,
}

impl Default for RefusalAudit {
    fn default() -> Self {
        RefusalAudit {
            bucket: Mutex::new((MAX_AUDITED_REFUSALS_PER_SECOND, Instant::now())),
            recorded: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            started_ms: now_ms() as u64,
        }
    }
}

/// The tenant a path names (`/v1/tenants/{tenant}/...`), if a valid one.
fn tenant_of(path: &str) -> Option<TenantId> {
    let rest = path.strip_prefix("/v1/tenants/")?;
    let name = rest.split('/').next()?;
    TenantId::new(name).ok()
}

impl RefusalAudit {
    fn admit(&self) -> bool {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, refilled) = &mut *bucket;
        let now = Instant::now();
        *tokens = (*tokens
            + now.duration_since(*refilled).as_secs_f64() * MAX_AUDITED_REFUSALS_PER_SECOND)
            .min(MAX_AUDITED_REFUSALS_PER_SECOND);
        *refilled = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Records one refusal, if it is one and within the rate.
    pub fn record(
        &self,
        audit: &AuditLog,
        request: (&Method, &str),
        status: StatusCode,
        code: Option<ErrorCode>,
        started: (i64, Instant),
    ) {
        if !matches!(status.as_u16(), 401 | 403 | 429) || code.is_some_and(|c| c.invocation) {
            return;
        }
        if !self.admit() {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let (method, path) = request;
        let mut shown = escape_controls(path).into_owned();
        if shown.len() > MAX_RECORDED_PATH {
            let mut end = MAX_RECORDED_PATH;
            while !shown.is_char_boundary(end) {
                end -= 1;
            }
            shown.truncate(end);
        }
        let n = self.recorded.fetch_add(1, Ordering::Relaxed);
        let code = code.map_or("refused", |c| c.code);
        audit.record(AuditRecord {
            invocation_id: format!("refusal-{:x}-{n}", self.started_ms),
            tenant: tenant_of(path).map_or_else(|| NODE_CHAIN.to_owned(), |t| t.to_string()),
            agent: "http".into(),
            agent_digest: String::new(),
            started_at_ms: started.0.max(0) as u64,
            duration_us: started.1.elapsed().as_micros() as u64,
            outcome: format!("refused-{}", status.as_u16()),
            error: Some(format!("{} {code}: {method} {shown}", status.as_u16())),
            denials: Vec::new(),
            usage: Vec::new(),
            parent: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_names_the_chain_and_floods_are_capped() {
        assert_eq!(
            tenant_of("/v1/tenants/acme/installs/x").unwrap().as_str(),
            "acme"
        );
        assert!(tenant_of("/v1/tenants/../etc").is_none());
        assert!(tenant_of("/v1/plugins").is_none());
        let refusals = RefusalAudit::default();
        let admitted = (0..1000).filter(|_| refusals.admit()).count();
        assert!(
            (200..=205).contains(&admitted),
            "{admitted} admitted at once"
        );
    }
}
