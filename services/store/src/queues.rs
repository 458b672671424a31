//! The workers' queue as JetStream holds it: stream `TASKS` consumed by the durable consumer
//! `workers`, with dead letters in stream `DLQ` ([`Queues`]). Reading its counts, listing dead
//! letters and putting one back on its task subject are the JetStream calls the api's queue
//! endpoints need; errors are told apart by their kind, never by their text.

use std::collections::BTreeMap;

use async_nats::{
    HeaderMap,
    jetstream::{
        self, ErrorCode,
        context::ConsumerInfoErrorKind,
        message::{PublishMessage, StreamMessage},
        stream::{DeleteMessageErrorKind, RawMessageErrorKind, Stream},
    },
};
use courier_core::subjects::{
    DLQ_ALL, DLQ_STREAM, TASKS_ALL, TASKS_STREAM, TRACE_HEADER, WORKERS_CONSUMER,
    dead_letter_header,
};
use futures::TryStreamExt;

/// Header on a re-enqueued task: the `DLQ` sequence it was retried from.
pub const RETRIED_FROM_HEADER: &str = "Courier-Retried-From";

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// No dead letter with this `DLQ` sequence (never, or no longer).
    #[error("no dead letter {0}")]
    DeadLetterNotFound(u64),
    /// The dead letter names no task subject it could go back to.
    #[error("dead letter {0} names no task subject to retry on")]
    NoTaskSubject(u64),
    #[error("{what}: {source}")]
    Nats {
        what: &'static str,
        #[source]
        source: async_nats::Error,
    },
}

fn nats(what: &'static str) -> impl FnOnce(async_nats::Error) -> QueueError {
    move |source| QueueError::Nats { what, source }
}

fn boxed(err: impl std::error::Error + Send + Sync + 'static) -> async_nats::Error {
    Box::new(err)
}

/// Message counts of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCounts {
    /// Messages in the stream now.
    pub messages: u64,
    /// The sequence of the newest message ever stored (all messages ever, for these streams).
    pub last_sequence: u64,
}

/// The `workers` consumer's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerCounts {
    /// Not yet delivered.
    pub pending: u64,
    /// Delivered, not yet acknowledged.
    pub in_flight: u64,
    /// Delivered more than once and not yet acknowledged.
    pub redelivered: u64,
    /// Pull requests waiting (about one per attached worker).
    pub waiting: u64,
    /// Deliveries so far (the consumer sequence).
    pub deliveries: u64,
}

/// The task queue at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOverview {
    pub tasks: StreamCounts,
    pub dead: StreamCounts,
    /// `None` until a worker has created the consumer.
    pub consumer: Option<ConsumerCounts>,
    /// Messages in `TASKS` by task kind.
    pub queued_by_kind: BTreeMap<String, u64>,
    /// Messages in `DLQ` by task kind.
    pub dead_by_kind: BTreeMap<String, u64>,
}

