//! The task queue's state as JetStream holds it, read one way for every reader (the api's queue
//! endpoint and metrics, the operator's autoscaler, the tests): per priority, the `workers-<p>`
//! consumer's counts, the tasks on its subjects and how long the oldest undelivered one has been
//! waiting; plus tasks still on the legacy `tasks.<kind>` subjects, and tasks waiting for
//! external workers on `tasks.external.<kind>` (not the built-in workers' backlog).

use std::{collections::BTreeMap, time::SystemTime};

use async_nats::jetstream::{
    self,
    context::{ConsumerInfoErrorKind, GetStreamErrorKind},
    stream::{RawMessageErrorKind, Stream},
};
use futures::TryStreamExt;

use crate::{
    subjects::{
        LEGACY_WORKERS_CONSUMER, TASKS_ALL, TASKS_STREAM, parse_task_subject,
        priority_tasks_filter, workers_consumer,
    },
    task::Priority,
};

/// One durable consumer's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConsumerCounts {
    /// Not yet delivered.
    pub pending: u64,
    /// Delivered, not yet acknowledged (being processed, or waiting for a retry delay).
    pub in_flight: u64,
    /// Among `in_flight`, delivered more than once.
    pub redelivered: u64,
    /// Pull requests waiting at the server.
    pub waiting: u64,
    /// Deliveries so far (the consumer sequence).
    pub deliveries: u64,
    /// The stream sequence of the last message delivered.
    delivered_stream_seq: u64,
}

/// One priority's line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lane {
    /// `None` until a worker has created `workers-<priority>`.
    pub consumer: Option<ConsumerCounts>,
    /// Tasks in `TASKS` on this priority's subjects (pending plus in flight).
    pub queued: u64,
    /// When the oldest task not yet delivered was enqueued.
    pub oldest_pending: Option<SystemTime>,
}

impl Lane {
    /// Waiting for a worker: the consumer's pending count, or every queued task before a worker
    /// has attached.
    pub fn pending(&self) -> u64 {
        self.consumer.map_or(self.queued, |c| c.pending)
    }

    pub fn in_flight(&self) -> u64 {
        self.consumer.map_or(0, |c| c.in_flight)
    }

    /// Seconds the oldest undelivered task has waited at `now` (0 when none waits).
    pub fn oldest_pending_age(&self, now: SystemTime) -> f64 {
        self.oldest_pending
            .and_then(|at| now.duration_since(at).ok())
            .map_or(0.0, |age| age.as_secs_f64())
    }
}

/// The whole queue at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskBacklog {
    /// By [`Priority::index`].
    pub lanes: [Lane; 3],
    /// Tasks still on legacy `tasks.<kind>` subjects: the api moves them to `tasks.normal.<kind>`.
    pub legacy_queued: u64,
    /// Tasks on `tasks.external.<kind>`, for workers outside Courier: in no line, and not in
    /// [`TaskBacklog::total`] (the built-in workers never take them).
    pub external_queued: u64,
    /// The legacy `workers` consumer, while it still exists (an old worker is running).
    pub legacy_consumer: Option<ConsumerCounts>,
    /// Tasks in `TASKS` by kind, every priority together.
    pub queued_by_kind: BTreeMap<String, u64>,
    /// Tasks in `TASKS` by kind and priority.
    pub queued_by_priority_kind: BTreeMap<(Priority, String), u64>,
    /// Messages in `TASKS` now.
    pub messages: u64,
    /// The sequence of the newest message ever stored in `TASKS`.
    pub last_sequence: u64,
}

impl TaskBacklog {
    pub fn lane(&self, priority: Priority) -> &Lane {
        &self.lanes[priority.index()]
    }

    /// Every task not yet acknowledged, whatever its priority: pending plus in flight in each
    /// line, plus tasks waiting to be moved off the legacy subjects.
    pub fn total(&self) -> u64 {
        self.lanes
            .iter()
            .map(|lane| lane.pending().saturating_add(lane.in_flight()))
            .fold(self.legacy_queued, u64::saturating_add)
    }
}

/// How much [`read_backlog`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Counts only (stream and consumer info).
    Counts,
    /// Also each priority's [`Lane::oldest_pending`] (one message read per waiting priority).
    WaitTimes,
}

