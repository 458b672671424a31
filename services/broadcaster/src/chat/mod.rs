//! Chat rooms, live (docs/chat.md): who may subscribe to `chat:<room_id>` (the
//! api's `rpc.chat.membership` answer, cached while the user is subscribed here), cutting a
//! removed member off when `chat.member_removed` passes through the feed, and typing and
//! presence shared with the other broadcasters over core NATS (`ephemeral.chat.<room_id>.*`).
//!
//! [`ChatLive`] owns the state ([`rooms::Rooms`], behind one lock) and the NATS side: a
//! publisher task sending signals in order, a listener following the subjects of the rooms
//! that have subscribers here, and a ticker ending what is due (typing, grace periods, other
//! broadcasters' expired entries) and sending heartbeats. A connection holds a [`ChatSeat`] per
//! chat subscription; dropping it is leaving.

pub mod membership;
pub mod metrics;
pub mod presence;
pub mod rooms;
pub mod typing;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use courier_core::{
    auth::Claims,
    channel::CHAT_COLLECTION,
    chat_live::{ChatUser, MAX_PRESENCE_TTL, parse_signal_subject, room_signals_filter},
    config::millis_or_duration,
    subjects::parse_event_subject,
};
use futures::StreamExt;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamMap;
use tokio_util::sync::CancellationToken;

use self::{
    membership::Outcome,
    metrics::ChatMetrics,
    rooms::{ChatDelivery, Outgoing, Rooms, Timing},
};

/// Chat settings (flags with `COURIER_CHAT_*` environment fallbacks).
#[derive(Debug, Clone, clap::Args)]
pub struct ChatArgs {
    /// How long a chat subscribe waits for the api's membership answer before it is refused
    /// with `unavailable` (`250ms`, `5s`; a bare number is ms).
    #[arg(
        long = "chat-membership-timeout-ms",
        env = "COURIER_CHAT_MEMBERSHIP_TIMEOUT_MS",
        value_parser = millis_or_duration,
        default_value = "2s"
    )]
    pub membership_timeout: Duration,

    /// A typing indicator ends this long after the user's last `typing` frame (`250ms`, `5s`; a bare number is ms).
    #[arg(
        long = "chat-typing-ttl-ms",
        env = "COURIER_CHAT_TYPING_TTL_MS",
        value_parser = millis_or_duration,
        default_value = "5s"
    )]
    pub typing_ttl: Duration,

    /// `typing` frames one connection may send in a burst…
    #[arg(long = "chat-typing-burst", env = "COURIER_CHAT_TYPING_BURST", default_value_t = 3)]
    pub typing_burst: u32,

    /// …and then one per this many ms; the excess is refused with `rate_limited`.
    #[arg(
        long = "chat-typing-interval-ms",
        env = "COURIER_CHAT_TYPING_INTERVAL_MS",
        value_parser = millis_or_duration,
        default_value = "500ms"
    )]
    pub typing_interval: Duration,

    /// How often this broadcaster repeats its users of each room to the others (`250ms`, `5s`; a bare number is ms).
    #[arg(
        long = "chat-presence-heartbeat-ms",
        env = "COURIER_CHAT_PRESENCE_HEARTBEAT_MS",
        value_parser = millis_or_duration,
        default_value = "5s"
    )]
    pub presence_heartbeat: Duration,

    /// How long another broadcaster's presence entry lasts without a heartbeat (ms): a crashed
    /// broadcaster's users are gone this long after its last one (at most 30 s).
    #[arg(
        long = "chat-presence-ttl-ms",
        env = "COURIER_CHAT_PRESENCE_TTL_MS",
        value_parser = millis_or_duration,
        default_value = "15s"
    )]
    pub presence_ttl: Duration,

    /// How long a user stays present after their last connection here ends (ms), so a quick
    /// reconnect (to any broadcaster) announces no leave and join.
    #[arg(
        long = "chat-presence-grace-ms",
        env = "COURIER_CHAT_PRESENCE_GRACE_MS",
        value_parser = millis_or_duration,
        default_value = "3s"
    )]
    pub presence_grace: Duration,
}

