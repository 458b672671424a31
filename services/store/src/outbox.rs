//! The transactional outbox: every committed change carries an outbox record (written in the
//! same transaction). After commit the fast path publishes it to JetStream at once; the relay
//! publishes whatever the fast path could not (NATS down, process killed). JetStream drops a
//! re-published record by its `Nats-Msg-Id` (the event id), so each change is one event.
//!
//! Order per document: a record is published only when no older record of the same document
//! is still waiting, so events of one document enter the stream in commit order.
//!
//! A publish refused because the stream is full marks that stream in the store's
//! [`StreamGate`](crate::admission::StreamGate) (new writes for it are refused); a publish that
//! succeeds, or a probe of the stream finding room, clears it.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_nats::jetstream::{self, message::PublishMessage};
use courier_core::{Event, jetstream::is_stream_full_error, subjects::TRACE_HEADER};
use futures::TryStreamExt;
use mongodb::bson::{self, doc};
use serde::{Deserialize, Serialize};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{admission, metrics::OutboxMetrics, store::Store};

/// How often the relay asks a full stream it has nothing to retry for whether it has room.
const FULL_STREAM_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How often the relay counts the outbox backlog against its bound.
const BACKLOG_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The outbox bound unless the service sets one ([`Outbox::with_max_pending`]).
pub const DEFAULT_MAX_PENDING: u64 = 100_000;

pub const OUTBOX_COLLECTION: &str = "_outbox";

/// Most records the relay publishes per round.
const RELAY_BATCH: i64 = 512;

/// One event waiting to be published.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxRecord {
    /// The event id, also the `Nats-Msg-Id`.
    #[serde(rename = "_id")]
    pub id: String,
    pub subject: String,
    /// The event JSON, exactly as it will sit in the stream.
    pub payload: String,
    /// `<collection>/<doc_id>`: groups a document's records for ordering.
    pub doc_key: String,
    /// The document version this change produced (1 for a create).
    pub doc_version: i64,
    pub created_at: bson::DateTime,
    pub trace_id: String,
}

impl OutboxRecord {
    /// A task to enqueue on `tasks.<priority>.<kind>`. Tasks are ordered among themselves per
    /// document (their own key), independently of the document's events.
    pub fn for_task(task: &courier_core::Task) -> Self {
        OutboxRecord {
            id: task.id.to_string(),
            subject: task.subject(),
            payload: serde_json::to_string(task).expect("tasks always serialize"),
            doc_key: format!("task:{}:{}/{}", task.kind, task.collection, task.doc_id),
            doc_version: task.doc_version,
            created_at: bson::DateTime::now(),
            trace_id: task.trace_id.clone(),
        }
    }

    pub fn for_event(event: &Event, subject: String, doc_version: i64) -> Self {
        OutboxRecord {
            id: event.id.to_string(),
            subject,
            payload: serde_json::to_string(event).expect("events always serialize"),
            doc_key: format!("{}/{}", event.collection, event.doc_id),
            doc_version,
            created_at: bson::DateTime::now(),
            trace_id: event.trace_id.clone(),
        }
    }
}

/// Publishes outbox records to JetStream and removes them once the stream has them.
#[derive(Clone)]
pub struct Outbox {
    store: Store,
    nats: async_nats::Client,
    js: jetstream::Context,
    metrics: Arc<OutboxMetrics>,
    tasks: TaskTracker,
    max_pending: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("NATS is not connected")]
    Disconnected,
    #[error("JetStream publish failed: {0}")]
    Nats(String),
    #[error(transparent)]
    Store(#[from] mongodb::error::Error),
}

impl Outbox {
    pub fn new(store: Store, nats: async_nats::Client, metrics: Arc<OutboxMetrics>) -> Self {
        let js = jetstream::new(nats.clone());
        Outbox {
            store,
            nats,
            js,
            metrics,
            tasks: TaskTracker::new(),
            max_pending: DEFAULT_MAX_PENDING,
        }
    }

    /// The same outbox bounded at `max_pending` waiting records: over it, the relay has new
    /// writes refused (see [`crate::admission`]).
    pub fn with_max_pending(mut self, max_pending: u64) -> Self {
        self.max_pending = max_pending;
        self
    }

