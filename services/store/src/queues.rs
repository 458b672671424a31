//! The workers' queue as JetStream holds it: stream `TASKS`, one durable consumer per priority
//! (`workers-high`, `workers-normal`, `workers-low`), dead letters in stream `DLQ` ([`Queues`]).
//! Reading its counts, listing dead letters, putting one back on its task subject (at its own
//! priority or another, now or later) and moving tasks off the legacy `tasks.<kind>` subjects are
//! the JetStream calls the api needs; errors are told apart by their kind, never by their text.

use std::{collections::BTreeMap, time::Duration};

use async_nats::{
    HeaderMap,
    jetstream::{
        self, ErrorCode,
        context::ConsumerInfoErrorKind,
        message::{PublishMessage, StreamMessage},
        stream::{DeleteMessageErrorKind, RawMessageErrorKind, Stream},
    },
};
use courier_core::{
    Priority,
    subjects::{
        DLQ_ALL, DLQ_STREAM, LEGACY_WORKERS_CONSUMER, TASKS_ALL, TASKS_STREAM, TRACE_HEADER,
        dead_letter_header, dead_letter_subject, parse_task_subject, task_subject,
    },
    task_queue::{Detail, TaskBacklog, read_backlog},
};
use futures::TryStreamExt;
use mongodb::bson;
use tokio_util::sync::CancellationToken;

use crate::{scheduled::ScheduledTask, store::Store};

/// Header on a re-enqueued task: the `DLQ` sequence it was retried from.
pub const RETRIED_FROM_HEADER: &str = "Courier-Retried-From";

/// Header on a task moved off a legacy `tasks.<kind>` subject: the subject it was on.
pub const MOVED_FROM_HEADER: &str = "Courier-Moved-From";

/// Most legacy tasks one round of [`Queues::move_legacy_tasks`] moves.
const MOVE_BATCH: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// No dead letter with this `DLQ` sequence (never, or no longer).
    #[error("no dead letter {0}")]
    DeadLetterNotFound(u64),
    /// The dead letter names no task subject it could go back to.
    #[error("dead letter {0} names no task subject to retry on")]
    NoTaskSubject(u64),
    /// A retry for later keeps the payload as text, and this one is not UTF-8.
    #[error("dead letter {0} does not hold a text payload, so it can only be retried at once")]
    NotText(u64),
    #[error("{what}: {source}")]
    Nats {
        what: &'static str,
        #[source]
        source: async_nats::Error,
    },
    #[error("scheduling the retry: {0}")]
    Store(#[from] mongodb::error::Error),
}

fn nats(what: &'static str) -> impl FnOnce(async_nats::Error) -> QueueError {
    move |source| QueueError::Nats { what, source }
}

fn boxed(err: impl std::error::Error + Send + Sync + 'static) -> async_nats::Error {
    Box::new(err)
}

/// Message counts of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamCounts {
    /// Messages in the stream now.
    pub messages: u64,
    /// The sequence of the newest message ever stored (all messages ever, for these streams).
    pub last_sequence: u64,
}

/// The task queue at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOverview {
    /// `TASKS` per priority (consumers, queued tasks, oldest waiting), legacy subjects included.
    pub tasks: TaskBacklog,
    pub dead: StreamCounts,
    /// Messages in `DLQ` by task kind.
    pub dead_by_kind: BTreeMap<String, u64>,
    /// Messages in `DLQ` by the priority of the subject they were taken from.
    pub dead_by_priority: BTreeMap<Priority, u64>,
}

impl QueueOverview {
    /// Tasks that left `TASKS` acknowledged: every message that left was either acknowledged or
    /// terminated after its dead letter was written (dead letters counted by `DLQ`'s last
    /// sequence). A task moved off a legacy subject left once and arrived once more, so it counts
    /// as processed once too many; this only happens during an upgrade.
    pub fn processed_total(&self) -> u64 {
        self.tasks
            .last_sequence
            .saturating_sub(self.tasks.messages)
            .saturating_sub(self.dead.last_sequence)
    }
}