impl ChatArgs {
    /// The timings, or what is wrong with them.
    pub fn timing(&self) -> Result<Timing, String> {
        let ms = Duration::from_millis;
        let timing = Timing {
            typing_ttl: self.typing_ttl,
            heartbeat: self.presence_heartbeat,
            presence_ttl: self.presence_ttl,
            grace: self.presence_grace,
        };
        if !(ms(100)..=ms(10_000)).contains(&self.membership_timeout) {
            return Err("COURIER_CHAT_MEMBERSHIP_TIMEOUT_MS must be 100 to 10000".into());
        }
        if !(ms(500)..=ms(60_000)).contains(&self.typing_ttl) {
            return Err("COURIER_CHAT_TYPING_TTL_MS must be 500 to 60000".into());
        }
        if self.typing_burst == 0 || self.typing_interval.is_zero() {
            return Err("COURIER_CHAT_TYPING_BURST and _INTERVAL_MS must be at least 1".into());
        }
        if timing.heartbeat < ms(100) || timing.presence_ttl < timing.heartbeat * 2 {
            return Err(
                "COURIER_CHAT_PRESENCE_TTL_MS must be at least twice the heartbeat (≥ 100 ms)"
                    .into(),
            );
        }
        if timing.presence_ttl > MAX_PRESENCE_TTL {
            return Err("COURIER_CHAT_PRESENCE_TTL_MS must be at most 30000".into());
        }
        if timing.grace >= timing.presence_ttl {
            return Err(
                "COURIER_CHAT_PRESENCE_GRACE_MS must be shorter than the presence TTL".into()
            );
        }
        Ok(timing)
    }
}

/// Why a chat subscribe was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a member (or the room does not exist, which is not revealed).
    NotMember,
    /// The membership check got no answer in time.
    Unavailable,
}

/// Signals waiting for the publisher task, in order.
enum Queued {
    Message(Outgoing),
    /// Answer once everything before it has been handed to the NATS server.
    Flush(oneshot::Sender<()>),
}

/// Most signals waiting for the publisher (ephemeral: beyond that they are dropped).
const PUBLISH_QUEUE: usize = 8_192;
/// How often what is due is ended and heartbeats go out.
const TICK: Duration = Duration::from_millis(250);
/// How often the followed room subjects are checked against the rooms with subscribers.
const RECONCILE: Duration = Duration::from_secs(1);

pub struct ChatLive {
    node: Arc<str>,
    rooms: Mutex<Rooms>,
    nats: async_nats::Client,
    args: ChatArgs,
    pub metrics: ChatMetrics,
    queue: mpsc::Sender<Queued>,
    queue_rx: Mutex<Option<mpsc::Receiver<Queued>>>,
    follow: mpsc::UnboundedSender<Option<oneshot::Sender<()>>>,
    follow_rx: Mutex<Option<mpsc::UnboundedReceiver<Option<oneshot::Sender<()>>>>>,
    /// Set at shutdown once the last presence signals are out: no more are sent.
    closing: AtomicBool,
}

