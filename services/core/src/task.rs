//! The task envelope: work for the workers, published on `tasks.<kind>` through the outbox.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One unit of work. Tasks name the document they concern rather than carrying it: a worker
/// reads the current state, so a late or repeated task never applies stale data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// UUID v7; the `Nats-Msg-Id`, and the idempotency key of the task's effects.
    pub id: Uuid,
    /// E.g. `pets.enrich`.
    pub kind: String,
    pub collection: String,
    pub doc_id: String,
    /// The document version that triggered the task.
    pub doc_version: i64,
    pub actor: Option<String>,
    pub trace_id: String,
    pub time: DateTime<Utc>,
}

impl Task {
    pub fn new(
        kind: &str,
        collection: &str,
        doc_id: &str,
        doc_version: i64,
        actor: Option<String>,
        trace_id: String,
    ) -> Self {
        Task {
            id: Uuid::now_v7(),
            kind: kind.to_owned(),
            collection: collection.to_owned(),
            doc_id: doc_id.to_owned(),
            doc_version,
            actor,
            trace_id,
            time: Utc::now(),
        }
    }
}

/// Whether `kind` is a valid task kind: dot-separated lowercase words (`pets.enrich`).
pub fn is_valid_task_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 128
        && kind.split('.').all(crate::subjects::is_valid_collection_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_round_trip_as_json() {
        let task = Task::new("pets.enrich", "pets", "abc", 2, None, "t".into());
        let json = serde_json::to_string(&task).unwrap();
        assert_eq!(serde_json::from_str::<Task>(&json).unwrap(), task);
    }

    #[test]
    fn task_kinds_are_dotted_lowercase_words() {
        assert!(is_valid_task_kind("pets.enrich"));
        for bad in ["", "pets.", ".enrich", "Pets.enrich", "pets.*", "pets.>"] {
            assert!(!is_valid_task_kind(bad), "{bad}");
        }
    }
}
