//! Node metrics in the Prometheus text format. `GET /metrics`, open to any
//! scraper that reaches the port, has node-wide figures only: invocation
//! counts by outcome, latency, tokens generated, admissions refused, each
//! model's device and KV cache use. `GET /metrics/tenants` has the same
//! counters per tenant, and needs the operator token: tenant names and their
//! call volumes are the operator's to see, not everyone's.

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
pub(crate) fn label(value: &str) -> String {
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

    /// Records an invocation refused before it ran (`rate`, `concurrency`,
    /// `quota`).
    pub fn refused(&self, tenant: &str, reason: &'static str) {
        *self
            .counters()
            .refused
            .entry((tenant.to_owned(), reason))
            .or_default() += 1;
    }

    /// The node-wide exposition (`GET /metrics`, open to any scraper): the
    /// counters summed over tenants, with `gauges` (name, help, value)
    /// appended. No series names a tenant.
    pub fn render_node(&self, gauges: &[(&str, &str, f64)]) -> String {
        let counters = self.counters();
        let mut invocations: BTreeMap<&str, u64> = BTreeMap::new();
        for ((_, outcome), n) in &counters.invocations {
            *invocations.entry(outcome).or_default() += n;
        }
        let mut latency = Histogram::default();
        for h in counters.latency.values() {
            latency.add(h);
        }
        let tokens: u64 = counters.tokens.values().sum();
        let mut refused: BTreeMap<&str, u64> = BTreeMap::new();
        for ((_, reason), n) in &counters.refused {
            *refused.entry(reason).or_default() += n;
        }
        let mut out = String::new();
        header(
            &mut out,
            "sovra_invocations_total",
            "counter",
            "Invocations by outcome (ok or the error kind).",
        );
        for (outcome, n) in &invocations {
            let _ = writeln!(
                out,
                "sovra_invocations_total{{outcome=\"{}\"}} {n}",
                label(outcome)
            );
        }
        header(
            &mut out,
            "sovra_invocation_duration_seconds",
            "histogram",
            "Invocation latency.",
        );
        latency.write(&mut out, "sovra_invocation_duration_seconds", "");
        header(
            &mut out,
            "sovra_generated_tokens_total",
            "counter",
            "Tokens models generated for agents.",
        );
        let _ = writeln!(out, "sovra_generated_tokens_total {tokens}");
        header(
            &mut out,
            "sovra_invocations_refused_total",
            "counter",
            "Invocations refused before running (rate, concurrency or quota).",
        );
        for (reason, n) in &refused {
            let _ = writeln!(
                out,
                "sovra_invocations_refused_total{{reason=\"{reason}\"}} {n}"
            );
        }
        for (name, help, value) in gauges {
            header(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }

    /// The per-tenant exposition (`GET /metrics/tenants`, operator only):
    /// the same counters labelled by tenant.
    pub fn render_tenants(&self) -> String {
        let counters = self.counters();
        let mut out = String::new();
        header(
            &mut out,
            "sovra_tenant_invocations_total",
            "counter",
            "Invocations by tenant and outcome (ok or the error kind).",
        );
        for ((tenant, outcome), n) in &counters.invocations {
            let _ = writeln!(
                out,
                "sovra_tenant_invocations_total{{tenant=\"{}\",outcome=\"{}\"}} {n}",
                label(tenant),
                label(outcome)
            );
        }
        header(
            &mut out,
            "sovra_tenant_invocation_duration_seconds",
            "histogram",
            "Invocation latency by tenant.",
        );
        for (tenant, h) in &counters.latency {
            h.write(
                &mut out,
                "sovra_tenant_invocation_duration_seconds",
                &format!("tenant=\"{}\"", label(tenant)),
            );
        }
        header(
            &mut out,
            "sovra_tenant_generated_tokens_total",
            "counter",
            "Tokens models generated for each tenant's agents.",
        );
        for (tenant, n) in &counters.tokens {
            let _ = writeln!(
                out,
                "sovra_tenant_generated_tokens_total{{tenant=\"{}\"}} {n}",
                label(tenant)
            );
        }
        header(
            &mut out,
            "sovra_tenant_invocations_refused_total",
            "counter",
            "Invocations refused before running, by tenant (rate, concurrency or quota).",
        );
        for ((tenant, reason), n) in &counters.refused {
            let _ = writeln!(
                out,
                "sovra_tenant_invocations_refused_total{{tenant=\"{}\",reason=\"{reason}\"}} {n}",
                label(tenant)
            );
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

impl Histogram {
    fn add(&mut self, other: &Histogram) {
        for (count, more) in self.counts.iter_mut().zip(other.counts) {
            *count += more;
        }
        self.count += other.count;
        self.sum += other.sum;
    }

    /// Writes the bucket, sum and count lines; `labels` go before `le`.
    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (count, bound) in self.counts.iter().zip(BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = |labels: &str| {
            if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
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
    out
}

/// KV cache each tenant's live sequences have reserved on each model
/// (operator only: it names tenants).
pub fn render_tenant_models(statuses: &[(String, sovra_gpu::ModelStatus)]) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "sovra_tenant_kv_cache_reserved_bytes",
        "gauge",
        "KV cache a tenant's live sequences have reserved on a model (counted against its share).",
    );
    for (name, status) in statuses {
        for (tenant, bytes) in &status.kv_reserved_by_tenant {
            let _ = writeln!(
                out,
                "sovra_tenant_kv_cache_reserved_bytes{{model=\"{}\",tenant=\"{}\"}} {bytes}",
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

    fn statuses() -> Vec<(String, sovra_gpu::ModelStatus)> {
        vec![
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
        ]
    }

    #[test]
    fn renders_each_models_device_and_cache_and_tenant_reservations_apart() {
        let text = render_models(&statuses());
        assert!(text.contains("sovra_model_info{model=\"smollm2\",device=\"cuda:0\"} 1"));
        assert!(text.contains("sovra_model_info{model=\"minilm\",device=\"cpu\"} 1"));
        assert!(
            text.contains("sovra_model_kv_cache_bytes{model=\"smollm2\",state=\"in_use\"} 4096")
        );
        assert!(text.contains(
            "sovra_model_kv_cache_bytes{model=\"smollm2\",state=\"capacity\"} 1073741824"
        ));
        assert!(!text.contains("sovra_model_kv_cache_bytes{model=\"minilm\""));
        assert!(
            !text.contains("acme"),
            "node-wide model figures name no tenant"
        );
        assert!(render_tenant_models(&statuses()).contains(
            "sovra_tenant_kv_cache_reserved_bytes{model=\"smollm2\",tenant=\"acme\"} 8192"
        ));
    }

    #[test]
    fn node_figures_sum_over_tenants_and_name_none() {
        let metrics = Metrics::default();
        metrics.invocation("acme", "ok", Duration::from_millis(3), 5);
        metrics.invocation("globex", "ok", Duration::from_millis(30), 0);
        metrics.invocation("acme", "timeout", Duration::from_secs(2), 0);
        metrics.refused("globex", "rate");
        let text = metrics.render_node(&[("sovra_tenants", "Tenants.", 2.0)]);
        assert!(!text.contains("acme") && !text.contains("globex"), "{text}");
        assert!(text.contains("sovra_invocations_total{outcome=\"ok\"} 2"));
        assert!(text.contains("sovra_invocations_total{outcome=\"timeout\"} 1"));
        assert!(text.contains("sovra_invocation_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("sovra_invocation_duration_seconds_bucket{le=\"0.05\"} 2"));
        assert!(text.contains("sovra_invocation_duration_seconds_count 3"));
        assert!(text.contains("sovra_generated_tokens_total 5"));
        assert!(text.contains("sovra_invocations_refused_total{reason=\"rate\"} 1"));
        assert!(text.contains("# TYPE sovra_tenants gauge\nsovra_tenants 2"));
    }

    #[test]
    fn tenant_figures_are_labelled_and_escaped() {
        let metrics = Metrics::default();
        metrics.invocation("acme", "ok", Duration::from_millis(3), 5);
        metrics.invocation("acme", "ok", Duration::from_millis(30), 0);
        metrics.refused("acme", "rate");
        let text = metrics.render_tenants();
        assert!(text.contains("sovra_tenant_invocations_total{tenant=\"acme\",outcome=\"ok\"} 2"));
        assert!(text.contains(
            "sovra_tenant_invocation_duration_seconds_bucket{tenant=\"acme\",le=\"0.005\"} 1"
        ));
        assert!(text.contains("sovra_tenant_invocation_duration_seconds_count{tenant=\"acme\"} 2"));
        assert!(text.contains("sovra_tenant_generated_tokens_total{tenant=\"acme\"} 5"));
        assert!(
            text.contains(
                "sovra_tenant_invocations_refused_total{tenant=\"acme\",reason=\"rate\"} 1"
            )
        );
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
