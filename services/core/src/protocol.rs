//! WebSocket protocol v1 (specified in `docs/protocol.md`): the JSON text frames exchanged between
//! the broadcaster and its clients, the error codes and the close codes.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::{chat_live::ChatUser, event::Event};

/// Protocol version announced in `connection_established`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Close codes the broadcaster uses (RFC 6455 §7.4 plus the private 4000–4999 range).
pub mod close_code {
    /// The server is shutting down (or restarting); reconnect, possibly elsewhere.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket framing.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame was not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A message exceeded the frame/message size limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// No frame (not even a pong) arrived within the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4000;
    /// The access token that admitted a seed-compat chat socket (`/ws/chats/{id}`) expired
    /// (protocol v1 ends the subscription instead, with `unsubscribed {reason: token_expired}`).
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// The client did not read fast enough and its queue overflowed; resume with `since`.
    pub const SLOW_CONSUMER: u16 = 4008;
}

/// Error codes carried by `error` frames. The connection stays usable after any of them.
pub mod error_code {
    pub const BAD_FRAME: &str = "bad_frame";
    pub const BAD_CHANNEL: &str = "bad_channel";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const TOO_MANY_SUBSCRIPTIONS: &str = "too_many_subscriptions";
    pub const NOT_SUBSCRIBED: &str = "not_subscribed";
    pub const REPLAY_FAILED: &str = "replay_failed";
    /// The token is valid but does not give access to the channel (not a member of the room,
    /// or someone else's `user:<id>` channel).
    pub const FORBIDDEN: &str = "forbidden";
    /// A dependency needed to decide did not answer in time (the membership check); retry.
    pub const UNAVAILABLE: &str = "unavailable";
    /// Too many frames of one kind (e.g. `typing`); the excess is dropped.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// The channel's collection is not declared in the broadcaster's collections file.
    pub const UNKNOWN_COLLECTION: &str = "unknown_collection";
    /// The broadcaster already keeps as many channels as it may (`COURIER_WS_MAX_CHANNELS`).
    pub const TOO_MANY_CHANNELS: &str = "too_many_channels";
    /// Too many `since` replays running, on this connection or this broadcaster; retry once
    /// one has finished.
    pub const TOO_MANY_REPLAYS: &str = "too_many_replays";
    /// A subscription's `filter` is not one of the collection (`field` names the culprit).
    pub const BAD_FILTER: &str = "bad_filter";
}

/// Why the server ended a subscription (`reason` of an `unsubscribed` frame it sends unasked).
pub mod unsubscribe_reason {
    /// The user was removed from (or left) the chat room.
    pub const MEMBERSHIP_REVOKED: &str = "membership_revoked";
    /// The access token that admitted the subscription expired.
    pub const TOKEN_EXPIRED: &str = "token_expired";
    /// The `since` replay broke off (NATS went away mid-replay); subscribe again with `since`
    /// set to the last `seq` received.
    pub const REPLAY_FAILED: &str = "replay_failed";
}

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Join a channel. With `since`, every event of the channel after that stream sequence is
    /// replayed before live events, with no gap and no duplicate. With `filter` (collection
    /// channels), only the events of matching documents, marked `enter`, `stay` or `leave`.
    Subscribe {
        channel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// The same conditions as a REST list's query (`crate::filter`):
        /// `{"species": "Dog", "age": {"gte": 3}}`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filter: Option<serde_json::Value>,
    },
    Unsubscribe {
        channel: String,
    },
    /// "I am typing" in a subscribed `chat:` channel; repeat it every few seconds while typing.
    /// No answer unless refused.
    Typing {
        channel: String,
    },
    /// Ask who is present in a subscribed `chat:` channel (answered with `presence`).
    Presence {
        channel: String,
    },
    /// A fresh access token for the connection's token-admitted subscriptions: those of the
    /// same user that it still admits run on until its `exp` instead of the old token's
    /// (answered with `authenticated`).
    Authenticate {
        token: String,
    },
    // Empty struct variants (not unit variants) so unknown fields are refused here too.
    Ping {},
    GetStatus {},
}

