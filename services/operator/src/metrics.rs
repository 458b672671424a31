//! The operator's Prometheus metrics: reconciliations, errors by kind, reconcile duration (a
//! Drop timer), desired worker replicas, task backlog, scale decisions and leadership.

use std::time::Instant;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CourierLabels {
    pub namespace: String,
    pub courier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScaleLabels {
    pub namespace: String,
    pub courier: String,
    /// `up` or `down`.
    pub direction: &'static str,
}

type HistogramFamily = Family<ControllerLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    pub reconciliations: Family<ControllerLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: HistogramFamily,
    pub desired_workers: Family<CourierLabels, Gauge>,
    pub backlog: Family<CourierLabels, Gauge>,
    pub scale_decisions: Family<ScaleLabels, Counter>,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
}

fn duration_histogram() -> Histogram {
    // 1 ms … ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    /// Creates the metrics and registers them under the `courier_operator` prefix.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Metrics {
            reconciliations: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            desired_workers: Family::default(),
            backlog: Family::default(),
            scale_decisions: Family::default(),
            leader: Gauge::default(),
        };
        let registry = registry.sub_registry_with_prefix("courier_operator");
        registry.register(
            "reconciliations",
            "Reconciliations started",
            metrics.reconciliations.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, by error kind",
            metrics.errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            metrics.duration.clone(),
        );
        registry.register(
            "worker_desired_replicas",
            "Worker replicas the operator wants",
            metrics.desired_workers.clone(),
        );
        registry.register(
            "task_backlog",
            "Pending plus in-flight tasks on the workers consumer",
            metrics.backlog.clone(),
        );
        registry.register(
            "scale_decisions",
            "Worker replica changes made by the autoscaler",
            metrics.scale_decisions.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            metrics.leader.clone(),
        );
        metrics
    }

    /// Counts a reconciliation and measures it until the returned timer is dropped.
    pub fn reconcile_started(&self, controller: &'static str) -> ReconcileTimer {
        self.reconciliations.get_or_create(&ControllerLabels { controller }).inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.duration.get_or_create(&ControllerLabels { controller }).clone(),
        }
    }

    pub fn reconcile_failed(&self, controller: &'static str, error: &crate::Error) {
        self.errors.get_or_create(&ErrorLabels { controller, kind: error.kind() }).inc();
    }
}

/// Observes the elapsed time into the reconcile-duration histogram when dropped, so every exit
/// path (including `?`) is measured.
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_observes_on_drop_and_errors_are_labelled_by_kind() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        {
            let _timer = metrics.reconcile_started("courier");
        }
        metrics.reconcile_failed(
            "courier",
            &crate::Error::Backlog { url: "nats://x".into(), message: "down".into() },
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("courier_operator_reconciliations_total{controller=\"courier\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "courier_operator_reconcile_duration_seconds_count{controller=\"courier\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "courier_operator_reconcile_errors_total{controller=\"courier\",kind=\"backlog\"} 1"
            ),
            "{text}"
        );
    }
}