/// One dead letter.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Its `DLQ` stream sequence: the id the api shows.
    pub sequence: u64,
    /// `dlq.tasks.<kind>`.
    pub subject: String,
    pub task_id: Option<String>,
    pub reason: Option<String>,
    pub attempts: Option<u64>,
    pub worker: Option<String>,
    /// When it was dead-lettered (RFC 3339-like, as JetStream reports it).
    pub time: String,
    /// The task as it was enqueued.
    pub payload: Vec<u8>,
}

impl DeadLetter {
    /// The task subject the dead letter was taken from (its subject after `dlq.`).
    fn task_subject(&self) -> &str {
        self.subject.strip_prefix("dlq.").unwrap_or("")
    }

    /// The task kind (`""` for a task that was on no valid task subject).
    pub fn kind(&self) -> &str {
        parse_task_subject(self.task_subject()).map_or("", |s| s.kind)
    }

    /// The priority of the subject it was taken from (normal for the legacy layout).
    pub fn priority(&self) -> Option<Priority> {
        parse_task_subject(self.task_subject()).map(|s| s.priority)
    }

    fn from_message(message: &StreamMessage) -> Self {
        DeadLetter {
            sequence: message.sequence,
            subject: message.subject.to_string(),
            task_id: header(message, dead_letter_header::TASK_ID),
            reason: header(message, dead_letter_header::REASON),
            attempts: header(message, dead_letter_header::ATTEMPTS).and_then(|a| a.parse().ok()),
            worker: header(message, dead_letter_header::WORKER),
            time: message.time.to_string(),
            payload: message.payload.to_vec(),
        }
    }
}

/// A page of dead letters, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterPage {
    pub items: Vec<DeadLetter>,
    /// Whether more follow the last item.
    pub more: bool,
}

/// How to put a dead letter back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOptions {
    /// Another priority than the one it was taken from.
    pub priority: Option<Priority>,
    /// Hold it back until then (`None` or a past time: enqueue now).
    pub not_before: Option<bson::DateTime>,
}

/// A dead letter put back on its task subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retried {
    pub dead_letter: u64,
    /// The task subject it was (or will be) published to.
    pub subject: String,
    pub task_id: Option<String>,
    /// Its new `TASKS` sequence; `None` when it was scheduled for later.
    pub enqueued_seq: Option<u64>,
    /// When it is due, if it was scheduled for later.
    pub scheduled_for: Option<bson::DateTime>,
    /// Whether it was there already (an earlier retry of the same dead letter).
    pub duplicate: bool,
}

fn header(message: &StreamMessage, name: &str) -> Option<String> {
    message.headers.get(name).map(|v| v.as_str().to_owned())
}

/// The task queue's streams and consumer.
#[derive(Clone)]
pub struct Queues {
    js: jetstream::Context,
}

impl Queues {
    pub fn new(nats: async_nats::Client) -> Self {
        Queues { js: jetstream::new(nats) }
    }

    async fn stream(&self, name: &'static str) -> Result<Stream, QueueError> {
        self.js.get_stream(name).await.map_err(|e| nats(name)(boxed(e)))
    }