    /// Counts the waiting records (up to just above the bound) and tells the gate.
    async fn check_backlog(&self) -> Result<(), PublishError> {
        let pending = self
            .store
            .outbox()
            .count_documents(doc! {})
            .limit(self.max_pending.saturating_add(1))
            .max_time(self.store.query_timeout())
            .await?;
        self.metrics.outbox_backlog.set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.store.stream_gate().observe_backlog(pending, self.max_pending);
        Ok(())
    }

    /// The fast path: publish `records` right after their commit, in the background, so the
    /// response does not wait for NATS. Anything that fails here is left to the relay.
    pub fn publish_after_commit(&self, records: Vec<OutboxRecord>) {
        let outbox = self.clone();
        self.tasks.spawn(async move {
            for record in records {
                match outbox.publish_if_next(&record).await {
                    Ok(true) => {}
                    Ok(false) => continue, // an older change of this document waits: the relay keeps order
                    Err(err) => {
                        outbox.metrics.publish_failures.inc();
                        tracing::debug!(%err, event_id = %record.id, "fast-path publish failed; relay will retry");
                        break;
                    }
                }
            }
        });
    }

    /// Publishes `record` if no older change of its document is still waiting; removes it from
    /// the outbox once JetStream has acknowledged it. Returns whether it was published.
    async fn publish_if_next(&self, record: &OutboxRecord) -> Result<bool, PublishError> {
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            return Err(PublishError::Disconnected);
        }
        if record.doc_version > 1 {
            let older = self
                .store
                .outbox()
                .count_documents(
                    doc! {"doc_key": &record.doc_key, "doc_version": {"$lt": record.doc_version}},
                )
                .max_time(self.store.query_timeout())
                .await?;
            if older > 0 {
                return Ok(false);
            }
        }
        if let Err(err) = self.publish(record).await {
            self.note_failure(&record.subject, &err.to_string());
            return Err(err);
        }
        self.note_success(&record.subject);
        self.store.outbox().delete_one(doc! {"_id": &record.id}).await?;
        self.metrics.events_published.inc();
        Ok(true)
    }

    /// A publish to `subject` failed with `message`: a full stream refuses new writes.
    fn note_failure(&self, subject: &str, message: &str) {
        if is_stream_full_error(message)
            && let Some(stream) = admission::stream_of(subject)
        {
            self.store.stream_gate().mark_full(stream);
        }
    }

    /// A publish to `subject` succeeded: its stream has room.
    fn note_success(&self, subject: &str) {
        if let Some(stream) = admission::stream_of(subject) {
            self.store.stream_gate().clear(stream);
        }
    }

    /// Clears each full stream that reports room again (one it has no record to retry for
    /// would otherwise stay refused).
    async fn probe_full_streams(&self) {
        for stream in self.store.stream_gate().full_streams() {
            match self.js.get_stream(stream).await {
                Ok(info) => {
                    let info = info.cached_info();
                    if admission::has_room(info.state.bytes, info.config.max_bytes) {
                        self.store.stream_gate().clear(stream);
                    }
                }
                Err(err) => tracing::debug!(%err, stream, "probing a full stream failed"),
            }
        }
    }

    async fn publish(&self, record: &OutboxRecord) -> Result<(), PublishError> {
        let ack = self
            .js
            .send_publish(record.subject.clone(), publish_message(record))
            .await
            .map_err(|err| PublishError::Nats(err.to_string()))?;
        ack.await.map_err(|err| PublishError::Nats(err.to_string()))?;
        Ok(())
    }

    /// The relay: every `interval`, publish records older than `grace` (the fast path's share),
    /// until `shutdown`. Runs in every api replica; duplicates are dropped by JetStream.
    pub async fn run_relay(self, interval: Duration, grace: Duration, shutdown: CancellationToken) {
        let mut last_probe = tokio::time::Instant::now();
        let mut last_count: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
            // NATS up or not: the bound matters most while nothing can be published.
            if last_count.is_none_or(|at| at.elapsed() >= BACKLOG_CHECK_INTERVAL) {
                last_count = Some(tokio::time::Instant::now());
                if let Err(err) = self.check_backlog().await {
                    tracing::debug!(%err, "counting the outbox backlog failed");
                }
            }
            if self.nats.connection_state() != async_nats::connection::State::Connected {
                continue;
            }
            match self.relay_once(grace).await {
                Ok(0) => {}
                Ok(published) => tracing::info!(published, "outbox relay published pending events"),
                Err(err) => tracing::warn!(%err, "outbox relay round failed; retrying"),
            }
            if last_probe.elapsed() >= FULL_STREAM_PROBE_INTERVAL {
                last_probe = tokio::time::Instant::now();
                self.probe_full_streams().await;
            }
        }
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// One relay round; returns how many records it published.
    pub async fn relay_once(&self, grace: Duration) -> Result<usize, PublishError> {
        let cutoff = bson::DateTime::from_millis(
            bson::DateTime::now().timestamp_millis()
                - i64::try_from(grace.as_millis()).unwrap_or(i64::MAX),
        );
        let outbox = self.store.outbox();
        let batch: Vec<OutboxRecord> = outbox
            .find(doc! {"created_at": {"$lte": cutoff}})
            .max_time(self.store.query_timeout())
            .sort(doc! {"created_at": 1, "_id": 1})
            .limit(RELAY_BATCH)
            .await?
            .try_collect()
            .await?;
        self.metrics.observe_outbox_backlog(&batch);
        if batch.is_empty() {
            return Ok(0);
        }
        let mut ready = self.in_document_order(batch).await?;
        // Records for a full stream wait for the probe to find room (they would only fail, and
        // hold up the others behind them).
        let full = self.store.stream_gate().full_streams();
        ready.retain(|r| admission::stream_of(&r.subject).is_none_or(|s| !full.contains(&s)));

        // Pipeline the publishes on the one connection (order is kept), then await the acks.
        let mut acks = Vec::with_capacity(ready.len());
        for record in &ready {
            match self.js.send_publish(record.subject.clone(), publish_message(record)).await {
                Ok(ack) => acks.push((record.id.clone(), record.subject.as_str(), ack)),
                Err(err) => {
                    self.note_failure(&record.subject, &err.to_string());
                    self.metrics.publish_failures.inc();
                    tracing::debug!(%err, "relay publish failed");
                    break;
                }
            }
        }
        let mut published = Vec::with_capacity(acks.len());
        for (id, subject, ack) in acks {
            match ack.await {
                Ok(_) => {
                    self.note_success(subject);
                    published.push(id);
                }
                Err(err) => {
                    self.note_failure(subject, &err.to_string());
                    self.metrics.publish_failures.inc();
                    tracing::debug!(%err, "relay publish not acknowledged");
                    break;
                }
            }
        }
        if !published.is_empty() {
            outbox.delete_many(doc! {"_id": {"$in": &published}}).await?;
            self.metrics.events_published.inc_by(published.len() as u64);
            self.metrics.relay_republished.inc_by(published.len() as u64);
        }
        Ok(published.len())
    }

    /// Keeps, per document, only the records that are next in line (no older record of that
    /// document outside the batch), ordered by document version.
    async fn in_document_order(
        &self,
        batch: Vec<OutboxRecord>,
    ) -> Result<Vec<OutboxRecord>, PublishError> {
        let keys: Vec<&str> = batch.iter().map(|r| r.doc_key.as_str()).collect();
        #[derive(Deserialize)]
        struct Pending {
            doc_key: String,
            doc_version: i64,
        }
        let pending: Vec<Pending> = self
            .store
            .outbox()
            .clone_with_type::<Pending>()
            .find(doc! {"doc_key": {"$in": keys}})
            .max_time(self.store.query_timeout())
            .projection(doc! {"doc_key": 1, "doc_version": 1, "_id": 0})
            .await?
            .try_collect()
            .await?;
        let mut waiting: HashMap<String, Vec<i64>> = HashMap::new();
        for p in pending {
            waiting.entry(p.doc_key).or_default().push(p.doc_version);
        }
        Ok(next_in_line(batch, waiting))
    }

    /// Waits for in-flight fast-path publishes (graceful shutdown).
    pub async fn drain(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// From `batch` (oldest first), the records that may be published now: per document, those whose
/// versions are exactly the oldest still waiting (`waiting`: every waiting version by document).
/// The batch's overall order is kept, and within a document records go out by version even when
/// replicas' clocks disagree about `created_at`.
fn next_in_line(
    batch: Vec<OutboxRecord>,
    mut waiting: HashMap<String, Vec<i64>>,
) -> Vec<OutboxRecord> {
    let mut in_batch: HashMap<&str, Vec<i64>> = HashMap::new();
    for record in &batch {
        in_batch.entry(record.doc_key.as_str()).or_default().push(record.doc_version);
    }
    let mut allowed: HashMap<String, Vec<i64>> = HashMap::new();
    for (key, mut versions) in in_batch {
        versions.sort_unstable();
        let mut oldest = waiting.remove(key).unwrap_or_default();
        oldest.sort_unstable();
        let next: Vec<i64> =
            versions.iter().zip(&oldest).take_while(|(v, o)| v == o).map(|(v, _)| *v).collect();
        allowed.insert(key.to_owned(), next);
    }
    let mut ready: Vec<OutboxRecord> =
        batch.into_iter().filter(|r| allowed[&r.doc_key].contains(&r.doc_version)).collect();
    // Within each document, put its records back into their slots in version order.
    let mut slots: HashMap<String, Vec<usize>> = HashMap::new();
    for (index, record) in ready.iter().enumerate() {
        slots.entry(record.doc_key.clone()).or_default().push(index);
    }
    for positions in slots.values().filter(|p| p.len() > 1) {
        let mut versions: Vec<OutboxRecord> = positions.iter().map(|&i| ready[i].clone()).collect();
        versions.sort_by_key(|r| r.doc_version);
        for (&slot, record) in positions.iter().zip(versions) {
            ready[slot] = record;
        }
    }
    ready
}

fn publish_message(record: &OutboxRecord) -> PublishMessage {
    PublishMessage::build()
        .payload(record.payload.clone().into())
        .message_id(&record.id)
        .header(TRACE_HEADER, record.trace_id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(doc: &str, version: i64, millis: i64) -> OutboxRecord {
        OutboxRecord {
            id: format!("{doc}-{version}"),
            subject: format!("events.c.{doc}.updated"),
            payload: "{}".into(),
            doc_key: format!("c/{doc}"),
            doc_version: version,
            created_at: bson::DateTime::from_millis(millis),
            trace_id: String::new(),
        }
    }

    fn waiting(entries: &[(&str, &[i64])]) -> HashMap<String, Vec<i64>> {
        entries.iter().map(|(d, v)| (format!("c/{d}"), v.to_vec())).collect()
    }

    fn ids(records: &[OutboxRecord]) -> Vec<&str> {
        records.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn keeps_batch_order_across_documents() {
        let batch = vec![record("a", 1, 1), record("b", 1, 2), record("a", 2, 3)];
        let ready = next_in_line(batch, waiting(&[("a", &[1, 2]), ("b", &[1])]));
        assert_eq!(ids(&ready), ["a-1", "b-1", "a-2"]);
    }

    #[test]
    fn a_document_waits_for_an_older_record_outside_the_batch() {
        let batch = vec![record("a", 3, 1), record("b", 1, 2)];
        let ready = next_in_line(batch, waiting(&[("a", &[2, 3]), ("b", &[1])]));
        assert_eq!(ids(&ready), ["b-1"]);
    }

    #[test]
    fn versions_go_out_in_order_even_when_clocks_disagree() {
        // Replica clocks skewed: version 2 looks older than version 1.
        let batch = vec![record("a", 2, 1), record("b", 1, 2), record("a", 1, 3)];
        let ready = next_in_line(batch, waiting(&[("a", &[1, 2]), ("b", &[1])]));
        assert_eq!(ids(&ready), ["a-1", "b-1", "a-2"]);
    }
}
