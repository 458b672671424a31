//! A lock-free Prometheus histogram for the per-frame delivery lag: atomic bucket counters, so
//! observing from every connection task at once takes no lock.
//!
//! `prometheus_client`'s `Histogram` guards its buckets with one mutex; observed once per frame
//! written (hundreds of thousands a second from every worker thread) that mutex was a hot,
//! contended lock on the fan-out path. This one is encoded exactly like it (cumulative buckets,
//! `_sum`, `_count`), so dashboards and alerts read it unchanged.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric},
};

/// Delivery-lag buckets (seconds): 1 ms … 30 s.
pub const LAG_BUCKETS: [f64; 15] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0];

#[derive(Debug, Default)]
struct Counts {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; LAG_BUCKETS.len() + 1],
    /// Sum of the observations in nanoseconds (585 years of lag before it wraps).
    sum_nanos: AtomicU64,
}

/// Cloning shares the counters (as with `prometheus_client`'s metrics).
#[derive(Debug, Clone, Default)]
pub struct LagHistogram {
    counts: Arc<Counts>,
}

impl LagHistogram {
    pub fn observe(&self, lag: std::time::Duration) {
        let seconds = lag.as_secs_f64();
        let bucket = LAG_BUCKETS.iter().position(|&le| seconds <= le).unwrap_or(LAG_BUCKETS.len());
        self.counts.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX);
        self.counts.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// `(le, count in this bucket alone)` pairs ending with `+Inf` (the encoder accumulates
    /// them, as for `prometheus_client`'s own histogram), and the total count.
    fn snapshot(&self) -> (Vec<(f64, u64)>, u64) {
        let buckets: Vec<(f64, u64)> = self
            .counts
            .buckets
            .iter()
            .enumerate()
            .map(|(i, count)| {
                let le = LAG_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
                (le, count.load(Ordering::Relaxed))
            })
            .collect();
        let total = buckets.iter().map(|(_, count)| count).sum();
        (buckets, total)
    }
}

impl TypedMetric for LagHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LagHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (buckets, count) = self.snapshot();
        let sum = self.counts.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus_client::{encoding::text::encode, registry::Registry};

    use super::*;

    #[test]
    fn encodes_like_a_prometheus_histogram_with_cumulative_buckets() {
        let lag = LagHistogram::default();
        lag.observe(Duration::from_micros(500)); // ≤ 1 ms
        lag.observe(Duration::from_millis(1)); // on the edge: ≤ 1 ms
        lag.observe(Duration::from_millis(30)); // ≤ 50 ms
        lag.observe(Duration::from_secs(60)); // +Inf only
        let mut registry = Registry::default();
        registry.register("lag_seconds", "test", lag.clone());
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "lag_seconds_bucket{le=\"0.001\"} 2",
            "lag_seconds_bucket{le=\"0.025\"} 2",
            "lag_seconds_bucket{le=\"0.05\"} 3",
            "lag_seconds_bucket{le=\"30.0\"} 3",
            "lag_seconds_bucket{le=\"+Inf\"} 4",
            "lag_seconds_count 4",
            "lag_seconds_sum 60.0315",
            "# TYPE lag_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
        }
    }

    #[test]
    fn observations_from_many_threads_all_count() {
        let lag = LagHistogram::default();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let lag = lag.clone();
                scope
                    .spawn(move || (0..10_000).for_each(|_| lag.observe(Duration::from_millis(2))));
            }
        });
        let (buckets, count) = lag.snapshot();
        assert_eq!(count, 40_000);
        assert_eq!(buckets[0], (0.001, 0));
        assert_eq!(buckets[1], (0.0025, 40_000));
        assert_eq!(buckets[2], (0.005, 0));
    }
}