    /// Counts of both streams, each priority's consumer, and messages per kind and priority.
    pub async fn overview(&self) -> Result<QueueOverview, QueueError> {
        let tasks = read_backlog(&self.js, Detail::WaitTimes)
            .await
            .map_err(nats("TASKS state"))?
            .ok_or_else(|| nats("TASKS")("stream not found".into()))?;
        let mut dlq = self.stream(DLQ_STREAM).await?;
        let state = &dlq.info().await.map_err(|e| nats("DLQ info")(boxed(e)))?.state;
        let dead = StreamCounts { messages: state.messages, last_sequence: state.last_sequence };
        let mut dead_by_kind = BTreeMap::new();
        let mut dead_by_priority = BTreeMap::new();
        let mut by_subject =
            dlq.info_with_subjects(DLQ_ALL).await.map_err(|e| nats("DLQ subjects")(boxed(e)))?;
        while let Some((subject, count)) =
            by_subject.try_next().await.map_err(|e| nats("DLQ subjects")(boxed(e)))?
        {
            let task_subject = subject.strip_prefix("dlq.").unwrap_or(&subject);
            let (kind, priority) = parse_task_subject(task_subject)
                .map_or(("", Priority::Normal), |s| (s.kind, s.priority));
            *dead_by_kind.entry(kind.to_owned()).or_default() += count as u64;
            *dead_by_priority.entry(priority).or_default() += count as u64;
        }
        Ok(QueueOverview { tasks, dead, dead_by_kind, dead_by_priority })
    }