impl ChatLive {
    /// `node` is the broadcaster's name; signals carry it with a per-process suffix, so a
    /// restarted process is never mistaken for its predecessor.
    pub fn new(
        nats: async_nats::Client,
        node: &str,
        args: ChatArgs,
        registry: &mut Registry,
    ) -> Result<Arc<Self>, String> {
        let timing = args.timing()?;
        let node: Arc<str> = format!("{node}/{}", uuid::Uuid::now_v7().simple()).into();
        let (queue, queue_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (follow, follow_rx) = mpsc::unbounded_channel();
        Ok(Arc::new(ChatLive {
            rooms: Mutex::new(Rooms::new(node.clone(), timing)),
            node,
            nats,
            args,
            metrics: ChatMetrics::register(registry),
            queue,
            queue_rx: Mutex::new(Some(queue_rx)),
            follow,
            follow_rx: Mutex::new(Some(follow_rx)),
            closing: AtomicBool::new(false),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Rooms> {
        self.rooms.lock().expect("chat rooms lock poisoned")
    }

    /// Hands the signals `rooms` produced to the publisher, in order.
    fn flush(&self, rooms: &mut Rooms) {
        let closing = self.closing.load(Ordering::Acquire);
        for outgoing in rooms.take_outgoing() {
            if closing && outgoing.subject.ends_with(".presence") {
                continue;
            }
            if self.queue.try_send(Queued::Message(outgoing)).is_err() {
                tracing::warn!("chat signal queue full or closed; signal dropped");
            }
        }
    }

    /// A per-connection limiter for `typing` frames.
    pub fn typing_limiter(&self) -> typing::Limiter {
        let interval = self.args.typing_interval;
        typing::Limiter::new(self.args.typing_burst, interval, Instant::now())
    }

    /// Admits the holder of `claims` to `chat:<room_id>` if they are a member: from the cache
    /// when they already have a subscription to the room here, else by asking the api. A
    /// removal seen in the feed while the question is out wins.
    pub async fn admit(
        self: &Arc<Self>,
        room_id: &str,
        claims: &Claims,
    ) -> Result<(ChatSeat, crate::ring::Receiver<ChatDelivery>), Refusal> {
        let user = ChatUser { id: claims.sub.clone(), username: claims.name.clone() };
        let (mark, known) = {
            let rooms = self.lock();
            (rooms.removal_mark(), rooms.known_member(room_id, &user.id))
        };
        if known {
            self.metrics.membership_cache_hits.inc();
        } else {
            let timeout = self.args.membership_timeout;
            let outcome = membership::check(&self.nats, room_id, &user.id, timeout).await;
            self.metrics.checked(outcome);
            match outcome {
                Outcome::Member => {}
                Outcome::NotMember => return Err(Refusal::NotMember),
                Outcome::Unavailable => return Err(Refusal::Unavailable),
            }
        }
        let joined = {
            let mut rooms = self.lock();
            let joined = rooms.join(room_id, &user, mark, Instant::now());
            self.flush(&mut rooms);
            joined
        };
        let Some(joined) = joined else { return Err(Refusal::NotMember) };
        self.metrics.subscriptions.inc();
        let seat = ChatSeat {
            live: self.clone(),
            room_id: room_id.to_owned(),
            user,
            epoch: joined.epoch,
            typed_at: None,
        };
        if joined.new_room {
            // Follow the room's signals before asking the others for theirs.
            let (ack, followed) = oneshot::channel();
            if self.follow.send(Some(ack)).is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(1), followed).await;
            }
            let mut rooms = self.lock();
            rooms.request_sync(room_id);
            self.flush(&mut rooms);
        }
        Ok((seat, joined.receiver))
    }

    /// Everyone present in `room_id`.
    pub fn presence(&self, room_id: &str) -> Vec<ChatUser> {
        self.lock().presence(room_id)
    }

    /// An event from the live feed (after the hub fanned it out): a message ends its author's
    /// typing indicator; a member's removal ends their presence and typing and unseats them.
    /// Returns the removed member (channel, user id), whose subscriptions the caller then ends
    /// through the hub (after this, so a subscribe in between is refused one way or the other).
    pub fn on_event(&self, subject: &str, payload: &str) -> Option<(String, String)> {
        let parts = parse_event_subject(subject)?;
        if parts.collection != CHAT_COLLECTION
            || !matches!(parts.action, "message" | "member_removed")
        {
            return None;
        }
        let Ok(head) = serde_json::from_str::<ChatEventHead>(payload) else {
            tracing::warn!(subject, "unreadable chat event");
            return None;
        };
        let room_id = parts.doc_id;
        let data = head.data.unwrap_or_default();
        let mut rooms = self.lock();
        let removed = match parts.action {
            "message" => {
                if let Some(author) = data.author.map(|a| a.id).or(head.actor) {
                    rooms.message_sent(room_id, &author);
                }
                None
            }
            _ => match data.user_id {
                Some(user_id) => {
                    rooms.member_removed(room_id, &user_id, Instant::now());
                    Some((format!("{CHAT_COLLECTION}:{room_id}"), user_id))
                }
                None => {
                    tracing::warn!(subject, "member_removed without data.user_id");
                    None
                }
            },
        };
        self.flush(&mut rooms);
        removed
    }

    /// Runs the publisher, the listener and the ticker until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let queue = self.queue_rx.lock().expect("lock").take().expect("run once");
        let follow = self.follow_rx.lock().expect("lock").take().expect("run once");
        let publisher = tokio::spawn(publish(self.nats.clone(), queue, shutdown.clone()));
        let listener = tokio::spawn(self.clone().listen(follow, shutdown.clone()));
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.tick(),
            }
        }
        let _ = tokio::join!(publisher, listener);
    }

