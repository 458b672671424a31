//! JetStream gauges polled by Courier itself (`courier_jetstream_*`): stream sizes and durable
//! consumer backlogs for `EVENTS`, `TASKS` and `DLQ`, and the task queue per priority (pending,
//! in flight, how long the oldest waiting task has waited), so dashboards and alerts work without
//! a separate NATS exporter. Ephemeral consumers (the broadcasters' ordered ones) are left out: their
//! names are random and would make labels unbounded.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream;
use futures::TryStreamExt;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio_util::sync::CancellationToken;

use crate::{
    subjects::{DLQ_STREAM, EVENTS_STREAM, TASKS_STREAM},
    task::Priority,
    task_queue,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub stream: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    pub stream: String,
    pub consumer: String,
}

/// `priority`: `high`, `normal` or `low` (bounded).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PriorityLabels {
    pub priority: &'static str,
}

#[derive(Debug, Default)]
pub struct JetStreamMetrics {
    pub up: Gauge,
    pub poll_errors: Counter,
    pub stream_messages: Family<StreamLabels, Gauge>,
    pub stream_bytes: Family<StreamLabels, Gauge>,
    /// The stream's `max_bytes` (-1: unbounded): with `stream_bytes`, how full it is.
    pub stream_max_bytes: Family<StreamLabels, Gauge>,
    pub stream_last_seq: Family<StreamLabels, Gauge>,
    pub stream_oldest_age_seconds: Family<StreamLabels, Gauge>,
    pub consumer_pending: Family<ConsumerLabels, Gauge>,
    pub consumer_ack_pending: Family<ConsumerLabels, Gauge>,
    pub consumer_redelivered: Family<ConsumerLabels, Gauge>,
    pub consumer_waiting: Family<ConsumerLabels, Gauge>,
    pub tasks_pending: Family<PriorityLabels, Gauge>,
    pub tasks_in_flight: Family<PriorityLabels, Gauge>,
    pub task_oldest_pending_age_seconds:
        Family<PriorityLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

/// One poll's readings, computed before any gauge changes so a scrape never sees half a poll.
#[derive(Debug, Default, PartialEq)]
struct Reading {
    streams: Vec<(String, StreamReading)>,
    consumers: Vec<(ConsumerLabels, ConsumerReading)>,
    /// By [`Priority::index`]; all zero before `TASKS` exists.
    priorities: [PriorityReading; 3],
}

#[derive(Debug, Default, PartialEq)]
struct PriorityReading {
    pending: u64,
    in_flight: u64,
    oldest_pending_age_seconds: f64,
}

#[derive(Debug, Default, PartialEq)]
struct StreamReading {
    messages: u64,
    bytes: u64,
    max_bytes: i64,
    last_seq: u64,
    oldest_age_seconds: i64,
}

#[derive(Debug, Default, PartialEq)]
struct ConsumerReading {
    pending: u64,
    ack_pending: usize,
    redelivered: usize,
    waiting: usize,
}

fn gauge_value<T: TryInto<i64>>(value: T) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

impl JetStreamMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Self::default();
        registry.register(
            "courier_jetstream_up",
            "1 when the last JetStream poll succeeded",
            m.up.clone(),
        );
        registry.register(
            "courier_jetstream_poll_errors",
            "JetStream polls that failed",
            m.poll_errors.clone(),
        );
        registry.register(
            "courier_jetstream_stream_messages",
            "Messages stored in the stream",
            m.stream_messages.clone(),
        );
        registry.register(
            "courier_jetstream_stream_bytes",
            "Bytes stored in the stream",
            m.stream_bytes.clone(),
        );
        registry.register(
            "courier_jetstream_stream_max_bytes",
            "The stream's byte limit (-1 when unbounded); writes are refused once it is reached",
            m.stream_max_bytes.clone(),
        );
        registry.register(
            "courier_jetstream_stream_last_seq",
            "Last sequence written to the stream",
            m.stream_last_seq.clone(),
        );
        registry.register(
            "courier_jetstream_stream_oldest_age_seconds",
            "Age of the oldest message in the stream (0 when empty)",
            m.stream_oldest_age_seconds.clone(),
        );
        registry.register(
            "courier_jetstream_consumer_pending",
            "Messages not yet delivered to the durable consumer",
            m.consumer_pending.clone(),
        );
        registry.register(
            "courier_jetstream_consumer_ack_pending",
            "Messages delivered and not yet acknowledged",
            m.consumer_ack_pending.clone(),
        );
        registry.register(
            "courier_jetstream_consumer_redelivered",
            "Messages delivered more than once and not yet acknowledged",
            m.consumer_redelivered.clone(),
        );
        registry.register(
            "courier_jetstream_consumer_waiting",
            "Pull requests waiting (idle consumers)",
            m.consumer_waiting.clone(),
        );
        registry.register(
            "courier_jetstream_tasks_pending",
            "Tasks waiting for a worker, by priority",
            m.tasks_pending.clone(),
        );
        registry.register(
            "courier_jetstream_tasks_in_flight",
            "Tasks delivered to a worker and not yet acknowledged, by priority",
            m.tasks_in_flight.clone(),
        );
        registry.register(
            "courier_jetstream_task_oldest_pending_age_seconds",
            "How long the oldest task not yet delivered has waited, by priority (0 when none waits)",
            m.task_oldest_pending_age_seconds.clone(),
        );
        Arc::new(m)
    }

    /// Polls every `interval` until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        js: jetstream::Context,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match tokio::time::timeout(interval.max(Duration::from_secs(2)), read(&js)).await {
                Ok(Ok(reading)) => self.apply(reading),
                Ok(Err(err)) => self.failed(&err.to_string()),
                Err(_) => self.failed("timed out"),
            }
        }
    }

    fn failed(&self, reason: &str) {
        tracing::debug!(reason, "polling JetStream for metrics failed");
        self.up.set(0);
        self.poll_errors.inc();
    }

    fn apply(&self, reading: Reading) {
        self.consumer_pending.clear();
        self.consumer_ack_pending.clear();
        self.consumer_redelivered.clear();
        self.consumer_waiting.clear();
        for (stream, s) in reading.streams {
            let labels = StreamLabels { stream };
            self.stream_messages.get_or_create(&labels).set(gauge_value(s.messages));
            self.stream_bytes.get_or_create(&labels).set(gauge_value(s.bytes));
            self.stream_max_bytes.get_or_create(&labels).set(s.max_bytes);
            self.stream_last_seq.get_or_create(&labels).set(gauge_value(s.last_seq));
            self.stream_oldest_age_seconds.get_or_create(&labels).set(s.oldest_age_seconds);
        }
        for (labels, c) in reading.consumers {
            self.consumer_pending.get_or_create(&labels).set(gauge_value(c.pending));
            self.consumer_ack_pending.get_or_create(&labels).set(gauge_value(c.ack_pending));
            self.consumer_redelivered.get_or_create(&labels).set(gauge_value(c.redelivered));
            self.consumer_waiting.get_or_create(&labels).set(gauge_value(c.waiting));
        }
        for (priority, p) in Priority::ALL.into_iter().zip(reading.priorities) {
            let labels = PriorityLabels { priority: priority.as_str() };
            self.tasks_pending.get_or_create(&labels).set(gauge_value(p.pending));
            self.tasks_in_flight.get_or_create(&labels).set(gauge_value(p.in_flight));
            self.task_oldest_pending_age_seconds
                .get_or_create(&labels)
                .set(p.oldest_pending_age_seconds);
        }
        self.up.set(1);
    }
}

