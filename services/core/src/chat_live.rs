//! Chat's live side between broadcasters (docs/chat.md): the membership timeout, and the
//! ephemeral signals broadcasters exchange over core NATS, never JetStream (`ephemeral.chat.<room_id>.typing|presence`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long a broadcaster waits for a membership reply before refusing (fail closed).
pub const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest ephemeral signal a broadcaster accepts (bigger ones are dropped unread).
pub const MAX_SIGNAL_BYTES: usize = 256 * 1024;
/// Most users one presence signal names (heartbeats of bigger rooms are sent in chunks).
pub const MAX_PRESENCE_USERS_PER_SIGNAL: usize = 500;
/// Longest presence TTL a receiver honours, whatever the sender asks for.
pub const MAX_PRESENCE_TTL: Duration = Duration::from_secs(30);

/// Who a typing or presence frame is about: a user's id and display name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChatUser {
    pub id: String,
    pub username: String,
}

/// The two kinds of ephemeral chat signal, the last token of their subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    Typing,
    Presence,
}

impl SignalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Typing => "typing",
            SignalKind::Presence => "presence",
        }
    }
}

/// `ephemeral.chat.<room_id>.typing`.
pub fn typing_subject(room_id: &str) -> String {
    format!("ephemeral.chat.{room_id}.typing")
}

/// `ephemeral.chat.<room_id>.presence`.
pub fn presence_subject(room_id: &str) -> String {
    format!("ephemeral.chat.{room_id}.presence")
}

/// `ephemeral.chat.<room_id>.*`: both signals of one room (what a broadcaster with local
/// subscribers of the room listens to).
pub fn room_signals_filter(room_id: &str) -> String {
    format!("ephemeral.chat.{room_id}.*")
}

/// Splits `ephemeral.chat.<room_id>.<typing|presence>`; `None` for anything else.
pub fn parse_signal_subject(subject: &str) -> Option<(&str, SignalKind)> {
    let rest = subject.strip_prefix("ephemeral.chat.")?;
    let (room, kind) = rest.split_once('.')?;
    if !crate::subjects::is_valid_doc_id(room) {
        return None;
    }
    let kind = match kind {
        "typing" => SignalKind::Typing,
        "presence" => SignalKind::Presence,
        _ => return None,
    };
    Some((room, kind))
}

/// On `ephemeral.chat.<room_id>.typing`: `user` started (or goes on) typing, or stopped.
/// Every broadcaster also ends an indicator by itself a few seconds after the last `active`
/// signal, so a broadcaster that dies mid-sentence cannot leave one stuck.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingSignal {
    /// The broadcaster instance that sent it (it ignores its own).
    pub node: String,
    pub user: ChatUser,
    pub active: bool,
}

/// On `ephemeral.chat.<room_id>.presence`: one broadcaster's users in the room.
///
/// Entries are per (broadcaster, user) and expire `ttl_ms` after they were received unless a
/// later signal names them again; a broadcaster repeats its users every heartbeat, names a new
/// one at once, and lists a user in `left` once their last connection there has been gone for
/// the grace period. A room's presence is the union over broadcasters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceSignal {
    pub node: String,
    #[serde(default)]
    pub present: Vec<ChatUser>,
    /// Ids of users no longer on `node`.
    #[serde(default)]
    pub left: Vec<String>,
    /// How long the `present` entries last without a refresh.
    pub ttl_ms: u64,
    /// The sender just started following the room: every broadcaster with users in it answers
    /// with its own signal now rather than at its next heartbeat.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sync: bool,
}

impl PresenceSignal {
    /// The TTL a receiver applies: the sender's, at most [`MAX_PRESENCE_TTL`].
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms).min(MAX_PRESENCE_TTL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_subjects_round_trip_and_refuse_anything_else() {
        let room = "65f0c0ffee0123456789abcd";
        assert_eq!(parse_signal_subject(&typing_subject(room)), Some((room, SignalKind::Typing)));
        assert_eq!(
            parse_signal_subject(&presence_subject(room)),
            Some((room, SignalKind::Presence))
        );
        assert_eq!(room_signals_filter(room), format!("ephemeral.chat.{room}.*"));
        for bad in [
            "ephemeral.chat.abc",
            "ephemeral.chat.abc.shouting",
            "ephemeral.chat..typing",
            "ephemeral.chat.a*b.typing",
            "events.chat.abc.typing",
            "ephemeral.chat.abc.typing.extra",
        ] {
            assert_eq!(parse_signal_subject(bad), None, "{bad}");
        }
    }

    #[test]
    fn wire_shapes_match_the_contract() {
        let signal = PresenceSignal {
            node: "n".into(),
            present: vec![ChatUser { id: "u".into(), username: "ana".into() }],
            left: vec![],
            ttl_ms: 15_000,
            sync: false,
        };
        let json = serde_json::to_string(&signal).unwrap();
        assert!(!json.contains("sync"), "{json}");
        assert_eq!(serde_json::from_str::<PresenceSignal>(&json).unwrap(), signal);
        let greedy = PresenceSignal { ttl_ms: u64::MAX, ..signal };
        assert_eq!(greedy.ttl(), MAX_PRESENCE_TTL);
    }
}
