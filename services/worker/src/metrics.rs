//! The worker's Prometheus metrics (`courier_tasks_*`), labelled by task kind and priority (both
//! bounded: the kinds this worker handles, plus `unknown`, and three priorities).

use std::{sync::Arc, time::Duration};

use courier_core::Priority;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
    pub priority: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PriorityLabel {
    pub priority: &'static str,
}

#[derive(Debug)]
pub struct WorkerMetrics {
    pub processed: Family<KindLabel, Counter>,
    pub failed: Family<KindLabel, Counter>,
    pub retried: Family<KindLabel, Counter>,
    pub dead_lettered: Family<KindLabel, Counter>,
    pub duration: Family<KindLabel, Histogram>,
    /// From enqueue to the first delivery's start, by priority.
    pub wait: Family<PriorityLabel, Histogram>,
    pub in_flight: Family<PriorityLabel, Gauge>,
}

impl WorkerMetrics {
    /// Registers the metrics; `kinds` (the handled task kinds) start at 0 at every priority, so a
    /// rate or an alert sees their first failure.
    pub fn register(registry: &mut Registry, kinds: &[&str]) -> Arc<Self> {
        let m = WorkerMetrics {
            processed: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
            }),
            wait: Family::new_with_constructor(|| {
                Histogram::new([
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0,
                ])
            }),
            in_flight: Family::default(),
        };
        for priority in Priority::ALL {
            for kind in kinds {
                let label = Self::label(kind, priority);
                for family in [&m.processed, &m.failed, &m.retried, &m.dead_lettered] {
                    let _ = family.get_or_create(&label);
                }
                let _ = m.duration.get_or_create(&label);
            }
            let _ = m.wait.get_or_create(&Self::priority(priority));
            let _ = m.in_flight.get_or_create(&Self::priority(priority));
        }
        registry.register("courier_tasks_processed", "Tasks completed", m.processed.clone());
        registry.register("courier_tasks_failed", "Task attempts that failed", m.failed.clone());
        registry.register(
            "courier_tasks_retried",
            "Tasks scheduled for a retry",
            m.retried.clone(),
        );
        registry.register(
            "courier_tasks_dead_lettered",
            "Tasks moved to the DLQ stream",
            m.dead_lettered.clone(),
        );
        registry.register(
            "courier_task_duration_seconds",
            "Task processing time",
            m.duration.clone(),
        );
        registry.register(
            "courier_task_wait_seconds",
            "Time from enqueue (or, for a scheduled task, its release) to the start of its first delivery",
            m.wait.clone(),
        );
        registry.register(
            "courier_tasks_in_flight",
            "Tasks being processed now",
            m.in_flight.clone(),
        );
        Arc::new(m)
    }

    fn label(kind: &str, priority: Priority) -> KindLabel {
        KindLabel { kind: kind.to_owned(), priority: priority.as_str() }
    }

    fn priority(priority: Priority) -> PriorityLabel {
        PriorityLabel { priority: priority.as_str() }
    }

    pub fn processed(&self, kind: &str, priority: Priority) {
        self.processed.get_or_create(&Self::label(kind, priority)).inc();
    }

    pub fn retried(&self, kind: &str, priority: Priority) {
        self.failed.get_or_create(&Self::label(kind, priority)).inc();
        self.retried.get_or_create(&Self::label(kind, priority)).inc();
    }

    pub fn dead_lettered(&self, kind: &str, priority: Priority) {
        self.failed.get_or_create(&Self::label(kind, priority)).inc();
        self.dead_lettered.get_or_create(&Self::label(kind, priority)).inc();
    }

    pub fn observe_duration(&self, kind: &str, priority: Priority, elapsed: Duration) {
        self.duration.get_or_create(&Self::label(kind, priority)).observe(elapsed.as_secs_f64());
    }

    pub fn observe_wait(&self, priority: Priority, waited: Duration) {
        self.wait.get_or_create(&Self::priority(priority)).observe(waited.as_secs_f64());
    }

    /// The in-flight gauge of `priority`'s tasks.
    pub fn in_flight(&self, priority: Priority) -> Gauge {
        self.in_flight.get_or_create(&Self::priority(priority)).clone()
    }
}
