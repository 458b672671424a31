//! Chat's live side under test without the api's chat endpoints: [`ChatBackend`] stands in for
//! the api. It answers `rpc.chat.membership` from a table the test controls (as every api
//! replica does, in queue group `api`) and writes chat events straight into JetStream in the
//! contract's shape (docs/chat.md), as the api's outbox would after a commit. Once the
//! api serves chat, the same methods become REST calls (add/remove member, send a message)
//! and the responder goes away; the tests using it need not change.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_nats::{HeaderMap, jetstream};
use courier_core::{
    Event, EventAction,
    auth::JwtKeys,
    chat::{MembershipReply, MembershipRequest, Role},
    subjects::{API_QUEUE_GROUP, CHAT_MEMBERSHIP_RPC},
};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// A chat user of the test: id (24 hex, like the api's), username and an access token.
#[derive(Debug, Clone)]
pub struct ChatUserToken {
    pub id: String,
    pub username: String,
    pub token: String,
}

/// Issues an access token for a fresh user `username`, signed with the test deployment's key.
pub fn chat_user(username: &str) -> ChatUserToken {
    let keys = JwtKeys::hs256(crate::TEST_JWT_SECRET.as_bytes(), Duration::from_secs(900));
    let id = object_id();
    let (token, _) = keys.issue(&id, username).expect("HS256 keys sign");
    ChatUserToken { id, username: username.to_owned(), token }
}

/// A fresh 24-hex id (rooms, users, messages), unique within the test run.
pub fn object_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let uuid = uuid::Uuid::now_v7().simple().to_string();
    format!("{}{:08x}", &uuid[..16], NEXT.fetch_add(1, Ordering::Relaxed))
}

#[derive(Default)]
struct Table {
    /// (room, user) → role
    members: HashMap<(String, String), Role>,
    /// Messages sent per room (their `seq`).
    room_seq: HashMap<String, u64>,
}

/// The api's chat side as the broadcasters see it: membership answers and events.
pub struct ChatBackend {
    js: jetstream::Context,
    table: Arc<Mutex<Table>>,
    silent: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    requests: Arc<AtomicUsize>,
    responder: JoinHandle<()>,
}

impl ChatBackend {
    /// Connects to NATS at `nats_url` and starts answering membership requests.
    pub async fn start(nats_url: &str) -> Self {
        let nats = async_nats::connect(nats_url).await.expect("test NATS client");
        let mut requests_in = nats
            .queue_subscribe(CHAT_MEMBERSHIP_RPC, API_QUEUE_GROUP.to_owned())
            .await
            .expect("subscribe to membership requests");
        crate::server_processed(&nats).await;
        let table = Arc::new(Mutex::new(Table::default()));
        let (silent, delay_ms, requests) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let responder = tokio::spawn({
            let (nats, table, silent, delay_ms, requests) =
                (nats.clone(), table.clone(), silent.clone(), delay_ms.clone(), requests.clone());
            async move {
                while let Some(message) = requests_in.next().await {
                    requests.fetch_add(1, Ordering::SeqCst);
                    let Some(reply_to) = message.reply.clone() else { continue };
                    if silent.load(Ordering::SeqCst) {
                        continue;
                    }
                    let Ok(request) = serde_json::from_slice::<MembershipRequest>(&message.payload)
                    else {
                        continue;
                    };
                    // Read the table when the request arrives (a store read), answer later.
                    let role = table
                        .lock()
                        .expect("table lock")
                        .members
                        .get(&(request.room_id.clone(), request.user_id.clone()))
                        .copied();
                    let delay = Duration::from_millis(delay_ms.load(Ordering::SeqCst));
                    let nats = nats.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let reply = MembershipReply { member: role.is_some(), role };
                        let payload = serde_json::to_vec(&reply).expect("reply serializes");
                        let _ = nats.publish(reply_to, payload.into()).await;
                    });
                }
            }
        });
        ChatBackend { js: jetstream::new(nats), table, silent, delay_ms, requests, responder }
    }

    /// Membership requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Stop answering (the api is down or too slow): broadcasters must fail closed.
    pub fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::SeqCst);
    }

    /// Answer each request this long after reading the table.
    pub fn set_reply_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Makes `user` a member of `room` (no event: the test sets the scene).
    pub fn add_member(&self, room: &str, user: &ChatUserToken) {
        let mut table = self.table.lock().expect("table lock");
        table.members.insert((room.to_owned(), user.id.clone()), Role::Member);
    }

    /// Removes `user` from `room` as the api would: the membership goes (commit), then
    /// `chat.member_removed` enters the stream. Returns the event's stream sequence.
    pub async fn remove_member(&self, room: &str, user: &ChatUserToken) -> u64 {
        self.table.lock().expect("table lock").members.remove(&(room.to_owned(), user.id.clone()));
        let data = json!({"room_id": room, "user_id": user.id, "username": user.username, "role": "member"});
        self.publish(room, "member_removed", data, &user.id).await
    }

    /// `author` sends `text` to `room`: a `chat.message` event with the contract's message
    /// object. Returns (stream sequence, message id, room seq).
    pub async fn send_message(
        &self,
        room: &str,
        author: &ChatUserToken,
        text: &str,
    ) -> (u64, String, u64) {
        let room_seq = {
            let mut table = self.table.lock().expect("table lock");
            let seq = table.room_seq.entry(room.to_owned()).or_default();
            *seq += 1;
            *seq
        };
        let id = object_id();
        let data = json!({
            "id": id, "room_id": room, "seq": room_seq,
            "author": {"id": author.id, "username": author.username},
            "text": text, "reply_to": null, "mentions": [], "mention_names": [],
            "reactions": {}, "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "edited_at": null, "deleted": false,
        });
        let stream_seq = self.publish(room, "message", data, &author.id).await;
        (stream_seq, id, room_seq)
    }

    async fn publish(&self, room: &str, action: &str, data: Value, actor: &str) -> u64 {
        // `EventAction` gets the chat actions with the api's chat module; until then the type
        // and subject are written out here, in the contract's shape.
        let mut event = Event::new(
            "chat",
            room,
            EventAction::Message,
            data,
            Some(actor.to_owned()),
            "chat-test".into(),
        );
        event.event_type = format!("chat.{action}");
        let subject = format!("events.chat.{room}.{action}");
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.id.to_string().as_str());
        let payload = serde_json::to_vec(&event).expect("events serialize");
        self.js
            .publish_with_headers(subject, headers, payload.into())
            .await
            .expect("publish reaches JetStream")
            .await
            .expect("JetStream acknowledges")
            .sequence
    }
}