    /// Up to `limit` dead letters with sequences after `after`, oldest first.
    pub async fn dead_letters(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<DeadLetterPage, QueueError> {
        let dlq = self.stream(DLQ_STREAM).await?;
        let mut items = Vec::with_capacity(limit);
        let mut from = after.saturating_add(1);
        loop {
            let next =
                dlq.raw_message_builder().sequence(from).next_by_subject(DLQ_ALL).send().await;
            match next {
                Ok(message) => {
                    if items.len() == limit {
                        return Ok(DeadLetterPage { items, more: true });
                    }
                    from = message.sequence + 1;
                    items.push(DeadLetter::from_message(&message));
                }
                Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => {
                    return Ok(DeadLetterPage { items, more: false });
                }
                Err(err) => return Err(nats("reading DLQ")(boxed(err))),
            }
        }
    }

    /// Puts dead letter `sequence` back on its original task subject, or the same kind at
    /// `options.priority` (a new message, so it gets a fresh delivery count), then removes it from
    /// `DLQ`. With a future `options.not_before` it goes to `store`'s scheduled tasks instead, and
    /// the scheduler enqueues it when due. Retrying the same dead letter twice (a lost response,
    /// two clicks) enqueues it once: the message id (and scheduled id) is per dead letter.
    pub async fn retry_dead_letter(
        &self,
        sequence: u64,
        options: RetryOptions,
        store: &Store,
    ) -> Result<Retried, QueueError> {
        let dlq = self.stream(DLQ_STREAM).await?;
        let message =
            raw_message(&dlq, sequence).await?.ok_or(QueueError::DeadLetterNotFound(sequence))?;
        let on_subject = message.subject.as_str().strip_prefix("dlq.").map(str::to_owned);
        // External workers write their own dead letters, on dlq.tasks.external.> only (NATS
        // permissions): the subject, not a header they wrote, says where a retry goes.
        let external =
            on_subject.as_deref().and_then(parse_task_subject).is_some_and(|p| p.external);
        let original =
            if external { None } else { header(&message, dead_letter_header::ORIGINAL_SUBJECT) }
                .or(on_subject)
                .unwrap_or_default();
        let parsed = parse_task_subject(&original).ok_or(QueueError::NoTaskSubject(sequence))?;
        let subject = parsed.requeue_subject(options.priority.unwrap_or(parsed.priority));
        let message_id = format!("retry-dlq-{sequence}");
        let task_id = header(&message, dead_letter_header::TASK_ID);
        let trace = header(&message, TRACE_HEADER);

        let later = options.not_before.filter(|due| *due > bson::DateTime::now());
        let retried = if let Some(due) = later {
            let payload = String::from_utf8(message.payload.to_vec())
                .map_err(|_| QueueError::NotText(sequence))?;
            let scheduled = ScheduledTask {
                id: message_id,
                due,
                subject: subject.clone(),
                payload,
                trace_id: trace.unwrap_or_default(),
                created_at: bson::DateTime::now(),
            };
            let inserted = store.schedule(&scheduled).await?;
            Retried {
                dead_letter: sequence,
                subject,
                task_id,
                enqueued_seq: None,
                scheduled_for: Some(due),
                duplicate: !inserted,
            }
        } else {
            let mut headers = HeaderMap::new();
            headers.insert(RETRIED_FROM_HEADER, format!("{DLQ_STREAM}:{sequence}").as_str());
            if let Some(trace) = &trace {
                headers.insert(TRACE_HEADER, trace.as_str());
            }
            let publish = PublishMessage::build()
                .payload(message.payload.clone())
                .headers(headers)
                .message_id(message_id);
            let ack = self
                .js
                .send_publish(subject.clone(), publish)
                .await
                .map_err(|e| nats("re-enqueueing")(boxed(e)))?
                .await
                .map_err(|e| nats("re-enqueued task not acknowledged")(boxed(e)))?;
            Retried {
                dead_letter: sequence,
                subject,
                task_id,
                enqueued_seq: Some(ack.sequence),
                scheduled_for: None,
                duplicate: ack.duplicate,
            }
        };
        // `false`: removed meanwhile by a concurrent retry of the same dead letter.
        delete_message(&dlq, sequence).await?;
        Ok(retried)
    }

    /// Moves tasks left on subjects no consumer reads onto ones a consumer reads: a legacy
    /// `tasks.<kind>` task (enqueued before priorities) to `tasks.normal.<kind>`, and a message
    /// on no valid task subject at all to the dead letters. Each is published (message id
    /// `moved-tasks-<seq>`, so a repeated move is dropped) before it is deleted, so none is
    /// lost. Skipped while the legacy `workers` consumer exists: the old workers still read every
    /// subject. Returns how many it moved (at most a batch per call).
    pub async fn move_legacy_tasks(&self) -> Result<usize, QueueError> {
        let tasks = self.stream(TASKS_STREAM).await?;
        match tasks.consumer_info(LEGACY_WORKERS_CONSUMER).await {
            Ok(_) => return Ok(0),
            Err(err) if err.kind() == ConsumerInfoErrorKind::NotFound => {}
            Err(err) => return Err(nats("legacy consumer info")(boxed(err))),
        }
        let mut stranded = Vec::new();
        let mut by_subject = tasks
            .info_with_subjects(TASKS_ALL)
            .await
            .map_err(|e| nats("TASKS subjects")(boxed(e)))?;
        while let Some((subject, _)) =
            by_subject.try_next().await.map_err(|e| nats("TASKS subjects")(boxed(e)))?
        {
            match parse_task_subject(&subject) {
                Some(parsed) if !parsed.legacy => {}
                _ => stranded.push(subject),
            }
        }
        let mut moved = 0;
        for subject in stranded {
            let target = match parse_task_subject(&subject) {
                Some(parsed) => task_subject(Priority::Normal, parsed.kind),
                None => dead_letter_subject(&subject),
            };
            let mut from = 1;
            while moved < MOVE_BATCH {
                let next = tasks
                    .raw_message_builder()
                    .sequence(from)
                    .next_by_subject(subject.clone())
                    .send()
                    .await;
                let message = match next {
                    Ok(message) => message,
                    Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => break,
                    Err(err) => return Err(nats("reading a legacy task")(boxed(err))),
                };
                from = message.sequence + 1;
                let mut headers = message.headers.clone();
                headers.insert(MOVED_FROM_HEADER, subject.as_str());
                if target.starts_with("dlq.") {
                    headers.insert(dead_letter_header::REASON, "not on a task subject");
                    headers.insert(dead_letter_header::ORIGINAL_SUBJECT, subject.as_str());
                    headers.insert(dead_letter_header::ATTEMPTS, "0");
                }
                let publish = PublishMessage::build()
                    .payload(message.payload.clone())
                    .headers(headers)
                    .message_id(format!("moved-tasks-{}", message.sequence));
                self.js
                    .send_publish(target.clone(), publish)
                    .await
                    .map_err(|e| nats("moving a legacy task")(boxed(e)))?
                    .await
                    .map_err(|e| nats("moved task not acknowledged")(boxed(e)))?;
                delete_message(&tasks, message.sequence).await?;
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Runs [`Queues::move_legacy_tasks`] every `interval` until `shutdown` (in every api replica;
    /// a task two replicas move at once is published once, by its message id).
    pub async fn run_legacy_mover(self, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
            match self.move_legacy_tasks().await {
                Ok(0) => {}
                Ok(moved) => {
                    tracing::info!(moved, "moved tasks off legacy subjects to tasks.normal.<kind>")
                }
                Err(err) => tracing::debug!(%err, "moving legacy tasks failed; retrying"),
            }
        }
    }
}

async fn raw_message(stream: &Stream, sequence: u64) -> Result<Option<StreamMessage>, QueueError> {
    // Stream sequences start at 1: JetStream refuses 0 as a malformed request, not as absent.
    if sequence == 0 {
        return Ok(None);
    }
    match stream.get_raw_message(sequence).await {
        Ok(message) => Ok(Some(message)),
        Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(err) => Err(nats("reading DLQ")(boxed(err))),
    }
}

async fn delete_message(stream: &Stream, sequence: u64) -> Result<bool, QueueError> {
    match stream.delete_message(sequence).await {
        Ok(deleted) => Ok(deleted),
        Err(err) if is_no_message_found(&err.kind()) => Ok(false),
        Err(err) => Err(nats("removing the dead letter")(boxed(err))),
    }
}

/// JetStream's "no message found" (code 10037) on a delete.
fn is_no_message_found(kind: &DeleteMessageErrorKind) -> bool {
    matches!(kind, DeleteMessageErrorKind::JetStream(err) if err.error_code() == ErrorCode::NO_MESSAGE_FOUND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processed_excludes_queued_and_dead_lettered_tasks() {
        let overview = QueueOverview {
            tasks: TaskBacklog { messages: 3, last_sequence: 20, ..Default::default() },
            dead: StreamCounts { messages: 1, last_sequence: 2 },
            dead_by_kind: BTreeMap::new(),
            dead_by_priority: BTreeMap::new(),
        };
        assert_eq!(overview.processed_total(), 15);
        let empty = QueueOverview {
            tasks: TaskBacklog::default(),
            dead: StreamCounts { messages: 0, last_sequence: 4 },
            ..overview
        };
        assert_eq!(empty.processed_total(), 0);
    }

    #[test]
    fn a_dead_letter_keeps_its_priority_and_kind() {
        let dead = |subject: &str| DeadLetter {
            sequence: 1,
            subject: subject.into(),
            task_id: None,
            reason: None,
            attempts: None,
            worker: None,
            time: String::new(),
            payload: Vec::new(),
        };
        let high = dead("dlq.tasks.high.pets.enrich");
        assert_eq!((high.kind(), high.priority()), ("pets.enrich", Some(Priority::High)));
        let legacy = dead("dlq.tasks.pets.enrich");
        assert_eq!((legacy.kind(), legacy.priority()), ("pets.enrich", Some(Priority::Normal)));
        let stray = dead("dlq.tasks.high");
        assert_eq!((stray.kind(), stray.priority()), ("", None));
    }

    #[test]
    fn a_missing_message_is_told_apart_by_its_code() {
        let error = |code: u64| -> jetstream::Error {
            serde_json::from_value(serde_json::json!({
                "code": 404, "err_code": code, "description": "no message found"
            }))
            .unwrap()
        };
        assert!(is_no_message_found(&DeleteMessageErrorKind::JetStream(error(10037))));
        assert!(!is_no_message_found(&DeleteMessageErrorKind::JetStream(error(10059))));
        assert!(!is_no_message_found(&DeleteMessageErrorKind::TimedOut));
    }
}
