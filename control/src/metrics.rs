//! Episode figures across a node, in the Prometheus text format: episodes
//! by how they ended, ticks, misses, clamped and safe actions, emergency
//! stops, and histograms of tick start jitter and tick duration. No series
//! names a tenant.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::episode::{EpisodeSummary, TickTimes};
use crate::stats::Histogram;

/// Histogram bucket bounds, in microseconds.
const BOUNDS_US: [u64; 12] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000,
];

#[derive(Debug, Default)]
struct Totals {
    by_stop: BTreeMap<&'static str, u64>,
    ticks: u64,
    missed: u64,
    late: u64,
    invalid: u64,
    guest_errors: u64,
    clamped: u64,
    safe: u64,
    emergency_stops: u64,
    jitter: Histogram,
    tick_duration: Histogram,
}

/// Figures of every episode a node ran.
#[derive(Debug, Default)]
pub struct EpisodeMetrics {
    totals: Mutex<Totals>,
}

impl EpisodeMetrics {
    /// Adds one finished episode.
    pub fn record(&self, summary: &EpisodeSummary, times: &TickTimes) {
        let mut totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        *totals.by_stop.entry(summary.stop.kind()).or_default() += 1;
        totals.ticks += summary.ticks;
        totals.missed += summary.missed_ticks;
        totals.late += summary.late_ticks;
        totals.invalid += summary.invalid_actions;
        totals.guest_errors += summary.guest_errors;
        totals.clamped += summary.clamped_actions;
        totals.safe += summary.safe_actions;
        totals.emergency_stops += summary.emergency_stops;
        totals.jitter.merge(&times.jitter);
        totals.tick_duration.merge(&times.tick_duration);
    }

    /// The exposition, with `live` episodes running now.
    pub fn render(&self, live: usize) -> String {
        let totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let header = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        header(
            &mut out,
            "sovra_episodes_live",
            "gauge",
            "Controller episodes running now.",
        );
        let _ = writeln!(out, "sovra_episodes_live {live}");
        header(
            &mut out,
            "sovra_episodes_total",
            "counter",
            "Finished controller episodes by how they ended.",
        );
        for (stop, n) in &totals.by_stop {
            let _ = writeln!(out, "sovra_episodes_total{{stop=\"{stop}\"}} {n}");
        }
        for (name, help, value) in [
            ("sovra_episode_ticks_total", "Ticks run.", totals.ticks),
            (
                "sovra_episode_deadline_misses_total",
                "Ticks whose actions came too late.",
                totals.missed,
            ),
            (
                "sovra_episode_late_ticks_total",
                "Ticks the node started after their deadline (it was stalled); the last command held.",
                totals.late,
            ),
            (
                "sovra_episode_invalid_actions_total",
                "Ticks whose actions were unusable (NaN, infinite, wrongly sized).",
                totals.invalid,
            ),
            (
                "sovra_episode_guest_errors_total",
                "Ticks on which the controller returned an error.",
                totals.guest_errors,
            ),
            (
                "sovra_episode_clamped_actions_total",
                "Action values clamped into their actuator's range.",
                totals.clamped,
            ),
            (
                "sovra_episode_safe_actions_total",
                "Ticks given the world's safe action instead of the controller's.",
                totals.safe,
            ),
            (
                "sovra_episode_emergency_stops_total",
                "Emergency stops controllers asked for.",
                totals.emergency_stops,
            ),
        ] {
            header(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {value}");
        }
        for (name, help, histogram) in [
            (
                "sovra_episode_tick_jitter_seconds",
                "How late each tick started after it was due.",
                &totals.jitter,
            ),
            (
                "sovra_episode_tick_duration_seconds",
                "How long each tick took, sensors to world advanced.",
                &totals.tick_duration,
            ),
        ] {
            header(&mut out, name, "histogram", help);
            for (bound, count) in histogram.cumulative(&BOUNDS_US) {
                let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", histogram.count());
            let _ = writeln!(out, "{name}_sum {}", histogram.sum().as_secs_f64());
            let _ = writeln!(out, "{name}_count {}", histogram.count());
        }
        out
    }
}