    fn tick(&self) {
        let (changed, (rooms_count, users, _typing)) = {
            let mut rooms = self.lock();
            let changed = rooms.tick(Instant::now());
            self.flush(&mut rooms);
            (changed, rooms.stats())
        };
        self.metrics.rooms.set(i64::try_from(rooms_count).unwrap_or(i64::MAX));
        self.metrics.presence_users.set(i64::try_from(users).unwrap_or(i64::MAX));
        if changed {
            let _ = self.follow.send(None);
        }
    }

    /// Follows `ephemeral.chat.<room>.*` for every room with subscribers here.
    async fn listen(
        self: Arc<Self>,
        mut follow: mpsc::UnboundedReceiver<Option<oneshot::Sender<()>>>,
        shutdown: CancellationToken,
    ) {
        let mut followed: StreamMap<String, async_nats::Subscriber> = StreamMap::new();
        let mut reconcile = tokio::time::interval(RECONCILE);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(ack) = follow.recv() => {
                    self.reconcile(&mut followed).await;
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                }
                _ = reconcile.tick() => self.reconcile(&mut followed).await,
                Some((room_id, message)) = followed.next(), if !followed.is_empty() => {
                    let Some((_, kind)) = parse_signal_subject(&message.subject) else { continue };
                    let mut rooms = self.lock();
                    rooms.on_signal(&room_id, kind, &message.payload, Instant::now());
                    self.flush(&mut rooms);
                }
            }
        }
    }

    async fn reconcile(&self, followed: &mut StreamMap<String, async_nats::Subscriber>) {
        let wanted = self.lock().room_ids();
        let stale: Vec<String> =
            followed.keys().filter(|k| !wanted.contains(*k)).cloned().collect();
        for room_id in stale {
            followed.remove(&room_id); // dropping the subscriber unsubscribes
        }
        for room_id in wanted {
            if followed.contains_key(&room_id) {
                continue;
            }
            match self.nats.subscribe(room_signals_filter(&room_id)).await {
                Ok(subscriber) => {
                    followed.insert(room_id, subscriber);
                }
                Err(err) => {
                    tracing::warn!(%err, room_id, "cannot follow a room's signals; retrying")
                }
            }
        }
    }

    /// Graceful shutdown: tells the other broadcasters this one's users are gone after the
    /// grace period (unless they reconnect elsewhere in time), then stops presence signals.
    pub async fn announce_shutdown(&self) {
        {
            let mut rooms = self.lock();
            rooms.shutdown();
            self.flush(&mut rooms);
            self.closing.store(true, Ordering::Release);
        }
        let (ack, flushed) = oneshot::channel();
        if self.queue.send(Queued::Flush(ack)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), flushed).await;
        }
    }

    /// The busiest rooms here, for `/chat/top-rooms`.
    pub fn top_rooms(&self, limit: usize) -> serde_json::Value {
        let (rooms, total) = self.lock().top_rooms(limit);
        json!({"node": self.node.split('/').next().unwrap_or_default(), "total_rooms": total, "rooms": rooms})
    }

    fn leave(&self, seat: &ChatSeat) {
        let mut rooms = self.lock();
        rooms.leave(&seat.room_id, &seat.user.id, seat.epoch, seat.typed_at, Instant::now());
        self.flush(&mut rooms);
        drop(rooms);
        self.metrics.subscriptions.dec();
    }
}

/// Sends queued signals in order until `shutdown`.
async fn publish(
    nats: async_nats::Client,
    mut queue: mpsc::Receiver<Queued>,
    shutdown: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = queue.recv() => next,
        };
        match next {
            None => break,
            Some(Queued::Message(outgoing)) => {
                if let Err(err) = nats.publish(outgoing.subject, outgoing.payload).await {
                    tracing::debug!(%err, "chat signal not published");
                }
            }
            Some(Queued::Flush(ack)) => {
                let _ = nats.flush().await;
                let _ = ack.send(());
            }
        }
    }
}

