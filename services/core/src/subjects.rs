//! NATS names: streams, subjects, consumers and headers. Every service builds and parses subjects
//! here, never by hand, so the layouts `events.<collection>.<doc_id>.<action>` and
//! `tasks.<priority>.<kind>` live in one place.

use crate::{event::EventAction, task::Priority};

/// Stream holding every committed change (limits retention, deduplicated by event id).
pub const EVENTS_STREAM: &str = "EVENTS";
/// Stream of work for the workers (work-queue retention).
pub const TASKS_STREAM: &str = "TASKS";
/// Stream of tasks that exhausted their deliveries or could not be decoded.
pub const DLQ_STREAM: &str = "DLQ";

pub const EVENTS_ALL: &str = "events.>";
pub const TASKS_ALL: &str = "tasks.>";
pub const DLQ_ALL: &str = "dlq.tasks.>";

/// The one durable consumer (filter `tasks.>`) that workers shared before task priorities. A
/// worker deletes it when it attaches (work-queue consumers may not overlap), and the api moves
/// tasks left on `tasks.<kind>` to `tasks.normal.<kind>` (docs/workers.md, "Upgrading").
pub const LEGACY_WORKERS_CONSUMER: &str = "workers";

/// A name for one of the broadcaster's ordered consumers on `EVENTS` (`kind`: `feed` or
/// `replay`), unique per consumer. Named consumers are created on
/// `$JS.API.CONSUMER.CREATE.EVENTS.<name>.<filter>`, the only consumer-create subject the
/// broadcaster's NATS user may publish to (charts/courier/files/nats-auth.conf).
pub fn broadcaster_consumer_name(kind: &str) -> String {
    format!("courier-broadcaster-{kind}-{}", uuid::Uuid::now_v7().simple())
}

/// `workers-<priority>`: the durable pull consumer on `TASKS` that every worker process shares for
/// one priority (filter [`priority_tasks_filter`]).
pub fn workers_consumer(priority: Priority) -> String {
    format!("workers-{priority}")
}

/// Headers on a dead letter (a message in `DLQ`), written by the worker, read by the api.
pub mod dead_letter_header {
    /// Why the task was given up.
    pub const REASON: &str = "Courier-Dead-Reason";
    /// Deliveries the task got before it was given up.
    pub const ATTEMPTS: &str = "Courier-Attempts";
    /// The `tasks.<priority>.<kind>` subject it was taken from (and is re-enqueued on by a retry).
    pub const ORIGINAL_SUBJECT: &str = "Courier-Original-Subject";
    /// The task's id (absent for an undecodable payload).
    pub const TASK_ID: &str = "Courier-Task-Id";
    /// The worker that gave up.
    pub const WORKER: &str = "Courier-Worker";
}

/// Header carrying the request's trace id from the api through NATS to broadcaster and worker.
pub const TRACE_HEADER: &str = "Courier-Trace-Id";

/// Longest collection name or document id accepted in a subject token.
pub const MAX_TOKEN_LEN: usize = 128;

/// Whether `name` can be a collection name: lowercase ASCII letter first, then letters, digits
/// or `_`, at most 64 characters. Keeps subjects, channels and MongoDB names unambiguous.
pub fn is_valid_collection_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && name.len() <= 64
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

/// Whether `id` can be a document id inside a subject token: ASCII letters, digits, `_` or `-`.
/// Dots, wildcards and whitespace would change the subject's meaning, so they are refused.
pub fn is_valid_doc_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_TOKEN_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `events.<collection>.<doc_id>.<action>`.
pub fn event_subject(collection: &str, doc_id: &str, action: EventAction) -> String {
    format!("events.{collection}.{doc_id}.{action}")
}

/// `events.<collection>.>`: every event of one collection.
pub fn collection_events_filter(collection: &str) -> String {
    format!("events.{collection}.>")
}

/// `events.<collection>.<doc_id>.*`: every event of one document.
pub fn document_events_filter(collection: &str, doc_id: &str) -> String {
    format!("events.{collection}.{doc_id}.*")
}

