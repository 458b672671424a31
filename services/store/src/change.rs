//! A document change as Courier announces it: the event every committed change produces and the
//! tasks its collection triggers, as the outbox records (and, for delayed tasks, the scheduled
//! tasks) that commit with the change's writes (built here and nowhere else). This is also where
//! user ids leave events whose collection anonymous clients may read ([`Announce::keep_user_ids`]).
//! Every task a change enqueues carries the change's event (for a delete: the last state).

use std::time::Duration;

use courier_core::{Event, EventAction, Priority, Task, subjects};
use serde_json::Value;

use crate::{outbox::OutboxRecord, scheduled::ScheduledTask};

/// A task a change enqueues: its kind, its priority, and how long it is held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRequest {
    pub kind: String,
    pub priority: Priority,
    /// `None`: enqueued with the change. Otherwise it waits in `_scheduled_tasks` until due.
    pub delay: Option<Duration>,
    /// For a worker outside Courier (`tasks.external.<kind>`; see [`Task::external`]).
    pub external: bool,
}

impl TaskRequest {
    /// A normal-priority task, due at once.
    pub fn now(kind: &str) -> Self {
        TaskRequest {
            kind: kind.to_owned(),
            priority: Priority::Normal,
            delay: None,
            external: false,
        }
    }
}

/// How a change is announced: its event's action and actor, the trace, and the tasks it enqueues
/// (the collection's triggers for that action).
#[derive(Debug, Clone, PartialEq)]
pub struct Announce {
    pub action: EventAction,
    pub actor: Option<String>,
    pub trace_id: String,
    pub tasks: Vec<TaskRequest>,
    /// Whether the event may carry user ids: `data.created_by` and `actor`. False for a
    /// collection anonymous clients can read (unless it says `expose_creator`): its events then
    /// carry neither. Tasks always keep the actor (only workers read them).
    pub keep_user_ids: bool,
}

