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
        }
    }

    /// The action part of `type`, if it is one Courier knows.
    pub fn action(&self) -> Option<EventAction> {
        self.event_type.rsplit_once('.').and_then(|(_, action)| EventAction::parse(action))
    }
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
    fn action_words_round_trip() {
        for action in EventAction::ALL {
            assert_eq!(EventAction::parse(action.as_str()), Some(action));
            let json = serde_json::to_value(action).unwrap();
            assert_eq!(json, action.as_str(), "serde and subjects spell actions alike");
        }
        assert_eq!(EventAction::parse("exploded"), None);
    }
}
