//! The one read-modify-commit loop ([`Store::modify`]): read the document, let the caller decide
//! its next state, commit that (guarded by the version read) together with the change's outbox
//! records, and on a lost optimistic-concurrency race read again and decide again, pacing the
//! rounds with [`Backoff`]. A caller that states a [`Precondition`] (`If-Match`) is never
//! retried: a stale version fails instead. A change made for a task commits with the task's
//! marker ([`TaskMarker`]), so it applies at most once however often the task runs.

use std::time::Duration;

use courier_core::{EventAction, backoff::Backoff};
use mongodb::bson::{self, oid::ObjectId};
use serde_json::{Map, Value};

use crate::{
    change::{Announce, Change},
    documents::{StoredDocument, to_api, to_stored},
    outbox::OutboxRecord,
    scheduled::ScheduledTask,
    store::{Store, StoreError, Write},
    task_results::{TaskCommit, TaskMarker},
};

/// The first pause between rounds is at most this long…
const RETRY_MIN: Duration = Duration::from_millis(2);
/// …and no pause is longer than this.
const RETRY_MAX: Duration = Duration::from_millis(80);

/// `If-Match`: `*` (any version) or the versions the caller accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    Any,
    Versions(Vec<i64>),
}

impl Precondition {
    pub fn matches(&self, version: i64) -> bool {
        match self {
            Precondition::Any => true,
            Precondition::Versions(versions) => versions.contains(&version),
        }
    }
}

/// Which document to change, and how.
#[derive(Debug, Clone)]
pub struct Modify {
    pub collection: String,
    pub id: ObjectId,
    /// Fail (no retry) unless the document's version matches.
    pub precondition: Option<Precondition>,
    /// The task this change is the effect of: commit at most once per task id.
    pub task: Option<TaskMarker>,
    /// Rounds before giving up on a document that keeps changing ([`ModifyError::Contended`]).
    pub attempts: u32,
}

/// What the caller decided, given the current document.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<T> {
    /// The document's new fields (the api form without `id`); the version goes up by one.
    Replace { fields: Map<String, Value>, announce: Announce },
    /// Delete the document (the event carries its last state).
    Delete { announce: Announce },
    /// Change nothing, and return this.
    Keep(T),
}

/// What [`Store::modify`] did.
#[derive(Debug, Clone)]
pub enum Modified<T> {
    Committed(Box<Committed>),
    /// The caller decided to change nothing.
    Kept(T),
    /// The task's effect had been committed before: nothing was written.
    AlreadyApplied,
}

/// A committed change. Its `records` are in the outbox: hand them to
/// [`Outbox::publish_after_commit`](crate::Outbox::publish_after_commit) (the relay publishes
/// them otherwise, just later).
#[derive(Debug, Clone)]
#[must_use]
pub struct Committed {
    pub change: Change,
    pub records: Vec<OutboxRecord>,
}

impl Committed {
    /// The version the change produced.
    pub fn version(&self) -> i64 {
        self.change.version
    }