/// `tasks.<priority>.<kind>` (a kind such as `pets.enrich` may itself contain dots).
pub fn task_subject(priority: Priority, kind: &str) -> String {
    format!("tasks.{priority}.{kind}")
}

/// The word in `tasks.external.<kind>`: tasks for workers outside Courier (docs/workers.md,
/// "External workers"). Like a priority, it cannot start a task kind.
pub const EXTERNAL: &str = "external";

/// `tasks.external.<kind>`: where the tasks of an `external: true` trigger wait. The built-in
/// workers' consumers (`tasks.<priority>.>`) never take them.
pub fn external_task_subject(kind: &str) -> String {
    format!("tasks.{EXTERNAL}.{kind}")
}

/// `external-<kind, dots as dashes>`: the durable pull consumer (filter
/// [`external_task_subject`]) that the workers of one external kind share. Kinds hold no `-`, so
/// two kinds never share a consumer.
pub fn external_consumer(kind: &str) -> String {
    format!("{EXTERNAL}-{}", kind.replace('.', "-"))
}

/// `tasks.<priority>.>`: every task of one priority (one consumer's filter).
pub fn priority_tasks_filter(priority: Priority) -> String {
    format!("tasks.{priority}.>")
}

/// The dead letter of a task taken from `task_subject`: `dlq.` + that subject, so
/// `dlq.tasks.<priority>.<kind>` (`dlq.tasks.<kind>` for a task from before priorities).
pub fn dead_letter_subject(task_subject: &str) -> String {
    format!("dlq.{task_subject}")
}

/// A task subject read back: its priority and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSubject<'a> {
    pub priority: Priority,
    pub kind: &'a str,
    /// `tasks.<kind>`, the layout before priorities (its tasks count as normal).
    pub legacy: bool,
    /// `tasks.external.<kind>`: for an external worker (no priority; `priority` reads normal).
    pub external: bool,
}

impl TaskSubject<'_> {
    /// Where this task is enqueued again (a retried dead letter): an external task on its own
    /// subject, any other at `priority`.
    pub fn requeue_subject(&self, priority: Priority) -> String {
        if self.external {
            external_task_subject(self.kind)
        } else {
            task_subject(priority, self.kind)
        }
    }
}

/// Reads `tasks.<priority>.<kind>`, `tasks.external.<kind>` or the legacy `tasks.<kind>`; `None`
/// for anything else (a kind that is not a valid task kind, wildcards, other prefixes). Kinds
/// cannot start with a priority word or `external`, so the layouts never read the same.
pub fn parse_task_subject(subject: &str) -> Option<TaskSubject<'_>> {
    let rest = subject.strip_prefix("tasks.")?;
    let (first, after) = rest.split_once('.').unwrap_or((rest, ""));
    let parsed = match first.parse::<Priority>() {
        Ok(priority) => TaskSubject { priority, kind: after, legacy: false, external: false },
        Err(_) if first == EXTERNAL => {
            TaskSubject { priority: Priority::Normal, kind: after, legacy: false, external: true }
        }
        Err(_) => {
            TaskSubject { priority: Priority::Normal, kind: rest, legacy: true, external: false }
        }
    };
    crate::task::is_valid_task_kind(parsed.kind).then_some(parsed)
}

/// `events.chat.<room_id>.<action>`: a room's event (channel `chat:<room_id>`).
pub fn chat_event_subject(room_id: &str, action: EventAction) -> String {
    event_subject(crate::chat::CHAT_COLLECTION, room_id, action)
}

/// `events.user.<user_id>.<action>`: a user's own notification (channel `user:<user_id>`).
pub fn user_event_subject(user_id: &str, action: EventAction) -> String {
    event_subject(crate::chat::USER_COLLECTION, user_id, action)
}

/// Request/reply subject the broadcaster asks for a chat membership on (JSON
/// `chat::MembershipRequest` → `chat::MembershipReply`).
pub const CHAT_MEMBERSHIP_RPC: &str = "rpc.chat.membership";

/// Queue group every api replica serves its request/reply subjects in (one answer per request).
pub const API_QUEUE_GROUP: &str = "api";

/// The parts of an event subject, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSubject<'a> {
    pub collection: &'a str,
    pub doc_id: &'a str,
    pub action: &'a str,
}