/// Frames the broadcaster sends. (Its event frames are encoded by hand, never built as this
/// type on the hot path, so the size of the `Event` variant costs nothing there.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    ConnectionEstablished {
        connection_id: String,
        protocol: u32,
    },
    /// The subscription is live. `seq` is the stream sequence it starts after: events with a
    /// greater `seq` follow. `recovered` is present for a `since` subscription: `false` means
    /// part of the requested history had already left the stream.
    Subscribed {
        channel: String,
        seq: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    },
    /// A subscription ended: the answer to `unsubscribe` (no `reason`), or the server ended it
    /// (`reason`, see [`unsubscribe_reason`]).
    Unsubscribed {
        channel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Event {
        channel: String,
        seq: u64,
        /// On a filtered or rule-checked subscription: how the document relates to the
        /// subscriber's view (see [`ViewChange`]); absent elsewhere.
        #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
        view: Option<ViewChange>,
        event: Event,
    },
    /// `user` is typing in `channel` (`active: true`), or stopped (`active: false`: sent when
    /// they send a message, leave, disconnect, or about 5 s after their last `typing`).
    Typing {
        channel: String,
        user: ChatUser,
        active: bool,
    },
    /// Everyone present in `channel` (users, not connections), answering `presence`.
    Presence {
        channel: String,
        users: Vec<ChatUser>,
    },
    /// Who arrived in and who left `channel` since the last change.
    PresenceDiff {
        channel: String,
        joined: Vec<ChatUser>,
        left: Vec<ChatUser>,
    },
    /// Answer to `authenticate`: the token's `exp` now bounds these `channels` (possibly none).
    Authenticated {
        exp: u64,
        channels: Vec<String>,
    },
    Pong,
    Status(Status),
    Error {
        code: String,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
        /// The field a `bad_filter` is about.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
    },
}

/// How an event's document relates to a filtered or rule-checked subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewChange {
    /// The document now matches and did not before (a create, or an update that brought it
    /// into view): add it.
    Enter,
    /// It matched before and still does: replace it.
    Stay,
    /// It matched before and no longer does (or was deleted): remove it. After an update the
    /// event carries the id and no `data`.
    Leave,
}

impl ViewChange {
    pub fn as_str(self) -> &'static str {
        match self {
            ViewChange::Enter => "enter",
            ViewChange::Stay => "stay",
            ViewChange::Leave => "leave",
        }
    }
}

/// Body of a `status` frame: what this connection and its broadcaster look like right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub connection_id: String,
    pub node: String,
    pub subscriptions: Vec<String>,
    pub connections: u64,
    /// Highest EVENTS sequence this broadcaster has fanned out.
    pub last_seq: u64,
    pub uptime_secs: u64,
}

