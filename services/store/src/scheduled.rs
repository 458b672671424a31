//! Scheduled tasks: a task with `not_before` waits in `_scheduled_tasks`, written in the same
//! transaction as the change that schedules it, until it is due. The [`Scheduler`], which runs in
//! every api replica (like the outbox relay), then moves it into the outbox in one transaction:
//! delete the scheduled document, insert its outbox record. Only one replica's delete matches,
//! so each scheduled task is enqueued once; and at every moment it is in one of the two
//! collections, so a restart of any process loses nothing. The outbox publishes it as any task.

use std::{sync::Arc, time::Duration};

use courier_core::Task;
use futures::TryStreamExt;
use mongodb::{
    Collection, IndexModel,
    bson::{self, doc},
    options::IndexOptions,
};
use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{
    outbox::{Outbox, OutboxRecord},
    store::{Store, StoreError, Write},
    task_results::is_duplicate_key,
};

pub const SCHEDULED_TASKS_COLLECTION: &str = "_scheduled_tasks";

/// Most tasks one scheduler round moves (one transaction when no other replica competes).
const RELEASE_BATCH: i64 = 256;

/// A task waiting for its time: the message it will be, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledTask {
    /// The outbox record's id once due, so the `Nats-Msg-Id` (the task id, or `retry-dlq-<seq>`
    /// for a dead letter retried later).
    #[serde(rename = "_id")]
    pub id: String,
    /// Not enqueued before this.
    pub due: bson::DateTime,
    /// `tasks.<priority>.<kind>`.
    pub subject: String,
    /// The message payload, exactly as it will sit in the stream.
    pub payload: String,
    pub trace_id: String,
    pub created_at: bson::DateTime,
}

impl ScheduledTask {
    /// `task`, due at its `not_before` (at once without one).
    pub fn for_task(task: &Task) -> Self {
        let due = task.not_before.unwrap_or(task.time);
        ScheduledTask {
            id: task.id.to_string(),
            due: bson::DateTime::from_millis(due.timestamp_millis()),
            subject: task.subject(),
            payload: serde_json::to_string(task).expect("tasks always serialize"),
            trace_id: task.trace_id.clone(),
            created_at: bson::DateTime::now(),
        }
    }

    /// The insert that schedules it inside a transaction.
    pub fn write(&self) -> Write {
        Write::Insert {
            collection: SCHEDULED_TASKS_COLLECTION.to_owned(),
            document: bson::to_document(self).expect("scheduled tasks always serialize"),
        }
    }

    /// Its outbox record once due. The key is its own: a delayed task is not ordered after the
    /// other tasks of its document.
    fn outbox_record(&self) -> OutboxRecord {
        OutboxRecord {
            id: self.id.clone(),
            subject: self.subject.clone(),
            payload: self.payload.clone(),
            doc_key: format!("scheduled:{}", self.id),
            doc_version: 1,
            created_at: bson::DateTime::now(),
            trace_id: self.trace_id.clone(),
        }
    }
}

/// How many tasks wait, and when the next is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledSummary {
    pub count: u64,
    pub next_due: Option<bson::DateTime>,
}

impl Store {
    pub fn scheduled_tasks(&self) -> Collection<ScheduledTask> {
        self.collection(SCHEDULED_TASKS_COLLECTION).clone_with_type()
    }

    /// The index the scheduler's "what is due" query uses (idempotent).
    pub async fn ensure_scheduled_task_indexes(&self) -> mongodb::error::Result<()> {
        let options = IndexOptions::builder().name("due".to_owned()).build();
        self.scheduled_tasks()
            .create_index(IndexModel::builder().keys(doc! {"due": 1}).options(options).build())
            .await?;
        Ok(())
    }

    /// Schedules `task` on its own (not part of a change); `false` when a task with its id is
    /// scheduled already (a repeated request).
    pub async fn schedule(&self, task: &ScheduledTask) -> mongodb::error::Result<bool> {
        match self.scheduled_tasks().insert_one(task).await {
            Ok(_) => Ok(true),
            Err(err) if is_duplicate_key(&err) => Ok(false),
            Err(err) => Err(err),
        }
    }

    pub async fn scheduled_summary(&self) -> mongodb::error::Result<ScheduledSummary> {
        let scheduled = self.scheduled_tasks();
        let limit = self.query_timeout();
        let count = scheduled.count_documents(doc! {}).max_time(limit).await?;
        let next = scheduled.find_one(doc! {}).sort(doc! {"due": 1}).max_time(limit).await?;
        Ok(ScheduledSummary { count, next_due: next.map(|task| task.due) })
    }