impl Drop for ChatBackend {
    fn drop(&mut self) {
        self.responder.abort();
    }
}

/// Reads frames until one satisfies `want` (others are skipped); panics naming `what` after
/// `timeout` or if the connection fails.
pub async fn next_matching(
    ws: &mut crate::WsClient,
    timeout: Duration,
    what: &str,
    mut want: impl FnMut(&courier_core::ServerFrame) -> bool,
) -> courier_core::ServerFrame {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.next_frame_within(left).await {
            Ok(frame) if want(&frame) => return frame,
            Ok(_) => {}
            Err(crate::ClientError::Timeout) => panic!("no {what} within {timeout:?}"),
            Err(err) => panic!("connection failed waiting for {what}: {err}"),
        }
    }
}

/// Reads frames for `window`, panicking if one satisfies `unwanted`.
pub async fn assert_none_matching(
    ws: &mut crate::WsClient,
    window: Duration,
    what: &str,
    mut unwanted: impl FnMut(&courier_core::ServerFrame) -> bool,
) {
    let deadline = tokio::time::Instant::now() + window;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.next_frame_within(left).await {
            Ok(frame) if unwanted(&frame) => panic!("unexpected {what}: {frame:?}"),
            Ok(_) => {}
            Err(crate::ClientError::Timeout) => return,
            Err(err) => panic!("connection failed while watching for {what}: {err}"),
        }
    }
}

/// Asks for `room`'s presence until it names exactly `expected` (users on other broadcasters
/// show within moments); panics after 10 s with the last answer.
pub async fn wait_for_presence(ws: &mut crate::WsClient, room: &str, expected: &[&ChatUserToken]) {
    use courier_core::{ClientFrame, ServerFrame};
    let channel = format!("chat:{room}");
    let mut want: Vec<&str> = expected.iter().map(|u| u.id.as_str()).collect();
    want.sort_unstable();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        ws.send(&ClientFrame::Presence { channel: channel.clone() }).await.expect("send presence");
        let answer = next_matching(ws, Duration::from_secs(5), "a presence answer", |f| {
            matches!(f, ServerFrame::Presence { .. })
        })
        .await;
        let ServerFrame::Presence { users, .. } = answer else { unreachable!("matched above") };
        let mut got: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
        got.sort_unstable();
        if got == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "presence is {users:?}, expected {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
