//! The event envelope: what every committed change becomes on the `EVENTS` stream.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What happened to a document (or, for `chat`, to a room; for `user`, to a user's own state).
/// Serialized as the snake_case word used in subjects and types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventAction {
    Created,
    Updated,
    Deleted,
    Enriched,
    /// A chat message was sent (`chat.message`).
    Message,
    MessageEdited,
    MessageDeleted,
    /// A reaction was added to or removed from a message.
    Reaction,
    MemberAdded,
    MemberRemoved,
    /// A member's role changed.
    MemberUpdated,
    RoomUpdated,
    /// A user's read marker moved (per-user channel only).
    Read,
}

impl EventAction {
    pub const ALL: [EventAction; 13] = [
        EventAction::Created,
        EventAction::Updated,
        EventAction::Deleted,
        EventAction::Enriched,
        EventAction::Message,
        EventAction::MessageEdited,
        EventAction::MessageDeleted,
        EventAction::Reaction,
        EventAction::MemberAdded,
        EventAction::MemberRemoved,
        EventAction::MemberUpdated,
        EventAction::RoomUpdated,
        EventAction::Read,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventAction::Created => "created",
            EventAction::Updated => "updated",
            EventAction::Deleted => "deleted",
            EventAction::Enriched => "enriched",
            EventAction::Message => "message",
            EventAction::MessageEdited => "message_edited",
            EventAction::MessageDeleted => "message_deleted",
            EventAction::Reaction => "reaction",
            EventAction::MemberAdded => "member_added",
            EventAction::MemberRemoved => "member_removed",
            EventAction::MemberUpdated => "member_updated",
            EventAction::RoomUpdated => "room_updated",
            EventAction::Read => "read",
        }
    }

    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == word)
    }
}

impl std::fmt::Display for EventAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON envelope of one event (an example in `docs/protocol.md`, "An event frame"; where it
/// travels in `docs/architecture.md`). The stream sequence is not part of the
/// envelope: it is assigned by JetStream and travels next to it (`seq` in `event` frames).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// UUID v7: time-ordered, and the `Nats-Msg-Id` that makes re-publishing idempotent.
    pub id: Uuid,
    /// `<collection>.<action>`, e.g. `products.created`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub collection: String,
    pub doc_id: String,
    pub data: serde_json::Value,
    /// The user who caused the change; `null` for anonymous writes and system work.
    pub actor: Option<String>,
    #[serde(with = "rfc3339")]
    pub time: DateTime<Utc>,
    pub trace_id: String,
    /// The document's version after the change (its `ETag`; 1 for a create; for a delete, one
    /// past the last): what a client reconciles a list with. Absent on chat events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// For an update, the document's state before it: what the broadcaster decides filtered
    /// and rule-checked deliveries with (`enter`, `stay`, `leave`). The broadcaster never
    /// passes it on to WebSocket clients; tasks and webhooks receive it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<serde_json::Value>,
}

impl Event {
    /// A new event with a fresh v7 id, stamped now.
    pub fn new(
        collection: &str,
        doc_id: &str,
        action: EventAction,
        data: serde_json::Value,
        actor: Option<String>,
        trace_id: String,
    ) -> Self {
        Event {
            id: Uuid::now_v7(),
            event_type: format!("{collection}.{action}"),
            collection: collection.to_owned(),
            doc_id: doc_id.to_owned(),
            data,
            actor,
            // Millisecond precision: exactly what the wire format carries.
            time: Utc::now().trunc_subsecs(3),
            trace_id,
            version: None,
            previous: None,
        }
    }

    /// The action part of `type`, if it is one Courier knows.
    pub fn action(&self) -> Option<EventAction> {
        self.event_type.rsplit_once('.').and_then(|(_, action)| EventAction::parse(action))
    }
}

/// What the broadcaster needs from an event it is about to deliver, read by [`check_envelope`].
#[derive(Debug, Default, PartialEq)]
pub struct EnvelopeHead<'a> {
    pub trace_id: std::borrow::Cow<'a, str>,
    /// The commit time (`time`), when it reads as one.
    pub committed_at: Option<DateTime<Utc>>,
}

/// Why an event read from `EVENTS` is not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeRefusal {
    /// Not an `events.<collection>.<doc_id>.<action>` subject, not a JSON object with the
    /// envelope's fields, or a field given twice.
    #[error("not a well-formed event envelope")]
    Malformed,
    /// The envelope's `type`, `collection` or `doc_id` differ from what its subject says.
    #[error("the envelope does not match its subject")]
    SubjectMismatch,
}