impl ServerFrame {
    pub fn error(code: &str, message: impl Into<String>, channel: Option<&str>) -> Self {
        ServerFrame::Error {
            code: code.to_owned(),
            message: message.into(),
            channel: channel.map(str::to_owned),
            field: None,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }
}

/// Builds an `event` frame around an event's JSON exactly as it sits in the stream, without
/// parsing it: the broadcaster does this once per event and channel and shares the bytes with
/// every subscriber. `raw_event` must be a JSON object (the api only publishes serialized `Event`s).
pub fn encode_event_frame(channel: &str, seq: u64, raw_event: &str) -> String {
    encode_viewed_event_frame(channel, seq, None, raw_event)
}

/// [`encode_event_frame`] with a `match` (filtered and rule-checked subscriptions).
pub fn encode_viewed_event_frame(
    channel: &str,
    seq: u64,
    view: Option<ViewChange>,
    raw_event: &str,
) -> String {
    let mut frame = String::with_capacity(raw_event.len() + channel.len() + 80);
    frame.push_str(r#"{"type":"event","channel":"#);
    // Channel names are validated ([a-z0-9_:-]), but escape anyway: never trust a string into JSON.
    frame.push_str(&serde_json::to_string(channel).expect("strings serialize"));
    write!(frame, r#","seq":{seq},"#).expect("writing to a String cannot fail");
    if let Some(view) = view {
        write!(frame, r#""match":"{}","#, view.as_str()).expect("writing to a String cannot fail");
    }
    frame.push_str(r#""event":"#);
    frame.push_str(raw_event);
    frame.push('}');
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, EventAction};

    #[test]
    fn client_frames_parse_from_the_documented_json() {
        let f: ClientFrame =
            serde_json::from_str(r#"{"type":"subscribe","channel":"products","since":41}"#)
                .unwrap();
        assert_eq!(
            f,
            ClientFrame::Subscribe {
                channel: "products".into(),
                since: Some(41),
                token: None,
                filter: None
            }
        );
        let f: ClientFrame = serde_json::from_str(r#"{"type":"get_status"}"#).unwrap();
        assert_eq!(f, ClientFrame::GetStatus {});
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"launch"}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"subscribe"}"#).is_err());
        assert!(
            serde_json::from_str::<ClientFrame>(r#"{"type":"ping","extra":1}"#).is_err(),
            "unknown fields are refused so typos surface"
        );
    }

    #[test]
    fn authenticate_and_its_answer_have_the_documented_shapes() {
        let f: ClientFrame =
            serde_json::from_str(r#"{"type":"authenticate","token":"t.k.n"}"#).unwrap();
        assert_eq!(f, ClientFrame::Authenticate { token: "t.k.n".into() });
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"authenticate"}"#).is_err());
        let answer = ServerFrame::Authenticated { exp: 42, channels: vec!["secrets".into()] };
        assert_eq!(answer.to_json(), r#"{"type":"authenticated","exp":42,"channels":["secrets"]}"#);
    }

    #[test]
    fn hand_built_event_frame_equals_the_typed_frame() {
        let event = Event::new(
            "products",
            "abc",
            EventAction::Created,
            serde_json::json!({"nombre": "Camiseta \"M\"", "precio": 25.99}),
            None,
            "t".into(),
        );
        let raw = serde_json::to_string(&event).unwrap();
        let frame = encode_event_frame("products:abc", 42, &raw);
        let parsed: ServerFrame = serde_json::from_str(&frame).unwrap();
        let typed =
            ServerFrame::Event { channel: "products:abc".into(), seq: 42, view: None, event };
        assert_eq!(parsed, typed);
        assert_eq!(frame, typed.to_json());
        let ServerFrame::Event { event, .. } = typed else { unreachable!() };
        let frame = encode_viewed_event_frame("products", 43, Some(ViewChange::Leave), &raw);
        let viewed = ServerFrame::Event {
            channel: "products".into(),
            seq: 43,
            view: Some(ViewChange::Leave),
            event,
        };
        assert_eq!(frame, viewed.to_json());
    }

    #[test]
    fn server_frames_use_snake_case_types() {
        let json = ServerFrame::Subscribed { channel: "products".into(), seq: 7, recovered: None }
            .to_json();
        assert_eq!(json, r#"{"type":"subscribed","channel":"products","seq":7}"#);
        let status = ServerFrame::Status(Status {
            connection_id: "c".into(),
            node: "n".into(),
            subscriptions: vec![],
            connections: 1,
            last_seq: 0,
            uptime_secs: 0,
        });
        assert!(status.to_json().starts_with(r#"{"type":"status","connection_id":"c""#));
        assert_eq!(ServerFrame::Pong.to_json(), r#"{"type":"pong"}"#);
    }

    #[test]
    fn chat_frames_have_the_documented_shapes() {
        let f: ClientFrame =
            serde_json::from_str(r#"{"type":"typing","channel":"chat:r1"}"#).unwrap();
        assert_eq!(f, ClientFrame::Typing { channel: "chat:r1".into() });
        let f: ClientFrame =
            serde_json::from_str(r#"{"type":"presence","channel":"chat:r1"}"#).unwrap();
        assert_eq!(f, ClientFrame::Presence { channel: "chat:r1".into() });
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"typing"}"#).is_err());

        let ana = ChatUser { id: "u1".into(), username: "ana".into() };
        let typing =
            ServerFrame::Typing { channel: "chat:r1".into(), user: ana.clone(), active: true };
        assert_eq!(
            typing.to_json(),
            r#"{"type":"typing","channel":"chat:r1","user":{"id":"u1","username":"ana"},"active":true}"#
        );
        let diff = ServerFrame::PresenceDiff {
            channel: "chat:r1".into(),
            joined: vec![ana.clone()],
            left: vec![],
        };
        assert_eq!(
            diff.to_json(),
            r#"{"type":"presence_diff","channel":"chat:r1","joined":[{"id":"u1","username":"ana"}],"left":[]}"#
        );
        let presence = ServerFrame::Presence { channel: "chat:r1".into(), users: vec![ana] };
        assert!(
            presence.to_json().starts_with(r#"{"type":"presence","channel":"chat:r1","users":["#)
        );
        let plain = ServerFrame::Unsubscribed { channel: "chat:r1".into(), reason: None };
        assert_eq!(plain.to_json(), r#"{"type":"unsubscribed","channel":"chat:r1"}"#);
        let revoked = ServerFrame::Unsubscribed {
            channel: "chat:r1".into(),
            reason: Some(unsubscribe_reason::MEMBERSHIP_REVOKED.into()),
        };
        assert_eq!(
            revoked.to_json(),
            r#"{"type":"unsubscribed","channel":"chat:r1","reason":"membership_revoked"}"#
        );
    }
}