impl QueueOverview {
    /// Tasks that left `TASKS` acknowledged: every message that left was either acknowledged or
    /// terminated after its dead letter was written (dead letters counted by `DLQ`'s last
    /// sequence).
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
    /// The task kind (the subject after `dlq.tasks.`).
    pub fn kind(&self) -> &str {
        self.subject.strip_prefix("dlq.tasks.").unwrap_or("")
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

/// A dead letter put back on its task subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retried {
    pub dead_letter: u64,
    /// The task subject it was published to.
    pub subject: String,
    pub task_id: Option<String>,
    /// Its new `TASKS` sequence.
    pub enqueued_seq: u64,
    /// Whether JetStream had it already (an earlier retry of the same dead letter).
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

    /// Counts of both streams, the consumer, and messages per kind.
    pub async fn overview(&self) -> Result<QueueOverview, QueueError> {
        let mut tasks = self.stream(TASKS_STREAM).await?;
        let mut dlq = self.stream(DLQ_STREAM).await?;
        let counts = |state: &jetstream::stream::State| StreamCounts {
            messages: state.messages,
            last_sequence: state.last_sequence,
        };
        let tasks_counts =
            counts(&tasks.info().await.map_err(|e| nats("TASKS info")(boxed(e)))?.state);
        let dead_counts = counts(&dlq.info().await.map_err(|e| nats("DLQ info")(boxed(e)))?.state);
        // The consumer exists once a worker has attached; before that nothing is delivered.
        let consumer = match tasks.consumer_info(WORKERS_CONSUMER).await {
            Ok(info) => Some(ConsumerCounts {
                pending: info.num_pending,
                in_flight: info.num_ack_pending as u64,
                redelivered: info.num_redelivered as u64,
                waiting: info.num_waiting as u64,
                deliveries: info.delivered.consumer_sequence,
            }),
            Err(err) if err.kind() == ConsumerInfoErrorKind::NotFound => None,
            Err(err) => return Err(nats("consumer info")(boxed(err))),
        };
        Ok(QueueOverview {
            tasks: tasks_counts,
            dead: dead_counts,
            consumer,
            queued_by_kind: counts_by_kind(&tasks, TASKS_ALL, "tasks.").await?,
            dead_by_kind: counts_by_kind(&dlq, DLQ_ALL, "dlq.tasks.").await?,
        })
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

    /// Puts dead letter `sequence` back on its original task subject (a new message, so it gets
    /// a fresh delivery count), then removes it from `DLQ`. Retrying the same dead letter twice
    /// (a lost response, two clicks) enqueues it once: the message id is per dead letter.
    pub async fn retry_dead_letter(&self, sequence: u64) -> Result<Retried, QueueError> {
        let dlq = self.stream(DLQ_STREAM).await?;
        let message =
            raw_message(&dlq, sequence).await?.ok_or(QueueError::DeadLetterNotFound(sequence))?;
        let subject = header(&message, dead_letter_header::ORIGINAL_SUBJECT)
            .or_else(|| message.subject.as_str().strip_prefix("dlq.").map(str::to_owned))
            .filter(|s| s.starts_with("tasks.") && !s.contains(['*', '>', ' ']))
            .ok_or(QueueError::NoTaskSubject(sequence))?;

        let mut headers = HeaderMap::new();
        headers.insert(RETRIED_FROM_HEADER, format!("{DLQ_STREAM}:{sequence}").as_str());
        if let Some(trace) = header(&message, TRACE_HEADER) {
            headers.insert(TRACE_HEADER, trace.as_str());
        }
        let publish = PublishMessage::build()
            .payload(message.payload.clone())
            .headers(headers)
            .message_id(format!("retry-dlq-{sequence}"));
        let ack = self
            .js
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| nats("re-enqueueing")(boxed(e)))?
            .await
            .map_err(|e| nats("re-enqueued task not acknowledged")(boxed(e)))?;
        // `false`: removed meanwhile by a concurrent retry of the same dead letter.
        delete_message(&dlq, sequence).await?;
        Ok(Retried {
            dead_letter: sequence,
            subject,
            task_id: header(&message, dead_letter_header::TASK_ID),
            enqueued_seq: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}

async fn raw_message(stream: &Stream, sequence: u64) -> Result<Option<StreamMessage>, QueueError> {
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

/// Message counts per subject of `stream`, keyed by the part after `prefix`.
async fn counts_by_kind(
    stream: &Stream,
    filter: &str,
    prefix: &str,
) -> Result<BTreeMap<String, u64>, QueueError> {
    let mut by_subject =
        stream.info_with_subjects(filter).await.map_err(|e| nats("stream subjects")(boxed(e)))?;
    let mut counts = BTreeMap::new();
    while let Some((subject, count)) =
        by_subject.try_next().await.map_err(|e| nats("stream subjects")(boxed(e)))?
    {
        let kind = subject.strip_prefix(prefix).unwrap_or(&subject).to_owned();
        counts.insert(kind, count as u64);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processed_excludes_queued_and_dead_lettered_tasks() {
        let overview = QueueOverview {
            tasks: StreamCounts { messages: 3, last_sequence: 20 },
            dead: StreamCounts { messages: 1, last_sequence: 2 },
            consumer: None,
            queued_by_kind: BTreeMap::new(),
            dead_by_kind: BTreeMap::new(),
        };
        assert_eq!(overview.processed_total(), 15);
        let empty = QueueOverview {
            tasks: StreamCounts { messages: 0, last_sequence: 0 },
            dead: StreamCounts { messages: 0, last_sequence: 4 },
            ..overview
        };
        assert_eq!(empty.processed_total(), 0);
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
