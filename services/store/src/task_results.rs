//! Idempotent task results: a worker commits a task's effects (document writes and outbox
//! records) together with a marker `{_id: <task id>}` in `_task_results`, in one transaction.
//! A redelivered task finds its marker (or hits the marker's unique `_id`) and applies nothing.

use std::time::Duration;

use mongodb::{
    Collection, IndexModel,
    bson::{self, Document, doc},
    error::{ErrorKind, WriteFailure},
    options::IndexOptions,
};

use crate::{
    change::Change,
    outbox::OutboxRecord,
    store::{Store, StoreError, Write},
};

/// Markers of applied tasks: `{_id: task id, kind, collection, doc_id, version, worker, at}`.
pub const TASK_RESULTS_COLLECTION: &str = "_task_results";

/// How long markers are kept (TTL index on `at`): longer than a task can sit in the `DLQ`
/// stream (14 days) before someone retries it.
pub const TASK_RESULTS_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

/// What [`Store::commit_task_result`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskCommit {
    /// The effects and the marker committed now.
    Applied,
    /// A marker for this task id already existed: nothing was written.
    AlreadyApplied,
}

/// The task a change is the effect of ([`Modify::task`](crate::Modify::task)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMarker {
    /// The task's id: the marker's `_id`.
    pub task_id: String,
    pub kind: String,
    /// The worker that applied it.
    pub worker: String,
}

impl TaskMarker {
    /// The marker stored with `change` (whose event record has id `event_id`).
    pub fn document(&self, change: &Change, event_id: &str) -> Document {
        doc! {
            "_id": &self.task_id,
            "kind": &self.kind,
            "collection": &change.collection,
            "doc_id": &change.doc_id,
            "version": change.version,
            "event_id": event_id,
            "worker": &self.worker,
            "at": bson::DateTime::now(),
        }
    }
}

/// Whether `err` is a unique-index violation (code 11000), however the driver wraps it.
pub fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(e) => {
            e.write_errors.iter().flatten().any(|w| w.code == DUPLICATE_KEY)
        }
        _ => false,
    }
}

impl Store {
    pub fn task_results(&self) -> Collection<Document> {
        self.collection(TASK_RESULTS_COLLECTION)
    }

    /// Whether a task's marker exists (its effects were committed).
    pub async fn task_applied(&self, task_id: &str) -> mongodb::error::Result<bool> {
        Ok(self
            .task_results()
            .find_one(doc! {"_id": task_id})
            .max_time(self.query_timeout())
            .projection(doc! {"_id": 1})
            .await?
            .is_some())
    }

    /// Creates the markers' TTL index (idempotent).
    pub async fn ensure_task_result_indexes(&self) -> mongodb::error::Result<()> {
        let options = IndexOptions::builder()
            .name("ttl".to_owned())
            .expire_after(TASK_RESULTS_RETENTION)
            .build();
        self.task_results()
            .create_index(IndexModel::builder().keys(doc! {"at": 1}).options(options).build())
            .await?;
        Ok(())
    }

    /// Commits `writes` and `outbox` together with `marker` (a document whose `_id` is the task
    /// id) in one transaction, at most once per task id: when the marker already exists the
    /// transaction aborts and nothing is written ([`TaskCommit::AlreadyApplied`]).
    pub async fn commit_task_result(
        &self,
        marker: Document,
        writes: &[Write],
        outbox: &[OutboxRecord],
    ) -> Result<TaskCommit, StoreError> {
        // The marker goes first: a duplicate fails the transaction before any other write.
        let mut all = Vec::with_capacity(writes.len() + 1);
        all.push(Write::Insert {
            collection: TASK_RESULTS_COLLECTION.to_owned(),
            document: marker,
        });
        all.extend_from_slice(writes);
        match self.commit(&all, outbox).await {
            Ok(()) => Ok(TaskCommit::Applied),
            Err(StoreError::Mongo(err)) if is_duplicate_key(&err) => Ok(TaskCommit::AlreadyApplied),
            Err(err) => Err(err),
        }
    }
}