/// Reads the queue; `Ok(None)` when `TASKS` does not exist yet.
pub async fn read_backlog(
    js: &jetstream::Context,
    detail: Detail,
) -> Result<Option<TaskBacklog>, async_nats::Error> {
    let mut stream = match js.get_stream(TASKS_STREAM).await {
        Ok(stream) => stream,
        Err(err) if matches!(err.kind(), GetStreamErrorKind::JetStream(ref e) if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            return Ok(None);
        }
        Err(err) => return Err(err.into()),
    };
    let state = stream.info().await?.state.clone();
    let mut backlog = TaskBacklog {
        messages: state.messages,
        last_sequence: state.last_sequence,
        ..Default::default()
    };
    let mut by_subject = stream.info_with_subjects(TASKS_ALL).await?;
    while let Some((subject, count)) = by_subject.try_next().await? {
        let count = count as u64;
        let Some(parsed) = parse_task_subject(&subject) else { continue };
        *backlog.queued_by_kind.entry(parsed.kind.to_owned()).or_default() += count;
        if parsed.external {
            backlog.external_queued += count;
            continue;
        }
        if parsed.legacy {
            backlog.legacy_queued += count;
        } else {
            backlog.lanes[parsed.priority.index()].queued += count;
        }
        *backlog
            .queued_by_priority_kind
            .entry((parsed.priority, parsed.kind.to_owned()))
            .or_default() += count;
    }
    for priority in Priority::ALL {
        let consumer = consumer_counts(&stream, &workers_consumer(priority)).await?;
        let lane = &mut backlog.lanes[priority.index()];
        lane.consumer = consumer;
        if detail == Detail::WaitTimes && lane.pending() > 0 {
            let after = consumer.map_or(0, |c| c.delivered_stream_seq);
            lane.oldest_pending = first_enqueued(&stream, priority, after).await?;
        }
    }
    backlog.legacy_consumer = consumer_counts(&stream, LEGACY_WORKERS_CONSUMER).await?;
    Ok(Some(backlog))
}

async fn consumer_counts(
    stream: &Stream,
    name: &str,
) -> Result<Option<ConsumerCounts>, async_nats::Error> {
    match stream.consumer_info(name).await {
        Ok(info) => Ok(Some(ConsumerCounts {
            pending: info.num_pending,
            in_flight: info.num_ack_pending as u64,
            redelivered: info.num_redelivered as u64,
            waiting: info.num_waiting as u64,
            deliveries: info.delivered.consumer_sequence,
            delivered_stream_seq: info.delivered.stream_sequence,
        })),
        Err(err) if err.kind() == ConsumerInfoErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// The enqueue time of the first task of `priority` after stream sequence `after`.
async fn first_enqueued(
    stream: &Stream,
    priority: Priority,
    after: u64,
) -> Result<Option<SystemTime>, async_nats::Error> {
    let next = stream
        .raw_message_builder()
        .sequence(after.saturating_add(1))
        .next_by_subject(priority_tasks_filter(priority))
        .send()
        .await;
    match next {
        Ok(message) => Ok(Some(SystemTime::from(message.time))),
        Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_counts_every_priority_and_the_legacy_subjects() {
        let attached = |pending, in_flight| Lane {
            consumer: Some(ConsumerCounts { pending, in_flight, ..Default::default() }),
            queued: pending + in_flight,
            oldest_pending: None,
        };
        let before_any_worker = Lane { consumer: None, queued: 7, oldest_pending: None };
        let backlog = TaskBacklog {
            lanes: [attached(5, 2), before_any_worker, attached(100, 0)],
            legacy_queued: 3,
            ..Default::default()
        };
        assert_eq!(backlog.lane(Priority::Normal).pending(), 7);
        assert_eq!(backlog.lane(Priority::Normal).in_flight(), 0);
        assert_eq!(backlog.total(), 5 + 2 + 7 + 100 + 3);
    }

    #[test]
    fn the_oldest_pending_age_is_zero_when_nothing_waits() {
        let now = SystemTime::now();
        let lane = Lane {
            oldest_pending: Some(now - std::time::Duration::from_secs(42)),
            ..Default::default()
        };
        assert_eq!(lane.oldest_pending_age(now).round(), 42.0);
        assert_eq!(Lane::default().oldest_pending_age(now), 0.0);
    }
}
