//! Node metrics in the Prometheus text format (`GET /metrics`): per-tenant
//! invocation counts by outcome, latency histograms, tokens generated and
//! admissions refused; and each model's device and KV cache use.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Counters {
    invocations: BTreeMap<(String, String), u64>,
    latency: BTreeMap<String, Histogram>,
    tokens: BTreeMap<String, u64>,
    refused: BTreeMap<(String, &'static str), u64>,
}

/// The node's counters.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Escapes a label value (`\`, `"` and newlines).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one finished invocation.
    pub fn invocation(&self, tenant: &str, outcome: &str, duration: Duration, tokens: u64) {
        let mut counters = self.counters();
        *counters
            .invocations
            .entry((tenant.to_owned(), outcome.to_owned()))
            .or_default() += 1;
        let seconds = duration.as_secs_f64();
        let histogram = counters.latency.entry(tenant.to_owned()).or_default();
        for (count, bound) in histogram.counts.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
        if tokens > 0 {
            *counters.tokens.entry(tenant.to_owned()).or_default() += tokens;
        }
    }

    /// Records an invocation refused before it ran (`rate`, `concurrency`).
    pub fn refused(&self, tenant: &str, reason: &'static str) {
        *self
            .counters()
            .refused
            .entry((tenant.to_owned(), reason))
            .or_default() += 1;
    }

    /// The text exposition, with `gauges` (name, help, value) appended.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let counters = self.counters();
        let mut out = String::new();
        out.push_str("# HELP sovra_invocations_total Invocations by tenant and outcome (ok or the error kind).\n");
        out.push_str("# TYPE sovra_invocations_total counter\n");
        for ((tenant, outcome), n) in &counters.invocations {
            let _ = writeln!(
                out,
                "sovra_invocations_total{{tenant=\"{}\",outcome=\"{}\"}} {n}",
                label(tenant),
                label(outcome)
            );
        }
        out.push_str("# HELP sovra_invocation_duration_seconds Invocation latency by tenant.\n");
        out.push_str("# TYPE sovra_invocation_duration_seconds histogram\n");
        for (tenant, h) in &counters.latency {
            let tenant = label(tenant);
            for (count, bound) in h.counts.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "sovra_invocation_duration_seconds_bucket{{tenant=\"{tenant}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "sovra_invocation_duration_seconds_bucket{{tenant=\"{tenant}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "sovra_invocation_duration_seconds_sum{{tenant=\"{tenant}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "sovra_invocation_duration_seconds_count{{tenant=\"{tenant}\"}} {}",
                h.count
            );
        }
        out.push_str("# HELP sovra_generated_tokens_total Tokens models generated for each tenant's agents.\n");
        out.push_str("# TYPE sovra_generated_tokens_total counter\n");
        for (tenant, n) in &counters.tokens {
            let _ = writeln!(
                out,
                "sovra_generated_tokens_total{{tenant=\"{}\"}} {n}",
                label(tenant)
            );
        }
        out.push_str("# HELP sovra_invocations_refused_total Invocations refused before running (rate or concurrency).\n");
        out.push_str("# TYPE sovra_invocations_refused_total counter\n");
        for ((tenant, reason), n) in &counters.refused {
            let _ = writeln!(
                out,
                "sovra_invocations_refused_total{{tenant=\"{}\",reason=\"{reason}\"}} {n}",
                label(tenant)
            );
        }
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

/// Each model's device and the KV cache its live sequences hold, against
/// its budget (models without a cache report only their device).
pub fn render_models(statuses: &[(String, sovra_gpu::ModelStatus)]) -> String {
    let mut out = String::new();
    out.push_str("# HELP sovra_model_info A model this node serves, and where it runs.\n");
    out.push_str("# TYPE sovra_model_info gauge\n");
    for (name, status) in statuses {
        let _ = writeln!(
            out,
            "sovra_model_info{{model=\"{}\",device=\"{}\"}} 1",
            label(name),
            label(&status.device)
        );
    }
    out.push_str("# HELP sovra_model_kv_cache_bytes KV cache of a text model: held by live sequences, and its budget.\n");
    out.push_str("# TYPE sovra_model_kv_cache_bytes gauge\n");
    for (name, status) in statuses {
        if let Some((in_use, capacity)) = status.kv_cache {
            for (state, bytes) in [("in_use", in_use), ("capacity", capacity)] {
                let _ = writeln!(
                    out,
                    "sovra_model_kv_cache_bytes{{model=\"{}\",state=\"{state}\"}} {bytes}",
                    label(name)
                );
            }
        }
    }
    out.push_str("# HELP sovra_model_kv_cache_reserved_bytes KV cache a tenant's live sequences have reserved on a model (counted against its share).\n");
    out.push_str("# TYPE sovra_model_kv_cache_reserved_bytes gauge\n");
    for (name, status) in statuses {
        for (tenant, bytes) in &status.kv_reserved_by_tenant {
            let _ = writeln!(
                out,
                "sovra_model_kv_cache_reserved_bytes{{model=\"{}\",tenant=\"{}\"}} {bytes}",
                label(name),
                label(tenant)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_models_device_and_cache() {
        let text = render_models(&[
            (
                "smollm2".into(),
                sovra_gpu::ModelStatus {
                    device: "cuda:0".into(),
                    kv_cache: Some((4096, 1 << 30)),
                    kv_reserved_by_tenant: vec![("acme".into(), 8192)],
                },
            ),
            (
                "minilm".into(),
                sovra_gpu::ModelStatus {
                    device: "cpu".into(),
                    kv_cache: None,
                    kv_reserved_by_tenant: Vec::new(),
                },
            ),
        ]);
        assert!(text.contains("sovra_model_info{model=\"smollm2\",device=\"cuda:0\"} 1"));
        assert!(text.contains("sovra_model_info{model=\"minilm\",device=\"cpu\"} 1"));
        assert!(
            text.contains("sovra_model_kv_cache_bytes{model=\"smollm2\",state=\"in_use\"} 4096")
        );
        assert!(text.contains(
            "sovra_model_kv_cache_bytes{model=\"smollm2\",state=\"capacity\"} 1073741824"
        ));
        assert!(!text.contains("sovra_model_kv_cache_bytes{model=\"minilm\""));
        assert!(text.contains(
            "sovra_model_kv_cache_reserved_bytes{model=\"smollm2\",tenant=\"acme\"} 8192"
        ));
    }

    #[test]
    fn renders_counters_histograms_and_escaped_labels() {
        let metrics = Metrics::default();
        metrics.invocation("acme", "ok", Duration::from_millis(3), 5);
        metrics.invocation("acme", "ok", Duration::from_millis(30), 0);
        metrics.invocation("acme", "timeout", Duration::from_secs(2), 0);
        metrics.refused("acme", "rate");
        let text = metrics.render(&[("sovra_tenants", "Tenants.", 1.0)]);
        assert!(text.contains("sovra_invocations_total{tenant=\"acme\",outcome=\"ok\"} 2"));
        assert!(text.contains("sovra_invocations_total{tenant=\"acme\",outcome=\"timeout\"} 1"));
        assert!(
            text.contains(
                "sovra_invocation_duration_seconds_bucket{tenant=\"acme\",le=\"0.005\"} 1"
            )
        );
        assert!(
            text.contains(
                "sovra_invocation_duration_seconds_bucket{tenant=\"acme\",le=\"0.05\"} 2"
            )
        );
        assert!(text.contains("sovra_invocation_duration_seconds_count{tenant=\"acme\"} 3"));
        assert!(text.contains("sovra_generated_tokens_total{tenant=\"acme\"} 5"));
        assert!(
            text.contains("sovra_invocations_refused_total{tenant=\"acme\",reason=\"rate\"} 1")
        );
        assert!(text.contains("# TYPE sovra_tenants gauge\nsovra_tenants 1"));
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