/// Checks an event's envelope against the subject it came on: `type` must be
/// `<collection>.<action>`, `collection` and `doc_id` those of `events.<collection>.<doc_id>.<action>`.
/// Events on `events.user.<user>.<action>` (chat's per-user events) are chat events about a
/// room: `collection` `chat`, `type` `chat.<action>`. A field given twice is refused, so the
/// fields checked here are the ones a client reads when the payload is passed on unchanged.
/// Publishers that may publish to `events.>` (a compromised worker, above all) can therefore not
/// make one channel carry another's event, nor an `enriched` event pass for a chat message.
pub fn check_envelope<'a>(
    subject: &str,
    payload: &'a str,
) -> Result<EnvelopeHead<'a>, EnvelopeRefusal> {
    use std::borrow::Cow;
    /// The envelope's fields; serde refuses a known field given twice. Unknown fields pass
    /// (a newer api may add some) and are never read.
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[allow(dead_code)]
        id: Uuid,
        #[serde(rename = "type", borrow)]
        event_type: Cow<'a, str>,
        #[serde(borrow)]
        collection: Cow<'a, str>,
        #[serde(borrow)]
        doc_id: Cow<'a, str>,
        #[allow(dead_code)]
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
        #[allow(dead_code)]
        #[serde(default, borrow)]
        actor: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        time: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        trace_id: Option<Cow<'a, str>>,
    }
    let parts = crate::subjects::parse_event_subject(subject).ok_or(EnvelopeRefusal::Malformed)?;
    let envelope: Envelope<'a> =
        serde_json::from_str(payload).map_err(|_| EnvelopeRefusal::Malformed)?;
    let per_user = parts.collection == crate::chat::USER_COLLECTION;
    let collection = if per_user { crate::chat::CHAT_COLLECTION } else { parts.collection };
    let type_matches = envelope
        .event_type
        .split_once('.')
        .is_some_and(|(c, action)| c == collection && action == parts.action);
    let matches = type_matches
        && envelope.collection == collection
        && (per_user || envelope.doc_id == parts.doc_id);
    if !matches {
        return Err(EnvelopeRefusal::SubjectMismatch);
    }
    Ok(EnvelopeHead {
        trace_id: envelope.trace_id.unwrap_or_default(),
        committed_at: envelope
            .time
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc)),
    })
}

/// RFC 3339 with millisecond precision and a `Z` suffix, so every service prints time alike.
pub(crate) mod rfc3339 {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_the_documented_fields() {
        let event = Event::new(
            "products",
            "65f0c0ffee",
            EventAction::Created,
            serde_json::json!({"nombre": "Camiseta"}),
            None,
            "trace-1".into(),
        );
        let json = serde_json::to_value(&event).unwrap();
        let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["actor", "collection", "data", "doc_id", "id", "time", "trace_id", "type"]
        );
        assert_eq!(json["type"], "products.created");
        assert_eq!(json["id"].as_str().unwrap().chars().nth(14), Some('7'), "uuid v7");
        assert!(json["time"].as_str().unwrap().ends_with('Z'));
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.action(), Some(EventAction::Created));
    }

    #[test]
    fn an_envelope_must_match_its_subject_and_name_each_field_once() {
        let event = |collection: &str, doc_id: &str, action: EventAction| {
            let event = Event::new(
                collection,
                doc_id,
                action,
                serde_json::json!({"text": "hi"}),
                Some("u1".into()),
                "t-1".into(),
            );
            serde_json::to_string(&event).unwrap()
        };
        let genuine = event("products", "p1", EventAction::Created);
        let head = check_envelope("events.products.p1.created", &genuine).unwrap();
        assert_eq!(head.trace_id, "t-1");
        assert!(head.committed_at.is_some());
        // Chat's per-user events: a chat event about a room, on the user's subject.
        let per_user = event("chat", "room1", EventAction::MemberAdded);
        assert!(check_envelope("events.user.u9.member_added", &per_user).is_ok());
        assert!(check_envelope("events.chat.room1.member_added", &per_user).is_ok());

        let message = event("chat", "room1", EventAction::Message);
        for (subject, payload) in [
            // A forged chat message on a subject a worker may publish.
            ("events.chat.room1.enriched", message.as_str()),
            ("events.user.u9.enriched", message.as_str()),
            // Another document's, another collection's, another action's event.
            ("events.products.p2.created", genuine.as_str()),
            ("events.desks.p1.created", genuine.as_str()),
            ("events.products.p1.updated", genuine.as_str()),
            ("events.chat.room2.message", message.as_str()),
        ] {
            assert_eq!(
                check_envelope(subject, payload),
                Err(EnvelopeRefusal::SubjectMismatch),
                "{subject}"
            );
        }
        // `type` given twice: the first would pass, a client might read the second.
        let repeated = genuine.replacen(
            "\"type\":\"products.created\"",
            "\"type\":\"products.created\",\"type\":\"chat.message\"",
            1,
        );
        assert_ne!(repeated, genuine);
        for (subject, payload) in [
            ("events.products.p1.created", repeated.as_str()),
            ("events.products.p1.created", "not json"),
            ("events.products.p1.created", "{\"type\":\"products.created\"}"),
            ("events.products.created", genuine.as_str()),
        ] {
            assert_eq!(
                check_envelope(subject, payload),
                Err(EnvelopeRefusal::Malformed),
                "{payload}"
            );
        }
    }

    #[test]
    fn action_words_round_trip() {
        for action in EventAction::ALL {
            assert_eq!(EventAction::parse(action.as_str()), Some(action));
            let json = serde_json::to_value(action).unwrap();
            assert_eq!(json, action.as_str(), "serde and subjects spell actions alike");
        }
        assert_eq!(EventAction::parse("exploded"), None);
    }
}
