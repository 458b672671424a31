//! `pets.enrich`: reads the pet the task names, computes its enrichment ([`enrichment`]) and
//! stores it as the pet's `enrichment` field together with a `pets.enriched` event — one
//! [`Store::modify`] round through the outbox (`Replace` at the read version, `_v` + 1, event
//! record, and the task's marker in `_task_results`), so a stored result always gets its event,
//! events of one pet stay in version order, and a redelivered task applies nothing the second time.
//!
//! `pets.recheck` (scheduled by the shipped collections a week after a pet is created): if the
//! pet is still not known to be vaccinated, computes its enrichment again even though the pet
//! did not change (ages and alerts move with time), marked `rechecked`; otherwise does nothing.

pub mod enrichment;

use std::{convert::Infallible, sync::Arc, time::Instant};

use chrono::{SecondsFormat, Utc};
use courier_core::{EventAction, Task, subjects};
use courier_store::{
    Announce, Decision, Modified, Modify, ModifyError, Outbox, Store, StoreError, TaskMarker,
};
use futures::future::BoxFuture;
use mongodb::bson::oid::ObjectId;
use serde_json::{Value, json};

use crate::{
    config::Fault,
    handlers::{TaskError, TaskHandler},
};
use enrichment::{PetFacts, SpeciesBook};

/// The task kind this handler serves.
pub const KIND: &str = "pets.enrich";

/// The kind of the delayed re-check ([`PetsRecheck`]).
pub const RECHECK_KIND: &str = "pets.recheck";

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
    /// A re-check of a pet known to be vaccinated: nothing to do.
    NotNeeded,
}

/// Whether a run recomputes only what is out of date (`pets.enrich`) or re-checks a pet whose
/// vaccination is not known to be done (`pets.recheck`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Enrich,
    Recheck,
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
        self.run(task, Mode::Enrich).await
    }

    /// Re-checks the pet named by `task` (at most once per task id).
    pub async fn recheck(&self, task: &Task) -> Result<Outcome, TaskError> {
        self.run(task, Mode::Recheck).await
    }

    async fn run(&self, task: &Task, mode: Mode) -> Result<Outcome, TaskError> {
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
        let target = Modify {
            collection: task.collection.clone(),
            id,
            precondition: None,
            // The marker commits with the result: a redelivery (or a concurrent copy of this
            // task on another worker) applies nothing.
            task: Some(TaskMarker {
                task_id: task_id.clone(),
                kind: task.kind.clone(),
                worker: self.worker_id.clone(),
            }),
            attempts: COMMIT_ATTEMPTS,
        };
        let modified = self
            .store
            .modify(&target, |pet| {
                match mode {
                    Mode::Enrich
                        if enriched_from(&pet.body).is_some_and(|s| s >= task.doc_version) =>
                    {
                        return Ok::<_, Infallible>(Decision::Keep(Outcome::UpToDate));
                    }
                    Mode::Recheck if pet.body.get("vaccinated") == Some(&Value::Bool(true)) => {
                        return Ok(Decision::Keep(Outcome::NotNeeded));
                    }
                    _ => {}
                }
                let mut result = self.book.enrich(&PetFacts::from_document(&pet.body));
                result["metadata"] = json!({
                    "worker_id": self.worker_id,
                    "task_id": task_id,
                    "processed_at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
                    "duration_ms": (started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
                    "source_version": pet.version,
                    "species_data_version": self.book.version(),
                });
                if mode == Mode::Recheck {
                    result["metadata"]["rechecked"] = json!(true);
                }
                let mut fields = pet.fields();
                fields.insert(ENRICHMENT_FIELD.to_owned(), result);
                let announce = Announce {
                    action: EventAction::Enriched,
                    actor: None,
                    trace_id: task.trace_id.clone(),
                    tasks: Vec::new(),
                    // The worker does not read collection rules: its events never carry
                    // user ids (the pet's creator stays in the stored document).
                    keep_user_ids: false,
                };
                Ok(Decision::Replace { fields, announce })
            })
            .await;
        match modified {
            Ok(Modified::Committed(committed)) => {
                if self.fault == Some(Fault::ExitAfterCommit) {
                    tracing::error!(task_id, "fault injection: exiting after commit, before ack");
                    std::process::exit(86);
                }
                let version = committed.version();
                self.outbox.publish_after_commit(committed.records);
                Ok(Outcome::Applied { version })
            }
            Ok(Modified::Kept(outcome)) => Ok(outcome),
            Ok(Modified::AlreadyApplied) => Ok(Outcome::AlreadyApplied),
            Err(ModifyError::NotFound) => Ok(Outcome::Deleted),
            // The pet changed, or a concurrent transaction (perhaps this very task on another
            // worker) wrote it first, in every round.
            Err(ModifyError::Contended { attempts }) => Err(TaskError::Transient(format!(
                "{}/{} kept changing during {attempts} attempts",
                task.collection, task.doc_id
            ))),
            Err(ModifyError::Unstorable(err)) => Err(TaskError::Permanent(err.to_string())),
            // Committed or not, the retry finds out: the marker makes it apply at most once.
            Err(ModifyError::Store(err)) => Err(transient(err)),
            Err(ModifyError::PreconditionFailed { .. }) => {
                Err(TaskError::Transient("the pet changed during the commit".into()))
            }
            Err(ModifyError::Rejected(never)) => match never {},
        }
    }
}

/// The version of the pet the stored enrichment was computed from, if any.
fn enriched_from(pet: &Value) -> Option<i64> {
    pet.get(ENRICHMENT_FIELD)?.get("metadata")?.get("source_version")?.as_i64()
}

fn transient(err: StoreError) -> TaskError {
    let err = match err {
        StoreError::Mongo(err) | StoreError::OutcomeUnknown(err) => err.to_string(),
        StoreError::VersionConflict => err.to_string(),
    };
    TaskError::Transient(format!("store: {err}"))
}

/// `pets.recheck`, sharing [`PetsEnrich`]'s store, outbox and species data.
pub struct PetsRecheck(pub Arc<PetsEnrich>);

impl TaskHandler for PetsRecheck {
    fn kind(&self) -> &'static str {
        RECHECK_KIND
    }

    fn handle<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<(), TaskError>> {
        Box::pin(async move {
            let outcome = self.0.recheck(task).await?;
            tracing::info!(task_id = %task.id, doc_id = %task.doc_id, ?outcome, trace_id = %task.trace_id, "pets.recheck done");
            Ok(())
        })
    }
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
        assert_eq!(enriched_from(&json!({"name": "Rex"})), None);
        assert_eq!(
            enriched_from(&json!({"enrichment": {"metadata": {"source_version": 3}}})),
            Some(3)
        );
        assert_eq!(enriched_from(&json!({"enrichment": "garbage"})), None);
        assert_eq!(
            enriched_from(&json!({"enrichment": {"metadata": {"source_version": "3"}}})),
            None
        );
    }
}