/// What the feed reads of a chat event.
#[derive(serde::Deserialize)]
struct ChatEventHead {
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    data: Option<ChatEventData>,
}

#[derive(Default, serde::Deserialize)]
struct ChatEventData {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    author: Option<Author>,
}

#[derive(serde::Deserialize)]
struct Author {
    id: String,
}

/// One chat subscription's place in its room. Dropping it is leaving: presence starts its grace
/// period, and an indicator it started ends.
pub struct ChatSeat {
    live: Arc<ChatLive>,
    room_id: String,
    user: ChatUser,
    epoch: u64,
    typed_at: Option<Instant>,
}

impl ChatSeat {
    pub fn user_id(&self) -> &str {
        &self.user.id
    }

    pub fn room_id(&self) -> &str {
        &self.room_id
    }

    /// The user typed (the connection already applied its rate limit).
    pub fn typing(&mut self) {
        let now = Instant::now();
        self.typed_at = Some(now);
        self.live.metrics.typing_frames.inc();
        let mut rooms = self.live.lock();
        rooms.typing(&self.room_id, &self.user, now);
        self.live.flush(&mut rooms);
    }

    /// False once the user was removed from the room (the seat must go).
    pub fn stands(&self) -> bool {
        self.live.lock().holds(&self.room_id, &self.user.id, self.epoch)
    }
}

impl Drop for ChatSeat {
    fn drop(&mut self) {
        self.live.leave(self);
    }
}

/// `GET /chat/top-rooms?limit=N` (1–100, default 10): this broadcaster's rooms with the most
/// subscriptions. Served on the broadcaster's port next to `/metrics`; the ingress only routes
/// `/ws` there.
pub async fn top_rooms(
    State(chat): State<Arc<ChatLive>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let bad = |field: &str, message: &str| {
        let body = json!({"error": {"code": "invalid_query", "message": message, "field": field}});
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    };
    if let Some(unknown) = query.keys().find(|k| k.as_str() != "limit") {
        return bad(unknown, "unknown query parameter; the only one is limit");
    }
    let limit = match query.get("limit").map(|v| v.parse::<usize>()) {
        None => 10,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => return bad("limit", "limit must be an integer from 1 to 100"),
    };
    Json(chat.top_rooms(limit)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        chat: ChatArgs,
    }

    #[test]
    fn the_defaults_are_valid_and_bad_timings_are_refused_by_name() {
        let defaults = Cli::parse_from(["x"]).chat;
        let timing = defaults.timing().unwrap();
        assert_eq!(
            (timing.typing_ttl, timing.heartbeat, timing.presence_ttl, timing.grace),
            (
                Duration::from_secs(5),
                Duration::from_secs(5),
                Duration::from_secs(15),
                Duration::from_secs(3)
            )
        );
        for (flag, value, named) in [
            ("--chat-presence-ttl-ms", "40000", "COURIER_CHAT_PRESENCE_TTL_MS"),
            ("--chat-presence-ttl-ms", "6000", "COURIER_CHAT_PRESENCE_TTL_MS"),
            ("--chat-presence-grace-ms", "15000", "COURIER_CHAT_PRESENCE_GRACE_MS"),
            ("--chat-membership-timeout-ms", "0", "COURIER_CHAT_MEMBERSHIP_TIMEOUT_MS"),
            ("--chat-typing-burst", "0", "COURIER_CHAT_TYPING_BURST"),
        ] {
            let err = Cli::parse_from(["x", flag, value]).chat.timing().unwrap_err();
            assert!(err.contains(named), "{flag}={value}: {err}");
        }
        // One duration syntax: a bare number is ms, as the names say, and units work too.
        for value in ["2500", "2500ms", "2s"] {
            let args = Cli::parse_from(["x", "--chat-presence-grace-ms", value]).chat;
            assert!(args.presence_grace >= Duration::from_secs(2), "{value}");
        }
    }
}