async fn read(js: &jetstream::Context) -> Result<Reading, async_nats::Error> {
    let mut reading = Reading::default();
    let now = std::time::SystemTime::now();
    for name in [EVENTS_STREAM, TASKS_STREAM, DLQ_STREAM] {
        let stream = match js.get_stream(name).await {
            Ok(stream) => stream,
            // Not created yet (services create the streams at start-up): nothing to report.
            Err(err) if matches!(err.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref e) if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        let state = &stream.cached_info().state;
        let oldest_age_seconds = if state.messages == 0 {
            0
        } else {
            now.duration_since(state.first_timestamp.into())
                .map_or(0, |age| gauge_value(age.as_secs()))
        };
        reading.streams.push((
            name.to_owned(),
            StreamReading {
                messages: state.messages,
                bytes: state.bytes,
                max_bytes: stream.cached_info().config.max_bytes,
                last_seq: state.last_sequence,
                oldest_age_seconds,
            },
        ));
        let consumers: Vec<_> = stream.consumers().try_collect().await?;
        for info in consumers.into_iter().filter(|info| info.config.durable_name.is_some()) {
            reading.consumers.push((
                ConsumerLabels { stream: name.to_owned(), consumer: info.name.clone() },
                ConsumerReading {
                    pending: info.num_pending,
                    ack_pending: info.num_ack_pending,
                    redelivered: info.num_redelivered,
                    waiting: info.num_waiting,
                },
            ));
        }
    }
    if let Some(backlog) = task_queue::read_backlog(js, task_queue::Detail::WaitTimes).await? {
        for (lane, reading) in backlog.lanes.iter().zip(&mut reading.priorities) {
            *reading = PriorityReading {
                pending: lane.pending(),
                in_flight: lane.in_flight(),
                oldest_pending_age_seconds: lane.oldest_pending_age(now),
            };
        }
        // Tasks still on legacy subjects are normal ones not yet moved.
        reading.priorities[Priority::Normal.index()].pending += backlog.legacy_queued;
    }
    Ok(reading)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_replaces_the_consumer_series_so_deleted_consumers_disappear() {
        let mut registry = Registry::default();
        let metrics = JetStreamMetrics::register(&mut registry);
        let consumer = |name: &str, pending| {
            (
                ConsumerLabels { stream: "TASKS".into(), consumer: name.into() },
                ConsumerReading { pending, ..Default::default() },
            )
        };
        metrics.apply(Reading {
            streams: vec![(
                "TASKS".into(),
                StreamReading {
                    messages: 7,
                    bytes: 700,
                    max_bytes: 1000,
                    last_seq: 9,
                    oldest_age_seconds: 3,
                },
            )],
            consumers: vec![consumer("workers", 5), consumer("old", 1)],
            priorities: Default::default(),
        });
        let mut priorities: [PriorityReading; 3] = Default::default();
        priorities[0] =
            PriorityReading { pending: 4, in_flight: 1, oldest_pending_age_seconds: 2.5 };
        metrics.apply(Reading {
            streams: vec![],
            consumers: vec![consumer("workers", 2)],
            priorities,
        });
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                r#"courier_jetstream_consumer_pending{stream="TASKS",consumer="workers"} 2"#
            ),
            "{text}"
        );
        assert!(!text.contains(r#"consumer="old""#), "{text}");
        assert!(text.contains(r#"courier_jetstream_stream_messages{stream="TASKS"} 7"#), "{text}");
        assert!(
            text.contains(r#"courier_jetstream_stream_oldest_age_seconds{stream="TASKS"} 3"#),
            "{text}"
        );
        assert!(text.contains(r#"courier_jetstream_stream_max_bytes{stream="TASKS"} 1000"#));
        assert!(text.contains("courier_jetstream_up 1"), "{text}");
        assert!(
            text.contains(r#"courier_jetstream_tasks_pending{priority="high"} 4"#)
                && text.contains(r#"courier_jetstream_tasks_pending{priority="low"} 0"#),
            "every priority has a series: {text}"
        );
        assert!(
            text.contains(
                r#"courier_jetstream_task_oldest_pending_age_seconds{priority="high"} 2.5"#
            ),
            "{text}"
        );
    }
}
