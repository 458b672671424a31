//! The task envelope: work for the workers, published on `tasks.<priority>.<kind>` through the
//! outbox, now or (with `not_before`) once its time has come. Also the task's priority and the
//! bound on how far ahead a task may be scheduled.

use std::{fmt, str::FromStr, time::Duration};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Which line a task waits in. Workers take high before normal before low, except that a share
/// of their pulls goes to the lower lines first so they never starve (docs/workers.md).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    /// Every priority, highest first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// Position in [`Priority::ALL`] (0 = high).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn is_normal(&self) -> bool {
        *self == Priority::Normal
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == text)
            .ok_or_else(|| format!("'{text}' is not a priority (high, normal or low)"))
    }
}

/// The furthest ahead a task may be scheduled (a bound on input: `not_before`, a rule's `delay`):
/// the longest duration any setting accepts.
pub const MAX_DELAY: Duration = crate::config::MAX_DURATION;

/// One unit of work. Tasks name the document they concern: a built-in handler reads the current
/// state, so a late or repeated task never applies stale data. A task enqueued by a document
/// change also carries that change's event ([`Task::event`]): what a webhook delivers, and the
/// only record of a deleted document's last state.
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
    /// The line it was enqueued in. The subject it travels on is what workers go by: a dead
    /// letter retried at another priority keeps this field as it was.
    #[serde(default, skip_serializing_if = "Priority::is_normal")]
    pub priority: Priority,
    /// Held back until this time (a scheduled task); absent: due at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// The event of the change that enqueued the task, exactly as subscribers receive it (absent
    /// for tasks enqueued before tasks carried it, and for tasks no change enqueued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<crate::Event>,
    /// For a worker outside Courier: published on `tasks.external.<kind>`, whatever `priority`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
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
            priority: Priority::Normal,
            not_before: None,
            event: None,
            external: false,
        }
    }

    /// Carries `event`, the change's event (see [`Task::event`]).
    pub fn with_event(mut self, event: crate::Event) -> Self {
        self.event = Some(event);
        self
    }

    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Holds the task back for `delay` after its creation.
    pub fn delayed(mut self, delay: Duration) -> Self {
        let delay =
            chrono::Duration::from_std(delay.min(MAX_DELAY)).unwrap_or(chrono::Duration::MAX);
        self.not_before = Some(self.time + delay);
        self
    }

    /// For an external worker (see [`Task::external`]).
    pub fn for_external_worker(mut self) -> Self {
        self.external = true;
        self
    }

    /// `tasks.<priority>.<kind>`, or `tasks.external.<kind>`: where it is published.
    pub fn subject(&self) -> String {
        if self.external {
            crate::subjects::external_task_subject(&self.kind)
        } else {
            crate::subjects::task_subject(self.priority, &self.kind)
        }
    }
}

/// Whether `kind` is a valid task kind: dot-separated lowercase words (`pets.enrich`) whose first
/// word is neither a priority nor `external` (a task subject must read one way only).
pub fn is_valid_task_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 128
        && kind.split('.').all(crate::subjects::is_valid_collection_name)
        && kind.split('.').next().is_none_or(|first| {
            first.parse::<Priority>().is_err() && first != crate::subjects::EXTERNAL
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_round_trip_as_json() {
        let task = Task::new("pets.enrich", "pets", "abc", 2, None, "t".into());
        let json = serde_json::to_string(&task).unwrap();
        assert!(!json.contains("priority") && !json.contains("not_before"), "{json}");
        assert_eq!(serde_json::from_str::<Task>(&json).unwrap(), task);
        let scheduled = task.with_priority(Priority::High).delayed(Duration::from_secs(60));
        let json = serde_json::to_string(&scheduled).unwrap();
        assert!(json.contains(r#""priority":"high""#), "{json}");
        let back: Task = serde_json::from_str(&json).unwrap();
        assert_eq!(back, scheduled);
        assert_eq!(back.not_before, Some(back.time + chrono::Duration::seconds(60)));
        assert_eq!(back.subject(), "tasks.high.pets.enrich");
        let external = back.for_external_worker();
        let json = serde_json::to_string(&external).unwrap();
        assert!(json.contains(r#""external":true"#), "{json}");
        assert_eq!(external.subject(), "tasks.external.pets.enrich");
    }

    #[test]
    fn an_envelope_from_before_priorities_is_normal_and_due_at_once() {
        let old = r#"{"id":"0192f3a4-7b6c-7d8e-9f00-112233445566","kind":"pets.enrich","collection":"pets",
            "doc_id":"a","doc_version":1,"actor":null,"trace_id":"t","time":"2025-01-01T00:00:00Z"}"#;
        let task: Task = serde_json::from_str(old).unwrap();
        assert_eq!((task.priority, task.not_before), (Priority::Normal, None));
    }

    #[test]
    fn task_kinds_are_dotted_lowercase_words_not_starting_with_a_priority() {
        assert!(is_valid_task_kind("pets.enrich"));
        assert!(is_valid_task_kind("lowercase.things"));
        for bad in [
            "",
            "pets.",
            ".enrich",
            "Pets.enrich",
            "pets.*",
            "pets.>",
            "high.x",
            "low",
            "normal.a",
            "external.a",
        ] {
            assert!(!is_valid_task_kind(bad), "{bad}");
        }
    }

    #[test]
    fn priorities_parse_and_order_highest_first() {
        assert_eq!("low".parse::<Priority>(), Ok(Priority::Low));
        assert!("urgent".parse::<Priority>().unwrap_err().contains("high, normal or low"));
        assert!(Priority::High < Priority::Normal && Priority::Normal < Priority::Low);
        assert_eq!(Priority::ALL.map(Priority::index), [0, 1, 2]);
        assert_eq!(Priority::default(), Priority::Normal);
    }

    #[test]
    fn delays_have_a_unit_and_a_bound() {
        assert_eq!(crate::config::parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(crate::config::parse_duration(" 90s "), Ok(Duration::from_secs(90)));
        assert_eq!(crate::config::parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(crate::config::parse_duration("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(crate::config::parse_duration("365d"), Ok(MAX_DELAY));
        for bad in ["", "7", "d", "1.5h", "-1s", "7 days", "366d", "99999999999999999999d"] {
            assert!(crate::config::parse_duration(bad).is_err(), "{bad}");
        }
    }
}
