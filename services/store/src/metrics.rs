//! The outbox's Prometheus metrics (`courier_outbox_*`, `courier_events_published`).

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

#[derive(Debug, Default)]
pub struct OutboxMetrics {
    /// Events JetStream acknowledged (fast path and relay).
    pub events_published: Counter,
    /// Publish attempts that failed (left for the relay).
    pub publish_failures: Counter,
    /// Events published by the relay rather than the fast path.
    pub relay_republished: Counter,
    /// Outbox records seen waiting by the last relay round.
    pub outbox_pending: Gauge,
    /// Age of the oldest waiting outbox record at the last relay round, in seconds.
    pub outbox_oldest_age_seconds: Gauge,
    /// Outbox records waiting, counted up to just above `COURIER_OUTBOX_MAX_PENDING`.
    pub outbox_backlog: Gauge,
}

impl OutboxMetrics {
    pub fn register(registry: &mut Registry) -> std::sync::Arc<Self> {
        let metrics = Self::default();
        registry.register(
            "courier_events_published",
            "Events acknowledged by JetStream",
            metrics.events_published.clone(),
        );
        registry.register(
            "courier_outbox_publish_failures",
            "Outbox publishes that failed and were left to the relay",
            metrics.publish_failures.clone(),
        );
        registry.register(
            "courier_outbox_relay_republished",
            "Events published by the outbox relay",
            metrics.relay_republished.clone(),
        );
        registry.register(
            "courier_outbox_pending",
            "Outbox records waiting at the last relay round",
            metrics.outbox_pending.clone(),
        );
        registry.register(
            "courier_outbox_oldest_age_seconds",
            "Age of the oldest waiting outbox record",
            metrics.outbox_oldest_age_seconds.clone(),
        );
        registry.register(
            "courier_outbox_backlog",
            "Outbox records waiting (counted up to just above COURIER_OUTBOX_MAX_PENDING); over it, writes are refused",
            metrics.outbox_backlog.clone(),
        );
        std::sync::Arc::new(metrics)
    }

    pub fn observe_outbox_backlog(&self, batch: &[crate::outbox::OutboxRecord]) {
        self.outbox_pending.set(batch.len() as i64);
        let oldest = batch.first().map_or(0, |r| {
            (mongodb::bson::DateTime::now().timestamp_millis() - r.created_at.timestamp_millis())
                / 1000
        });
        self.outbox_oldest_age_seconds.set(oldest);
    }
}
