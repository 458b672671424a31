//! Chat wire types shared by the api, the broadcaster, the CLI and the tests: rooms, members,
//! messages, the `data` of every `chat.*` event, the `rpc.chat.membership` request and reply,
//! and the rules every side must apply alike (limits, `@mention` parsing, reaction names).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::rfc3339;

/// The collection (first subject token, envelope `collection`) of room events: `chat`.
pub use crate::channel::CHAT_COLLECTION;
/// The first subject token of per-user events (`events.user.<user_id>.<action>`), channel
/// `user:<user_id>`.
pub const USER_COLLECTION: &str = "user";

/// Longest message text, in characters (Unicode scalar values).
pub const MAX_TEXT_CHARS: usize = 4000;
/// Longest room name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest room topic, in characters.
pub const MAX_TOPIC_CHARS: usize = 500;
/// Longest `client_msg_id`, in bytes.
pub const MAX_CLIENT_MSG_ID_LEN: usize = 64;
/// Most members a room holds.
pub const MAX_MEMBERS: usize = 1000;
/// Most usernames in `members` when creating a room.
pub const MAX_INITIAL_MEMBERS: usize = 100;
/// Most distinct `@mentions` one message can carry (the rest are plain text).
pub const MAX_MENTIONS: usize = 50;
/// Most distinct reactions on one message.
pub const MAX_REACTIONS_PER_MESSAGE: usize = 50;
/// Longest reaction name, in bytes (an emoji sequence or a short code such as `+1`).
pub const MAX_REACTION_BYTES: usize = 64;

/// A member's role. Owners can do everything (incl. granting ownership); admins manage members
/// and the room; members talk. A room always has at least one owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn parse(word: &str) -> Option<Self> {
        [Role::Member, Role::Admin, Role::Owner].into_iter().find(|r| r.as_str() == word)
    }

    /// Owners and admins manage the room and its members.
    pub fn manages(self) -> bool {
        self >= Role::Admin
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomKind {
    Group,
    /// Exactly two people, both owners; one room per pair; its members never change.
    Direct,
}

/// A user as chat shows them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserRef {
    pub id: String,
    pub username: String,
}

/// A room as everybody sees it (`chat.room_updated` data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Room {
    pub id: String,
    pub kind: RoomKind,
    pub name: String,
    pub topic: String,
    /// Archived rooms are read-only until an owner or admin unarchives them.
    pub archived: bool,
    pub created_by: UserRef,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// The seq of the room's newest message (0: none yet).
    pub last_seq: u64,
    /// When the room last had a message (its creation time before that).
    #[serde(with = "rfc3339")]
    pub last_activity_at: DateTime<Utc>,
    pub member_count: u64,
    /// The two people of a direct room (`null` for a group).
    pub direct: Option<Vec<UserRef>>,
}

/// A room with the caller's own state in it (room list, `GET /chats/{id}`, `user` events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomSummary {
    #[serde(flatten)]
    pub room: Room,
    pub role: Role,
    /// My read marker: every message up to this seq is read.
    pub last_read_seq: u64,
    /// Others' messages after my marker.
    pub unread: u64,
    /// Unread messages that mention me.
    pub mentions: u64,
}

/// A message (`chat.message`, `chat.message_edited`, `chat.message_deleted` data). A deleted
/// message is a tombstone: `text` is empty, `deleted` true, mentions and reactions cleared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub room_id: String,
    /// The room's order: 1, 2, 3… with no gaps.
    pub seq: u64,
    pub author: UserRef,
    pub text: String,
    /// The seq of the message this one answers.
    pub reply_to: Option<u64>,
    /// Ids of the members mentioned with `@username`.
    pub mentions: Vec<String>,
    /// Their usernames, in the same order.
    pub mention_names: Vec<String>,
    /// Reaction → how many users reacted so.
    pub reactions: BTreeMap<String, u64>,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "optional_rfc3339")]
    pub edited_at: Option<DateTime<Utc>>,
    pub deleted: bool,
}

/// `chat.reaction` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactionChange {
    pub room_id: String,
    pub message_id: String,
    pub seq: u64,
    pub emoji: String,
    pub user_id: String,
    /// True when the reaction was added, false when it was taken back.
    pub added: bool,
    /// The emoji's count on the message afterwards.
    pub count: u64,
}

/// `chat.member_added`, `chat.member_removed` and `chat.member_updated` data (room channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberChange {
    pub room_id: String,
    pub user_id: String,
    pub username: String,
    /// The role they have (had, for a removal).
    pub role: Role,
}

/// A member as `GET /chats/{id}/members` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: String,
    pub username: String,
    pub role: Role,
    #[serde(with = "rfc3339")]
    pub joined_at: DateTime<Utc>,
}

/// `chat.read` data and `POST /chats/{id}/read` answer: where my marker is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadMarker {
    pub room_id: String,
    pub seq: u64,
    pub unread: u64,
    pub mentions: u64,
}

/// `chat.member_removed` data on `user:<id>`: I left or was removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedFromRoom {
    pub room_id: String,
}

/// Request on [`crate::subjects::CHAT_MEMBERSHIP_RPC`]: is this user a member of this room?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipRequest {
    pub room_id: String,
    pub user_id: String,
}

/// Reply to a [`MembershipRequest`]. A malformed request or unknown room is `member: false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipReply {
    pub member: bool,
    pub role: Option<Role>,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// The usernames a text may mention: every `@name` that starts the text or follows a
