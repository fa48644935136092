//! Per-tenant admission: a token bucket for the invocation rate and a
//! semaphore for invocations in flight, so that one tenant's flood is
//! refused (HTTP 429) instead of slowing every other tenant down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ServerLimits;

/// Why an invocation was not admitted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refusal {
    /// Over the rate; retry after this long.
    Rate(Duration),
    /// As many invocations in flight as allowed.
    Concurrency(u32),
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

struct TenantGate {
    bucket: Mutex<Bucket>,
    in_flight: Arc<Semaphore>,
}

/// Admission for every tenant of the node.
pub struct TenantLimiter {
    limits: ServerLimits,
    gates: Mutex<HashMap<String, Arc<TenantGate>>>,
}

impl std::fmt::Debug for TenantLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantLimiter")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl TenantLimiter {
    pub fn new(limits: ServerLimits) -> Self {
        TenantLimiter {
            limits,
            gates: Mutex::new(HashMap::new()),
        }
    }

    fn gate(&self, tenant: &str) -> Arc<TenantGate> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(gates.entry(tenant.to_owned()).or_insert_with(|| {
            Arc::new(TenantGate {
                bucket: Mutex::new(Bucket {
                    tokens: self.limits.tenant_burst,
                    refilled: Instant::now(),
                }),
                in_flight: Arc::new(Semaphore::new(self.limits.tenant_concurrency as usize)),
            })
        }))
    }

    /// Admits one invocation of `tenant`, or says why not. The permit is
    /// held for as long as the invocation runs.
    pub fn admit(&self, tenant: &str) -> Result<OwnedSemaphorePermit, Refusal> {
        let gate = self.gate(tenant);
        let permit = Arc::clone(&gate.in_flight)
            .try_acquire_owned()
            .map_err(|_| Refusal::Concurrency(self.limits.tenant_concurrency))?;
        let mut bucket = gate.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens =
            (bucket.tokens + elapsed * self.limits.tenant_rate).min(self.limits.tenant_burst);
        bucket.refilled = now;
        if bucket.tokens < 1.0 {
            let wait = (1.0 - bucket.tokens) / self.limits.tenant_rate;
            return Err(Refusal::Rate(Duration::from_secs_f64(wait)));
        }
        bucket.tokens -= 1.0;
        Ok(permit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: f64, burst: f64, concurrency: u32) -> TenantLimiter {
        TenantLimiter::new(ServerLimits {
            tenant_rate: rate,
            tenant_burst: burst,
            tenant_concurrency: concurrency,
            ..ServerLimits::default()
        })
    }

    #[test]
    fn the_burst_passes_then_the_rate_holds_per_tenant() {
        let limiter = limiter(1.0, 3.0, 100);
        for _ in 0..3 {
            drop(limiter.admit("a").unwrap());
        }
        match limiter.admit("a") {
            Err(Refusal::Rate(wait)) => assert!(wait <= Duration::from_secs(1)),
            other => panic!("expected a rate refusal, got {other:?}"),
        }
        // Another tenant is untouched.
        drop(limiter.admit("b").unwrap());
    }

    #[test]
    fn in_flight_invocations_are_capped_and_released() {
        let limiter = limiter(1000.0, 1000.0, 2);
        let first = limiter.admit("a").unwrap();
        let _second = limiter.admit("a").unwrap();
        assert_eq!(limiter.admit("a").unwrap_err(), Refusal::Concurrency(2));
        drop(first);
        assert!(limiter.admit("a").is_ok());
    }
}