    /// Moves the tasks due at `now` (oldest first, up to a batch) into the outbox; returns their
    /// outbox records. Tasks another replica moved meanwhile are skipped.
    pub async fn release_due_tasks(
        &self,
        now: bson::DateTime,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let due: Vec<ScheduledTask> = self
            .scheduled_tasks()
            .find(doc! {"due": {"$lte": now}})
            .max_time(self.query_timeout())
            .sort(doc! {"due": 1, "_id": 1})
            .limit(RELEASE_BATCH)
            .await?
            .try_collect()
            .await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let records: Vec<OutboxRecord> = due.iter().map(ScheduledTask::outbox_record).collect();
        let ids: Vec<&str> = due.iter().map(|task| task.id.as_str()).collect();
        let all = Write::DeleteMatching {
            collection: SCHEDULED_TASKS_COLLECTION.to_owned(),
            filter: doc! {"_id": {"$in": &ids}},
            count: ids.len() as u64,
        };
        match self.commit(&[all], &records).await {
            Ok(()) => return Ok(records),
            // Another replica released (or is releasing) the same task.
            Err(err) if err.is_lost_race() => {}
            Err(err) => return Err(err),
        }
        // Another replica took some of them: one transaction each.
        let mut released = Vec::with_capacity(records.len());
        for record in records {
            let one = Write::DeleteMatching {
                collection: SCHEDULED_TASKS_COLLECTION.to_owned(),
                filter: doc! {"_id": &record.id},
                count: 1,
            };
            match self.commit(&[one], std::slice::from_ref(&record)).await {
                Ok(()) => released.push(record),
                // Another replica released (or is releasing) the same task.
                Err(err) if err.is_lost_race() => {}
                Err(err) => return Err(err),
            }
        }
        Ok(released)
    }
}

/// The scheduler's Prometheus metrics (`courier_scheduled_tasks*`).
#[derive(Debug, Default)]
pub struct SchedulerMetrics {
    /// Tasks waiting for their time, at the last round.
    pub waiting: Gauge,
    /// Seconds until the next task is due at the last round (negative: overdue; 0: none).
    pub next_due_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub released: Counter,
}

impl SchedulerMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Self::default();
        registry.register(
            "courier_scheduled_tasks",
            "Tasks waiting in _scheduled_tasks for their time (at the scheduler's last round)",
            m.waiting.clone(),
        );
        registry.register(
            "courier_scheduled_tasks_next_due_seconds",
            "Seconds until the next scheduled task is due (negative: overdue; 0: none waits)",
            m.next_due_seconds.clone(),
        );
        registry.register(
            "courier_scheduled_tasks_released",
            "Scheduled tasks moved into the outbox when due",
            m.released.clone(),
        );
        Arc::new(m)
    }
}

/// Moves due tasks into the outbox every interval, then publishes them (fast path; the outbox
/// relay covers a failed publish).
pub struct Scheduler {
    store: Store,
    outbox: Outbox,
    metrics: Arc<SchedulerMetrics>,
}

impl Scheduler {
    pub fn new(store: Store, outbox: Outbox, metrics: Arc<SchedulerMetrics>) -> Self {
        Scheduler { store, outbox, metrics }
    }

    /// Rounds every `interval` until `shutdown`.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
            match self.release_once().await {
                Ok(0) => {}
                Ok(released) => tracing::info!(released, "scheduled tasks are due: enqueued"),
                Err(err) => tracing::warn!(%err, "scheduler round failed; retrying"),
            }
            match self.store.scheduled_summary().await {
                Ok(summary) => {
                    self.metrics.waiting.set(i64::try_from(summary.count).unwrap_or(i64::MAX));
                    let next = summary.next_due.map_or(0.0, |due| {
                        (due.timestamp_millis() - bson::DateTime::now().timestamp_millis()) as f64
                            / 1000.0
                    });
                    self.metrics.next_due_seconds.set(next);
                }
                Err(err) => tracing::debug!(%err, "counting scheduled tasks failed"),
            }
        }
    }

    /// One round: moves what is due into the outbox and hands it to the fast path.
    pub async fn release_once(&self) -> Result<usize, StoreError> {
        let records = self.store.release_due_tasks(bson::DateTime::now()).await?;
        let released = records.len();
        if released > 0 {
            self.metrics.released.inc_by(released as u64);
            self.outbox.publish_after_commit(records);
        }
        Ok(released)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_core::Priority;

    #[test]
    fn a_scheduled_task_becomes_an_outbox_record_with_its_own_key() {
        let task = Task::new("pets.recheck", "pets", "abc", 3, None, "trace".into())
            .with_priority(Priority::Low)
            .delayed(Duration::from_secs(3600));
        let scheduled = ScheduledTask::for_task(&task);
        assert_eq!(scheduled.id, task.id.to_string());
        assert_eq!(scheduled.due.timestamp_millis(), task.not_before.unwrap().timestamp_millis());
        let record = scheduled.outbox_record();
        assert_eq!(record.subject, "tasks.low.pets.recheck");
        assert_eq!(record.id, scheduled.id, "the task id stays the message id");
        assert_eq!(record.doc_key, format!("scheduled:{}", task.id));
        assert_eq!(serde_json::from_str::<Task>(&record.payload).unwrap(), task);
        let Write::Insert { collection, document } = scheduled.write() else { panic!("an insert") };
        assert_eq!(collection, SCHEDULED_TASKS_COLLECTION);
        assert_eq!(document.get_str("_id").unwrap(), scheduled.id);
        assert!(document.get_datetime("due").is_ok());
    }
}