/// The document field holding its creator's user id.
pub const CREATED_BY: &str = courier_core::collection_spec::CREATED_BY;

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
    /// For an update: the document before it (the event's `previous`).
    pub previous: Option<Value>,
    pub actor: Option<String>,
    pub trace_id: String,
    /// The tasks to enqueue for this change (the collection's triggers).
    pub tasks: Vec<TaskRequest>,
    /// See [`Announce::keep_user_ids`].
    pub keep_user_ids: bool,
    /// The event's id and time, fixed once so that the outbox event and the event every task
    /// carries ([`Task::event`]) are the same.
    pub event_id: uuid::Uuid,
    pub event_time: chrono::DateTime<chrono::Utc>,
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
        let Announce { action, actor, trace_id, tasks, keep_user_ids } = announce;
        Change {
            event_id: uuid::Uuid::now_v7(),
            // Millisecond precision: exactly what the wire format carries.
            event_time: chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 3),
            collection: collection.to_owned(),
            doc_id,
            action,
            version,
            data,
            previous: None,
            actor,
            trace_id,
            tasks,
            keep_user_ids,
        }
    }

    /// The same change, recording the document's state before it (updates).
    pub fn with_previous(mut self, previous: Value) -> Self {
        self.previous = Some(previous);
        self
    }

    /// The outbox records: the event first, then one per task of [`Change::tasks`] that is due
    /// at once.
    pub fn records(&self) -> Vec<OutboxRecord> {
        let event = self.event();
        let subject = subjects::event_subject(&self.collection, &self.doc_id, self.action);
        let mut records = Vec::with_capacity(1 + self.tasks.len());
        records.push(OutboxRecord::for_event(&event, subject, self.version));
        for request in self.tasks.iter().filter(|t| t.delay.is_none()) {
            records.push(OutboxRecord::for_task(&self.task(request)));
        }
        records
    }

    /// The change's event, as subscribers receive it (without user ids unless
    /// [`Change::keep_user_ids`]).
    pub fn event(&self) -> Event {
        let mut data = self.data.clone();
        let mut previous = self.previous.clone();
        let mut actor = self.actor.clone();
        if !self.keep_user_ids {
            for state in std::iter::once(&mut data).chain(previous.as_mut()) {
                if let Some(object) = state.as_object_mut() {
                    object.remove(CREATED_BY);
                }
            }
            actor = None;
        }
        Event {
            id: self.event_id,
            event_type: format!("{}.{}", self.collection, self.action),
            collection: self.collection.clone(),
            doc_id: self.doc_id.clone(),
            data,
            actor,
            time: self.event_time,
            trace_id: self.trace_id.clone(),
            version: Some(self.version),
            previous,
        }
    }

    /// The delayed tasks of [`Change::tasks`], to insert into `_scheduled_tasks` in the change's
    /// transaction.
    pub fn scheduled_tasks(&self) -> Vec<ScheduledTask> {
        self.tasks
            .iter()
            .filter_map(|request| {
                let delay = request.delay?;
                Some(ScheduledTask::for_task(&self.task(request).delayed(delay)))
            })
            .collect()
    }

    fn task(&self, request: &TaskRequest) -> Task {
        let task = Task::new(
            &request.kind,
            &self.collection,
            &self.doc_id,
            self.version,
            self.actor.clone(),
            self.trace_id.clone(),
        )
        .with_priority(request.priority)
        .with_event(self.event());
        if request.external { task.for_external_worker() } else { task }
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
            previous: Some(json!({"id": "65f0c0ffee0123456789abcd", "name": "Max"})),
            actor: Some("u1".into()),
            trace_id: "trace-1".into(),
            tasks: vec![
                TaskRequest::now("pets.enrich"),
                TaskRequest {
                    kind: "pets.recheck".into(),
                    priority: Priority::Low,
                    delay: Some(Duration::from_secs(7 * 86_400)),
                    external: false,
                },
            ],
            keep_user_ids: true,
            event_id: uuid::Uuid::now_v7(),
            event_time: chrono::Utc::now(),
        };
        let records = change.records();
        assert_eq!(records.len(), 2, "the delayed task is not in the outbox");
        let event: Event = serde_json::from_str(&records[0].payload).unwrap();
        assert_eq!(event.event_type, "pets.updated");
        assert_eq!(event.data, change.data);
        assert_eq!((event.version, event.previous.as_ref()), (Some(3), change.previous.as_ref()));
        assert_eq!(event.actor.as_deref(), Some("u1"));
        assert_eq!(records[0].id, event.id.to_string());
        assert_eq!(records[0].subject, "events.pets.65f0c0ffee0123456789abcd.updated");
        assert_eq!((records[0].doc_version, records[0].trace_id.as_str()), (3, "trace-1"));
        let task: Task = serde_json::from_str(&records[1].payload).unwrap();
        assert_eq!((task.kind.as_str(), task.doc_version), ("pets.enrich", 3));
        assert_eq!(records[1].subject, "tasks.normal.pets.enrich");
        assert_eq!(task.event.as_ref(), Some(&event), "the task carries the change's event");

        let scheduled = change.scheduled_tasks();
        assert_eq!(scheduled.len(), 1);
        let task: Task = serde_json::from_str(&scheduled[0].payload).unwrap();
        assert_eq!((task.kind.as_str(), task.priority), ("pets.recheck", Priority::Low));
        assert_eq!(task.not_before, Some(task.time + chrono::Duration::days(7)));
        assert_eq!(scheduled[0].subject, "tasks.low.pets.recheck");
        assert_eq!(task.event.map(|e| e.id), Some(event.id));
        assert_eq!(
            scheduled[0].due.timestamp_millis(),
            task.not_before.unwrap().timestamp_millis()
        );
    }

    #[test]
    fn events_without_user_ids_drop_the_creator_and_actor_but_tasks_keep_the_actor() {
        let change = Change {
            collection: "pets".into(),
            doc_id: "65f0c0ffee0123456789abcd".into(),
            action: EventAction::Created,
            version: 1,
            data: json!({"id": "65f0c0ffee0123456789abcd", "name": "Rex", "created_by": "u1"}),
            previous: None,
            actor: Some("u1".into()),
            trace_id: "trace-1".into(),
            tasks: vec![TaskRequest::now("pets.enrich")],
            keep_user_ids: false,
            event_id: uuid::Uuid::now_v7(),
            event_time: chrono::Utc::now(),
        };
        let records = change.records();
        let event: Event = serde_json::from_str(&records[0].payload).unwrap();
        assert_eq!(event.data, json!({"id": "65f0c0ffee0123456789abcd", "name": "Rex"}));
        assert_eq!(event.actor, None);
        let task: Task = serde_json::from_str(&records[1].payload).unwrap();
        assert_eq!(task.actor.as_deref(), Some("u1"));
        assert_eq!(task.event.as_ref(), Some(&event), "the task's event is the subscribers'");
        let kept = Change { keep_user_ids: true, ..change }.records();
        let event: Event = serde_json::from_str(&kept[0].payload).unwrap();
        assert_eq!(
            (event.data["created_by"].as_str(), event.actor.as_deref()),
            (Some("u1"), Some("u1"))
        );
    }
}
