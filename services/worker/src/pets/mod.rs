//! `pets.enrich`: reads the pet the task names, computes its enrichment ([`enrichment`]) and
//! stores it as the pet's `enrichment` field together with a `pets.enriched` event — one
//! transaction through the outbox (`Replace` at the read version, `_v` + 1, event record, and the
//! task's marker in `_task_results`), so a stored result always gets its event, events of one pet
//! stay in version order, and a redelivered task applies nothing the second time.

pub mod enrichment;

use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use courier_core::{Event, EventAction, Task, subjects};
use courier_store::{
    Outbox, OutboxRecord, Store, StoreError, TaskCommit, Write,
    documents::{VERSION_FIELD, to_api, version_of},
};
use futures::future::BoxFuture;
use mongodb::{
    bson::{self, Bson, Document, doc, oid::ObjectId},
    error::TRANSIENT_TRANSACTION_ERROR,
};
use serde_json::json;

use crate::{
    config::Fault,
    handlers::{TaskError, TaskHandler},
};
use enrichment::{PetFacts, SpeciesBook};

/// The task kind this handler serves.
pub const KIND: &str = "pets.enrich";

/// The field the result is stored in (declared `readOnly` in the collection's schema).
pub const ENRICHMENT_FIELD: &str = "enrichment";

/// Read-compute-commit rounds when the pet keeps changing under us (then: retry with backoff).
const COMMIT_ATTEMPTS: u32 = 5;

/// What one task did; logged, and returned for tests and tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The enrichment and its event committed, producing this document version.
    Applied { version: i64 },
    /// This task's result was committed before (a redelivery): nothing written.
    AlreadyApplied,
    /// The stored enrichment already reflects the pet at (or after) the task's version.
    UpToDate,
    /// The pet was deleted meanwhile: nothing to enrich.
    Deleted,
}

pub struct PetsEnrich {
    store: Store,
    outbox: Outbox,
    book: SpeciesBook,
    worker_id: String,
    fault: Option<Fault>,
}

impl PetsEnrich {
    pub fn new(
        store: Store,
        outbox: Outbox,
        worker_id: String,
        fault: Option<Fault>,
    ) -> Result<Self, serde_json::Error> {
        Ok(PetsEnrich { store, outbox, book: SpeciesBook::embedded()?, worker_id, fault })
    }

    /// Enriches the pet named by `task` (at most once per task id).
    pub async fn enrich(&self, task: &Task) -> Result<Outcome, TaskError> {
        let started = Instant::now();
        if !subjects::is_valid_collection_name(&task.collection) {
            return Err(TaskError::Permanent(format!(
                "invalid collection name '{}'",
                task.collection
            )));
        }
        let id = ObjectId::parse_str(&task.doc_id)
            .map_err(|_| TaskError::Permanent(format!("invalid document id '{}'", task.doc_id)))?;
        let task_id = task.id.to_string();
        let pets = self.store.collection(&task.collection);
        for attempt in 0..COMMIT_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
            }
            if self.store.task_applied(&task_id).await.map_err(transient)? {
                return Ok(Outcome::AlreadyApplied);
            }
            let Some(stored) = pets.find_one(doc! {"_id": id}).await.map_err(transient)? else {
                return Ok(Outcome::Deleted);
            };
            let version = version_of(&stored);
            if enriched_from(&stored).is_some_and(|source| source >= task.doc_version) {
                return Ok(Outcome::UpToDate);
            }

            let mut result = self.book.enrich(&PetFacts::from_document(&to_api(stored.clone())));
            result["metadata"] = json!({
                "worker_id": self.worker_id,
                "task_id": task_id,
                "processed_at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
                "duration_ms": (started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
                "source_version": version,
                "species_data_version": self.book.version(),
            });
            let new_version = version + 1;
            let mut updated = stored;
            updated.insert(
                ENRICHMENT_FIELD,
                bson::to_bson(&result).map_err(|e| TaskError::Permanent(e.to_string()))?,
            );
            updated.insert(VERSION_FIELD, new_version);

            let event = Event::new(
                &task.collection,
                &task.doc_id,
                EventAction::Enriched,
                to_api(updated.clone()),
                None,
                task.trace_id.clone(),
            );
            let subject =
                subjects::event_subject(&task.collection, &task.doc_id, EventAction::Enriched);
            let records = vec![OutboxRecord::for_event(&event, subject, new_version)];
            let marker = doc! {
                "_id": &task_id,
                "kind": &task.kind,
                "collection": &task.collection,
                "doc_id": &task.doc_id,
                "version": new_version,
                "event_id": event.id.to_string(),
                "worker": &self.worker_id,
                "at": bson::DateTime::now(),
            };
            let write = Write::Replace {
                collection: task.collection.clone(),
                id,
                expected_version: version,
                document: updated,
            };
            match self.store.commit_task_result(marker, &[write], &records).await {
                Ok(TaskCommit::Applied) => {
                    if self.fault == Some(Fault::ExitAfterCommit) {
                        tracing::error!(
                            task_id,
                            "fault injection: exiting after commit, before ack"
                        );
                        std::process::exit(86);
                    }
                    self.outbox.publish_after_commit(records);
                    return Ok(Outcome::Applied { version: new_version });
                }
                Ok(TaskCommit::AlreadyApplied) => return Ok(Outcome::AlreadyApplied),
                // The pet changed, or a concurrent transaction (perhaps this very task on another
                // worker) wrote it first: read again.
                Err(StoreError::VersionConflict) => continue,
                Err(StoreError::Mongo(err)) if err.contains_label(TRANSIENT_TRANSACTION_ERROR) => {
                    continue;
                }
                // Committed or not, the retry finds out: the marker makes it apply at most once.
                Err(StoreError::OutcomeUnknown(err) | StoreError::Mongo(err)) => {
                    return Err(transient(err));
                }
            }
        }
        Err(TaskError::Transient(format!(
            "{}/{} kept changing during {COMMIT_ATTEMPTS} attempts",
            task.collection, task.doc_id
        )))
    }
}

/// The version of the pet the stored enrichment was computed from, if any.
fn enriched_from(stored: &Document) -> Option<i64> {
    let metadata = stored.get_document(ENRICHMENT_FIELD).ok()?.get_document("metadata").ok()?;
    match metadata.get("source_version")? {
        Bson::Int64(v) => Some(*v),
        Bson::Int32(v) => Some(i64::from(*v)),
        _ => None,
    }
}

fn transient(err: mongodb::error::Error) -> TaskError {
    TaskError::Transient(format!("store: {err}"))
}

impl TaskHandler for PetsEnrich {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn handle<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<(), TaskError>> {
        Box::pin(async move {
            let outcome = self.enrich(task).await?;
            tracing::info!(task_id = %task.id, doc_id = %task.doc_id, ?outcome, trace_id = %task.trace_id, "pets.enrich done");
            Ok(())
        })
    }

    fn drain(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.outbox.drain())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_version_is_read_from_the_stored_enrichment() {
        assert_eq!(enriched_from(&doc! {"name": "Rex"}), None);
        assert_eq!(
            enriched_from(&doc! {"enrichment": {"metadata": {"source_version": 3_i64}}}),
            Some(3)
        );
        assert_eq!(
            enriched_from(&doc! {"enrichment": {"metadata": {"source_version": 2_i32}}}),
            Some(2)
        );
        assert_eq!(enriched_from(&doc! {"enrichment": "garbage"}), None);
    }
}
