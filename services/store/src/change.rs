//! A document change as Courier announces it: the event every committed change produces and the
//! tasks its collection triggers, as the outbox records that commit with the change's writes
//! (built here and nowhere else).

use courier_core::{Event, EventAction, Task, subjects};
use serde_json::Value;

use crate::outbox::OutboxRecord;

/// How a change is announced: its event's action and actor, the trace, and the task kinds it
/// enqueues (the collection's triggers for that action).
#[derive(Debug, Clone, PartialEq)]
pub struct Announce {
    pub action: EventAction,
    pub actor: Option<String>,
    pub trace_id: String,
    pub tasks: Vec<String>,
}

/// One committed change of one document.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub collection: String,
    pub doc_id: String,
    pub action: EventAction,
    /// The document version the change produces (1 for a create).
    pub version: i64,
    /// The event's `data`: the new document, or the deleted one.
    pub data: Value,
    pub actor: Option<String>,
    pub trace_id: String,
    /// Kinds of the tasks to enqueue for this change (the collection's triggers).
    pub tasks: Vec<String>,
}

impl Change {
    /// The change to `collection`/`doc_id` producing `version`, with event `data`.
    pub fn new(
        collection: &str,
        doc_id: String,
        version: i64,
        data: Value,
        announce: Announce,
    ) -> Self {
        let Announce { action, actor, trace_id, tasks } = announce;
        Change {
            collection: collection.to_owned(),
            doc_id,
            action,
            version,
            data,
            actor,
            trace_id,
            tasks,
        }
    }

    /// The outbox records: the event first, then one task per kind in [`Change::tasks`].
    pub fn records(&self) -> Vec<OutboxRecord> {
        let event = Event::new(
            &self.collection,
            &self.doc_id,
            self.action,
            self.data.clone(),
            self.actor.clone(),
            self.trace_id.clone(),
        );
        let subject = subjects::event_subject(&self.collection, &self.doc_id, self.action);
        let mut records = Vec::with_capacity(1 + self.tasks.len());
        records.push(OutboxRecord::for_event(&event, subject, self.version));
        for kind in &self.tasks {
            let task = Task::new(
                kind,
                &self.collection,
                &self.doc_id,
                self.version,
                self.actor.clone(),
                self.trace_id.clone(),
            );
            records.push(OutboxRecord::for_task(&task));
        }
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_event_comes_first_then_one_task_per_kind() {
        let change = Change {
            collection: "pets".into(),
            doc_id: "65f0c0ffee0123456789abcd".into(),
            action: EventAction::Updated,
            version: 3,
            data: json!({"id": "65f0c0ffee0123456789abcd", "name": "Rex"}),
            actor: Some("u1".into()),
            trace_id: "trace-1".into(),
            tasks: vec!["pets.enrich".into()],
        };
        let records = change.records();
        assert_eq!(records.len(), 2);
        let event: Event = serde_json::from_str(&records[0].payload).unwrap();
        assert_eq!(event.event_type, "pets.updated");
        assert_eq!(event.data, change.data);
        assert_eq!(event.actor.as_deref(), Some("u1"));
        assert_eq!(records[0].id, event.id.to_string());
        assert_eq!(records[0].subject, "events.pets.65f0c0ffee0123456789abcd.updated");
        assert_eq!((records[0].doc_version, records[0].trace_id.as_str()), (3, "trace-1"));
        let task: Task = serde_json::from_str(&records[1].payload).unwrap();
        assert_eq!((task.kind.as_str(), task.doc_version), ("pets.enrich", 3));
        assert_eq!(records[1].subject, "tasks.pets.enrich");
    }
}