/// character that cannot be part of a name (so `ana@example.com` mentions nobody), lowercased,
/// distinct, in order of appearance, at most [`MAX_MENTIONS`]. A name followed by sentence
/// punctuation (`@ana.`) yields both `ana.` and `ana`: only names of members count, so the
/// caller keeps whichever is one.
pub fn mention_candidates(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut previous: Option<char> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let starts = c == '@' && !previous.is_some_and(|p| is_name_char(p) || p == '@');
        previous = Some(c);
        if !starts {
            continue;
        }
        let rest = &text[at + 1..];
        let len = rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len());
        let raw = rest[..len].to_ascii_lowercase();
        let trimmed = raw.trim_end_matches(['.', '-', '_']).to_owned();
        for name in [raw, trimmed] {
            let plausible = (3..=32).contains(&name.len())
                && name.starts_with(|c: char| c.is_ascii_alphanumeric());
            if plausible && !names.contains(&name) {
                if names.len() == MAX_MENTIONS * 2 {
                    return names;
                }
                names.push(name);
            }
        }
        // Skip the name itself so its characters do not count as "previous".
        for _ in 0..rest[..len].chars().count() {
            previous = chars.next().map(|(_, c)| c);
        }
    }
    names
}

/// Why a reaction name is refused, if it is.
pub fn reaction_problem(emoji: &str) -> Option<&'static str> {
    if emoji.is_empty() || emoji.len() > MAX_REACTION_BYTES {
        return Some("must be 1 to 64 bytes");
    }
    if emoji.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must not contain whitespace or control characters");
    }
    // Field names in the store: no '.' and no leading '$'; no path separators in URLs.
    if emoji.chars().any(|c| c.is_ascii_punctuation() && !matches!(c, ':' | '+' | '-' | '_')) {
        return Some("may contain no ASCII punctuation other than ':', '+', '-' and '_'");
    }
    None
}

/// Why a message text is refused, if it is.
pub fn text_problem(text: &str) -> Option<String> {
    let chars = text.chars().count();
    if text.trim().is_empty() {
        return Some("must not be empty".into());
    }
    if chars > MAX_TEXT_CHARS {
        return Some(format!("must be at most {MAX_TEXT_CHARS} characters (got {chars})"));
    }
    None
}

mod optional_rfc3339 {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => rfc3339::serialize(time, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|text| {
            DateTime::parse_from_rfc3339(&text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_names_after_an_at_sign_that_starts_a_word() {
        assert_eq!(mention_candidates("hi @Ana and @bob_2, see @ana"), ["ana", "bob_2"]);
        assert_eq!(mention_candidates("mail ana@example.com or @@ana"), Vec::<String>::new());
        assert_eq!(mention_candidates("thanks @carl."), ["carl.", "carl"]);
        assert_eq!(mention_candidates("(@dora) @x @-no"), ["dora"]);
        assert_eq!(mention_candidates("@ana"), ["ana"]);
        assert_eq!(mention_candidates("¡@éva @eva!"), ["eva"]);
        let many: String = (0..200).map(|i| format!("@user{i} ")).collect();
        assert_eq!(mention_candidates(&many).len(), MAX_MENTIONS * 2);
    }

    #[test]
    fn reaction_names_are_bounded_and_safe_as_field_names() {
        for ok in ["👍", "+1", ":tada:", "👨‍👩‍👧‍👦", "heart"] {
            assert_eq!(reaction_problem(ok), None, "{ok}");
        }
        for bad in ["", "a.b", "$set", "a b", "a/b", &"x".repeat(65), "\u{0}"] {
            assert!(reaction_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn text_is_one_to_4000_characters() {
        assert!(text_problem("").is_some());
        assert!(text_problem("   \n").is_some());
        assert_eq!(text_problem("hola"), None);
        assert_eq!(text_problem(&"é".repeat(MAX_TEXT_CHARS)), None, "characters, not bytes");
        assert!(text_problem(&"é".repeat(MAX_TEXT_CHARS + 1)).is_some());
    }

    #[test]
    fn messages_serialize_in_the_contract_shape() {
        let message = Message {
            id: "65f0c0ffee0123456789abcd".into(),
            room_id: "65f0c0ffee0123456789abce".into(),
            seq: 3,
            author: UserRef { id: "u1".into(), username: "ana".into() },
            text: "hi @bob".into(),
            reply_to: None,
            mentions: vec!["u2".into()],
            mention_names: vec!["bob".into()],
            reactions: BTreeMap::from([("👍".to_owned(), 2)]),
            created_at: DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
            edited_at: None,
            deleted: false,
        };
        let json = serde_json::to_value(&message).unwrap();
        assert_eq!(json["created_at"], "2023-11-14T22:13:20.123Z");
        assert_eq!(json["edited_at"], serde_json::Value::Null);
        assert_eq!(json["reply_to"], serde_json::Value::Null);
        assert_eq!(json["reactions"]["👍"], 2);
        let back: Message = serde_json::from_value(json).unwrap();
        assert_eq!(back, message);
        let reply = MembershipReply { member: true, role: Some(Role::Admin) };
        assert_eq!(serde_json::to_string(&reply).unwrap(), r#"{"member":true,"role":"admin"}"#);
        assert!(Role::Owner > Role::Admin && Role::Admin.manages() && !Role::Member.manages());
    }
}