/// Splits `events.<collection>.<doc_id>.<action>`; `None` for anything else.
pub fn parse_event_subject(subject: &str) -> Option<EventSubject<'_>> {
    let rest = subject.strip_prefix("events.")?;
    let mut parts = rest.split('.');
    let (collection, doc_id, action) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || collection.is_empty() || doc_id.is_empty() || action.is_empty() {
        return None;
    }
    Some(EventSubject { collection, doc_id, action })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_subjects_round_trip() {
        let subject = event_subject("products", "65f0a1", EventAction::Created);
        assert_eq!(subject, "events.products.65f0a1.created");
        assert_eq!(
            parse_event_subject(&subject),
            Some(EventSubject { collection: "products", doc_id: "65f0a1", action: "created" })
        );
    }

    #[test]
    fn chat_and_user_subjects_map_to_their_channels() {
        let room = "65f0c0ffee0123456789abcd";
        let subject = chat_event_subject(room, EventAction::MessageEdited);
        assert_eq!(subject, format!("events.chat.{room}.message_edited"));
        let parts = parse_event_subject(&subject).unwrap();
        assert_eq!((parts.collection, parts.doc_id), ("chat", room));
        assert_eq!(user_event_subject("u1", EventAction::Read), "events.user.u1.read");
    }

    #[test]
    fn malformed_event_subjects_are_refused() {
        for bad in
            ["events.products", "events.a.b.c.d", "tasks.a.b.c", "events..b.c", "events.a.b."]
        {
            assert_eq!(parse_event_subject(bad), None, "{bad}");
        }
    }

    #[test]
    fn task_subjects_carry_the_priority_and_read_back_in_both_layouts() {
        assert_eq!(task_subject(Priority::High, "pets.enrich"), "tasks.high.pets.enrich");
        assert_eq!(priority_tasks_filter(Priority::Low), "tasks.low.>");
        assert_eq!(workers_consumer(Priority::Normal), "workers-normal");
        assert_eq!(
            parse_task_subject("tasks.low.pets.enrich"),
            Some(TaskSubject {
                priority: Priority::Low,
                kind: "pets.enrich",
                legacy: false,
                external: false
            })
        );
        assert_eq!(
            parse_task_subject("tasks.pets.enrich"),
            Some(TaskSubject {
                priority: Priority::Normal,
                kind: "pets.enrich",
                legacy: true,
                external: false
            })
        );
        let external = parse_task_subject("tasks.external.orders.ship").unwrap();
        assert!(external.external && !external.legacy && external.kind == "orders.ship");
        assert_eq!(external.requeue_subject(Priority::High), "tasks.external.orders.ship");
        assert_eq!(external_task_subject("orders.ship"), "tasks.external.orders.ship");
        assert_eq!(external_consumer("orders.ship_now"), "external-orders-ship_now");
        for bad in [
            "tasks.high",
            "tasks.high.",
            "tasks.>",
            "tasks.high.*",
            "events.a.b.c",
            "tasks",
            "tasks.external",
            "tasks.external.>",
        ] {
            assert_eq!(parse_task_subject(bad), None, "{bad}");
        }
        assert_eq!(
            dead_letter_subject("tasks.high.pets.enrich"),
            "dlq.tasks.high.pets.enrich",
            "a dead letter keeps its priority"
        );
    }

    #[test]
    fn names_that_would_break_subjects_are_invalid() {
        assert!(is_valid_collection_name("pets"));
        assert!(is_valid_collection_name("line_items2"));
        for bad in ["", "Pets", "2pets", "pe.ts", "pets>", "pe ts", &"a".repeat(65)] {
            assert!(!is_valid_collection_name(bad), "{bad}");
        }
        assert!(is_valid_doc_id("65f0c0ffee0123456789abcd"));
        assert!(is_valid_doc_id("0192f3a4-7b6c-7d8e-9f00-112233445566"));
        for bad in ["", "a.b", "a*", ">", "a b", &"x".repeat(129)] {
            assert!(!is_valid_doc_id(bad), "{bad}");
        }
    }
}
