//! Tick-time histograms: constant memory however long the episode, exact
//! to the microsecond below 128 µs and within 1/16 above.

use std::time::Duration;

use serde::Serialize;

/// Exact one-microsecond buckets below this many microseconds.
const LINEAR_MICROS: u64 = 128;
/// Buckets per power of two above it.
const SUB_BUCKETS: u64 = 16;
/// Powers of two covered above the linear range (up to about 2^40 µs).
const OCTAVES: u64 = 33;

/// A histogram of durations.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: Duration,
    sum: Duration,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; (LINEAR_MICROS + OCTAVES * SUB_BUCKETS) as usize],
            total: 0,
            max: Duration::ZERO,
            sum: Duration::ZERO,
        }
    }
}

/// The figures of a histogram an episode summary reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Histogram {
    pub fn record(&mut self, value: Duration) {
        let index = Self::bucket(value.as_micros() as u64).min(self.counts.len() - 1);
        self.counts[index] += 1;
        self.total += 1;
        self.max = self.max.max(value);
        self.sum += value;
    }

    fn bucket(micros: u64) -> usize {
        if micros < LINEAR_MICROS {
            return micros as usize;
        }
        let octave = u64::from(63 - micros.leading_zeros()); // >= 7
        let sub = (micros >> (octave - 4)) & (SUB_BUCKETS - 1);
        (LINEAR_MICROS + (octave - 7) * SUB_BUCKETS + sub) as usize
    }

    /// The largest value a bucket holds, in microseconds.
    fn bucket_top(index: usize) -> u64 {
        let index = index as u64;
        if index < LINEAR_MICROS {
            return index;
        }
        let octave = (index - LINEAR_MICROS) / SUB_BUCKETS + 7;
        let sub = (index - LINEAR_MICROS) % SUB_BUCKETS;
        let width = 1u64 << (octave - 4);
        (SUB_BUCKETS + sub) * width + width - 1
    }

    /// The value below which `quantile` of the samples lie (an upper bound
    /// within the bucket's width, never above the largest sample).
    pub fn quantile(&self, quantile: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((quantile * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::bucket_top(index).min(self.max.as_micros() as u64);
            }
        }
        self.max.as_micros() as u64
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn summary(&self) -> Percentiles {
        Percentiles {
            count: self.total,
            p50_us: self.quantile(0.50),
            p99_us: self.quantile(0.99),
            max_us: self.max.as_micros() as u64,
            mean_us: if self.total == 0 {
                0.0
            } else {
                self.sum.as_secs_f64() * 1e6 / self.total as f64
            },
        }
    }

    /// Adds `other`'s samples (node-wide metrics gather episodes).
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// `(upper bound in seconds, cumulative count)` for the given bounds,
    /// as a Prometheus histogram reports them.
    pub fn cumulative(&self, bounds_us: &[u64]) -> Vec<(f64, u64)> {
        bounds_us
            .iter()
            .map(|&bound| {
                let count = self
                    .counts
                    .iter()
                    .enumerate()
                    .take_while(|(index, _)| Self::bucket_top(*index) <= bound)
                    .map(|(_, count)| count)
                    .sum();
                (bound as f64 / 1e6, count)
            })
            .collect()
    }

    pub fn sum(&self) -> Duration {
        self.sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_exact_below_128_us_and_close_above() {
        let mut histogram = Histogram::default();
        for micros in 1..=100 {
            histogram.record(Duration::from_micros(micros));
        }
        assert_eq!(histogram.quantile(0.5), 50);
        assert_eq!(histogram.quantile(0.99), 99);
        assert_eq!(histogram.summary().max_us, 100);
        let mut histogram = Histogram::default();
        for micros in [1_000u64, 5_000, 20_000, 1_000_000] {
            histogram.record(Duration::from_micros(micros));
            let top = histogram.quantile(1.0);
            assert!(
                top >= micros && top <= micros + micros / 16,
                "{micros}: {top}"
            );
        }
        for index in 0..histogram.counts.len() - 1 {
            assert!(Histogram::bucket_top(index) < Histogram::bucket_top(index + 1));
            let top = Histogram::bucket_top(index);
            assert_eq!(Histogram::bucket(top), index, "{index}");
        }
    }

    #[test]
    fn merging_adds_samples() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        a.record(Duration::from_micros(10));
        b.record(Duration::from_micros(30));
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert_eq!(a.summary().max_us, 30);
        assert_eq!(a.cumulative(&[20, 40]), vec![(20e-6, 1), (40e-6, 2)]);
    }
}