    /// The document's new api form; `None` after a delete.
    pub fn document(&self) -> Option<&Value> {
        (self.change.action != EventAction::Deleted).then_some(&self.change.data)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModifyError<E> {
    #[error("the document does not exist")]
    NotFound,
    /// The precondition does not hold: `current` is the version read, or `None` when the
    /// document changed between the read and the commit.
    #[error("the precondition does not match the document's version")]
    PreconditionFailed { current: Option<i64> },
    /// Every round lost its race against other writers.
    #[error("the document changed during each of {attempts} attempts")]
    Contended { attempts: u32 },
    /// The caller's decision refused the change.
    #[error(transparent)]
    Rejected(E),
    /// The new fields have no stored form (e.g. an integer beyond 64 bits).
    #[error("the document cannot be stored: {0}")]
    Unstorable(#[source] bson::ser::Error),
    #[error(transparent)]
    Store(StoreError),
}

impl<E> From<mongodb::error::Error> for ModifyError<E> {
    fn from(err: mongodb::error::Error) -> Self {
        ModifyError::Store(StoreError::Mongo(err))
    }
}

/// `writes` plus the inserts of `change`'s delayed tasks, which commit with it.
fn with_scheduled(mut writes: Vec<Write>, change: &Change) -> Vec<Write> {
    writes.extend(change.scheduled_tasks().iter().map(ScheduledTask::write));
    writes
}

impl Store {
    /// Commits `writes` with `change`'s outbox records and scheduled tasks (one transaction).
    pub async fn commit_change(
        &self,
        writes: &[Write],
        change: Change,
    ) -> Result<Committed, StoreError> {
        let records = change.records();
        let writes = with_scheduled(writes.to_vec(), &change);
        self.commit(&writes, &records).await?;
        Ok(Committed { change, records })
    }

    /// Reads `target`'s document, asks `decide` what to do with it and commits that with its
    /// outbox records; a lost race (without a precondition) reads and decides again, up to
    /// `target.attempts` rounds with a jittered pause between them.
    pub async fn modify<T, E>(
        &self,
        target: &Modify,
        mut decide: impl FnMut(&StoredDocument) -> Result<Decision<T>, E>,
    ) -> Result<Modified<T>, ModifyError<E>> {
        let mut backoff = Backoff::with_min(RETRY_MIN, RETRY_MAX);
        for attempt in 0..target.attempts {
            if attempt > 0 {
                backoff.sleep().await;
            }
            if let Some(task) = &target.task
                && self.task_applied(&task.task_id).await?
            {
                return Ok(Modified::AlreadyApplied);
            }
            let Some(current) = self.get(&target.collection, target.id).await? else {
                return Err(ModifyError::NotFound);
            };
            if let Some(precondition) = &target.precondition
                && !precondition.matches(current.version)
            {
                return Err(ModifyError::PreconditionFailed { current: Some(current.version) });
            }
            let version = current.version + 1;
            let (write, data, announce) = match decide(&current).map_err(ModifyError::Rejected)? {
                Decision::Keep(kept) => return Ok(Modified::Kept(kept)),
                Decision::Delete { announce } => {
                    let write = Write::Delete {
                        collection: target.collection.clone(),
                        id: target.id,
                        expected_version: current.version,
                    };
                    (write, current.body.clone(), announce)
                }
                Decision::Replace { fields, announce } => {
                    let stored = to_stored(target.id, version, &Value::Object(fields))
                        .map_err(ModifyError::Unstorable)?;
                    let document = to_api(stored.clone());
                    let write = Write::Replace {
                        collection: target.collection.clone(),
                        id: target.id,
                        expected_version: current.version,
                        document: stored,
                    };
                    (write, document, announce)
                }
            };
            let mut change =
                Change::new(&target.collection, target.id.to_hex(), version, data, announce);
            if change.action != courier_core::EventAction::Deleted {
                change = change.with_previous(current.body.clone());
            }
            let records = change.records();
            let writes = with_scheduled(vec![write], &change);
            let committed = match &target.task {
                None => self.commit(&writes, &records).await.map(|()| true),
                Some(task) => {
                    let marker = task.document(&change, &records[0].id);
                    self.commit_task_result(marker, &writes, &records)
                        .await
                        .map(|commit| commit == TaskCommit::Applied)
                }
            };
            match committed {
                Ok(true) => {
                    return Ok(Modified::Committed(Box::new(Committed { change, records })));
                }
                Ok(false) => return Ok(Modified::AlreadyApplied),
                Err(StoreError::VersionConflict) if target.precondition.is_some() => {
                    return Err(ModifyError::PreconditionFailed { current: None });
                }
                Err(err) if target.precondition.is_none() && err.is_lost_race() => {
                    tracing::debug!(collection = %target.collection, id = %target.id, attempt, %err, "lost a write race; reading again");
                }
                Err(err) => return Err(ModifyError::Store(err)),
            }
        }
        Err(ModifyError::Contended { attempts: target.attempts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preconditions_match_any_or_listed_versions() {
        assert!(Precondition::Any.matches(9));
        assert!(Precondition::Versions(vec![2, 3]).matches(3));
        assert!(!Precondition::Versions(vec![2]).matches(3));
        assert!(!Precondition::Versions(vec![]).matches(1));
    }

    #[test]
    fn only_conflicts_from_a_reachable_store_count_as_lost_races() {
        assert!(StoreError::VersionConflict.is_lost_race());
        let unknown = mongodb::error::Error::custom("cut off");
        assert!(!StoreError::OutcomeUnknown(unknown).is_lost_race());
        let other = mongodb::error::Error::custom("boom");
        assert!(!StoreError::Mongo(other).is_lost_race());
    }
}
