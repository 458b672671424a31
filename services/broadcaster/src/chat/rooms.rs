//! Every chat room this broadcaster has subscribers in: per room, a ring of ready-made typing,
//! presence and revocation frames for its local subscribers, the room's presence and typing
//! state, and the signals to send other broadcasters. Pure state (time is passed in); the
//! caller publishes [`Rooms::take_outgoing`] and serialises access with one lock.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::ring;
use axum::extract::ws::Utf8Bytes;
use courier_core::{
    chat_live::{
        ChatUser, MAX_PRESENCE_USERS_PER_SIGNAL, MAX_SIGNAL_BYTES, PresenceSignal, SignalKind,
        TypingSignal, presence_subject, typing_subject,
    },
    protocol::ServerFrame,
};

use super::{membership::Removals, presence::Diff, presence::Presence, typing::Typing};

/// Ephemeral frames and control messages buffered per room for its slowest local subscriber.
const RING_CAPACITY: usize = 256;
/// How long a removed user's entries from other broadcasters are ignored.
const TOMBSTONE: Duration = Duration::from_secs(5);

/// A typing or presence frame for a room's local subscribers, except the connections of
/// `except` (a typist does not see their own indicator). Revocations go through the hub's
/// ring instead, in order with the room's events.
#[derive(Debug, Clone)]
pub struct ChatDelivery {
    pub frame: Utf8Bytes,
    pub except: Option<Arc<str>>,
}

/// The timings of typing and presence.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub typing_ttl: Duration,
    pub heartbeat: Duration,
    pub presence_ttl: Duration,
    pub grace: Duration,
}

/// A NATS message to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub subject: String,
    pub payload: bytes::Bytes,
}

/// A subscription admitted into a room.
#[derive(Debug)]
pub struct Joined {
    pub receiver: ring::Receiver<ChatDelivery>,
    pub epoch: u64,
    /// The room was new here: start following its signals.
    pub new_room: bool,
}

/// One room's load, for the top-rooms report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoomLoad {
    pub room_id: String,
    /// Subscriptions to the room on this broadcaster.
    pub connections: u64,
    /// Distinct users behind them.
    pub users: usize,
}

struct Room {
    channel: String,
    ring: ring::Sender<ChatDelivery>,
    presence: Presence,
    typing: Typing,
    next_heartbeat: Instant,
}

impl Room {
    fn send_frame(&self, frame: &ServerFrame, except: Option<&str>) {
        let frame = Utf8Bytes::from(frame.to_json());
        // Nobody listening right now is fine: the frame is ephemeral.
        self.ring.send(ChatDelivery { frame, except: except.map(Arc::from) });
    }

    fn send_diff(&self, diff: Diff) {
        if !diff.is_empty() {
            let frame = ServerFrame::PresenceDiff {
                channel: self.channel.clone(),
                joined: diff.joined,
                left: diff.left,
            };
            self.send_frame(&frame, None);
        }
    }

    fn send_typing(&self, user: ChatUser, active: bool) {
        let except = user.id.clone();
        let frame = ServerFrame::Typing { channel: self.channel.clone(), user, active };
        self.send_frame(&frame, Some(&except));
    }
}

pub struct Rooms {
    node: Arc<str>,
    timing: Timing,
    rooms: HashMap<String, Room>,
    removals: Removals,
    next_epoch: u64,
    outgoing: Vec<Outgoing>,
}

impl Rooms {
    /// `node` names this broadcaster instance in its signals (unique per process start).
    pub fn new(node: Arc<str>, timing: Timing) -> Self {
        Rooms {
            node,
            timing,
            rooms: HashMap::new(),
            removals: Removals::default(),
            next_epoch: 0,
            outgoing: Vec::new(),
        }
    }

    /// Signals to publish, in order, since the last call.
    pub fn take_outgoing(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut self.outgoing)
    }

    fn publish<T: serde::Serialize>(&mut self, subject: String, body: &T) {
        let payload = serde_json::to_vec(body).expect("signals serialize").into();
        self.outgoing.push(Outgoing { subject, payload });
    }

    fn publish_presence(
        &mut self,
        room_id: &str,
        present: Vec<ChatUser>,
        left: Vec<String>,
        ttl: Duration,
        sync: bool,
    ) {
        let subject = presence_subject(room_id);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let node = self.node.to_string();
        if present.len() <= MAX_PRESENCE_USERS_PER_SIGNAL
            && left.len() <= MAX_PRESENCE_USERS_PER_SIGNAL
        {
            let signal = PresenceSignal { node, present, left, ttl_ms, sync };
            self.publish(subject, &signal);
            return;
        }
        for chunk in present.chunks(MAX_PRESENCE_USERS_PER_SIGNAL) {
            let signal = PresenceSignal {
                node: node.clone(),
                present: chunk.to_vec(),
                left: vec![],
                ttl_ms,
                sync,
            };
            self.publish(subject.clone(), &signal);
        }
        for chunk in left.chunks(MAX_PRESENCE_USERS_PER_SIGNAL) {
            let signal = PresenceSignal {
                node: node.clone(),
                present: vec![],
                left: chunk.to_vec(),
                ttl_ms,
                sync: false,
            };
            self.publish(subject.clone(), &signal);
        }
    }

    fn publish_typing(&mut self, room_id: &str, user: &ChatUser, active: bool) {
        let signal = TypingSignal { node: self.node.to_string(), user: user.clone(), active };
        self.publish(typing_subject(room_id), &signal);
    }

    /// Position to hand back to [`Rooms::join`] after the membership check.
    pub fn removal_mark(&self) -> u64 {
        self.removals.mark()
    }

    /// Whether `user_id` is subscribed to `room_id` here (or was, within the grace) and was
    /// not removed since: a member, without asking the api again.
    pub fn known_member(&self, room_id: &str, user_id: &str) -> bool {
        self.rooms.get(room_id).is_some_and(|room| room.presence.is_local(user_id))
    }

    /// Admits a subscription of `user` to `room_id` whose membership was established after
    /// `mark`; `None` if a removal of the user from the room was seen since.
    pub fn join(
        &mut self,
        room_id: &str,
        user: &ChatUser,
        mark: u64,
        now: Instant,
    ) -> Option<Joined> {
        if self.removals.removed_since(room_id, &user.id, mark) {
            return None;
        }
        let new_room = !self.rooms.contains_key(room_id);
        let heartbeat = self.timing.heartbeat;
        let room = self.rooms.entry(room_id.to_owned()).or_insert_with(|| Room {
            channel: format!("chat:{room_id}"),
            ring: ring::channel(RING_CAPACITY),
            presence: Presence::default(),
            typing: Typing::default(),
            next_heartbeat: now + heartbeat,
        });
        let receiver = room.ring.subscribe();
        self.next_epoch += 1;
        let connected = room.presence.connect(user, self.next_epoch);
        room.send_diff(connected.diff);
        // A new room is announced by `request_sync`, once its signals are followed.
        if connected.new_here && !new_room {
            let ttl = self.timing.presence_ttl;
            self.publish_presence(room_id, vec![user.clone()], vec![], ttl, false);
        }
        Some(Joined { receiver, epoch: connected.epoch, new_room })
    }

    /// Announces this broadcaster's users of a room it just started following and asks the
    /// other broadcasters for theirs now (call it once the room's subject is subscribed).
    pub fn request_sync(&mut self, room_id: &str) {
        let Some(room) = self.rooms.get(room_id) else { return };
        let users = room.presence.local_users();
        if !users.is_empty() {
            self.publish_presence(room_id, users, vec![], self.timing.presence_ttl, true);
        }
    }

    /// A subscription admitted under `epoch` ended. If it typed within the typing TTL, its
    /// indicator ends now, here and (by a signal) everywhere.
    pub fn leave(
        &mut self,
        room_id: &str,
        user_id: &str,
        epoch: u64,
        typed_at: Option<Instant>,
        now: Instant,
    ) {
        let Some(room) = self.rooms.get_mut(room_id) else { return };
        room.presence.disconnect(user_id, epoch, now, self.timing.grace);
        let typed_recently =
            typed_at.is_some_and(|at| now.saturating_duration_since(at) < self.timing.typing_ttl);
        if typed_recently && let Some(user) = room.typing.stop(user_id) {
            room.send_typing(user.clone(), false);
            self.publish_typing(room_id, &user, false);
        }
    }

    /// Whether a seat admitted under `epoch` still stands (false once the user was removed).
    pub fn holds(&self, room_id: &str, user_id: &str, epoch: u64) -> bool {
        self.rooms.get(room_id).is_some_and(|room| room.presence.holds(user_id, epoch))
    }

    /// A local subscriber of `room_id` typed.
    pub fn typing(&mut self, room_id: &str, user: &ChatUser, now: Instant) {
        let until = now + self.timing.typing_ttl;
        let Some(room) = self.rooms.get_mut(room_id) else { return };
        if room.typing.start(user, until) {
            room.send_typing(user.clone(), true);
        }
        self.publish_typing(room_id, user, true);
    }

    /// A signal from another broadcaster on `room_id`'s subject.
    pub fn on_signal(&mut self, room_id: &str, kind: SignalKind, payload: &[u8], now: Instant) {
        if payload.len() > MAX_SIGNAL_BYTES {
            return;
        }
        let Some(room) = self.rooms.get_mut(room_id) else { return };
        match kind {
            SignalKind::Typing => {
                let Ok(signal) = serde_json::from_slice::<TypingSignal>(payload) else { return };
                if *signal.node == *self.node {
                    return;
                }
                if signal.active {
                    if room.typing.start(&signal.user, now + self.timing.typing_ttl) {
                        room.send_typing(signal.user, true);
                    }
                } else if let Some(user) = room.typing.stop(&signal.user.id) {
                    room.send_typing(user, false);
                }
            }
            SignalKind::Presence => {
                let Ok(signal) = serde_json::from_slice::<PresenceSignal>(payload) else { return };
                if *signal.node == *self.node {
                    return;
                }
                let node: Arc<str> = Arc::from(signal.node.as_str());
                let diff = room.presence.apply(&node, &signal, now);
                room.send_diff(diff);
                if signal.sync && !room.presence.is_idle() {
                    room.next_heartbeat = now; // answered at the next tick
                }
            }
        }
    }

    /// `chat.member_removed` for `user_id` went through the feed: admissions in flight are
    /// refused, seats stop standing, presence and typing end (the subscriptions themselves are
    /// ended by the hub's revocation marker).
    pub fn member_removed(&mut self, room_id: &str, user_id: &str, now: Instant) {
        self.removals.record(room_id, user_id, now);
        let Some(room) = self.rooms.get_mut(room_id) else { return };
        let (diff, was_local) = room.presence.remove_user(user_id, now, TOMBSTONE);
        room.send_diff(diff);
        if let Some(user) = room.typing.stop(user_id) {
            room.send_typing(user, false);
        }
        if was_local {
            self.publish_presence(
                room_id,
                vec![],
                vec![user_id.to_owned()],
                self.timing.presence_ttl,
                false,
            );
        }
    }

    /// `chat.message` by `user_id` went through the feed: their indicator ends (every
    /// broadcaster sees the event, so no signal is needed).
    pub fn message_sent(&mut self, room_id: &str, user_id: &str) {
        if let Some(room) = self.rooms.get_mut(room_id)
            && let Some(user) = room.typing.stop(user_id)
        {
            room.send_typing(user, false);
        }
    }

    /// Everyone present in `room_id`.
    pub fn presence(&self, room_id: &str) -> Vec<ChatUser> {
        self.rooms.get(room_id).map(|room| room.presence.users()).unwrap_or_default()
    }

    /// Ends what is due: typing indicators, grace periods, other broadcasters' expired entries;
    /// sends heartbeats that are due; forgets rooms without local users. Returns whether the
    /// set of rooms changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        self.removals.prune(now);
        let mut heartbeats = Vec::new();
        let mut gone_here = Vec::new();
        for (room_id, room) in &mut self.rooms {
            for user in room.typing.expire(now) {
                room.send_typing(user, false);
            }
            let (diff, gone) = room.presence.expire(now);
            room.send_diff(diff);
            if !gone.is_empty() {
                gone_here.push((room_id.clone(), gone));
            }
            if room.next_heartbeat <= now && !room.presence.is_idle() {
                heartbeats.push((room_id.clone(), room.presence.local_users()));
                room.next_heartbeat = now + self.timing.heartbeat;
            }
        }
        let ttl = self.timing.presence_ttl;
        for (room_id, gone) in gone_here {
            self.publish_presence(&room_id, vec![], gone, ttl, false);
        }
        for (room_id, users) in heartbeats {
            self.publish_presence(&room_id, users, vec![], ttl, false);
        }
        let before = self.rooms.len();
        self.rooms.retain(|_, room| !room.presence.is_idle());
        before != self.rooms.len()
    }

    /// Signals for a graceful shutdown: every local entry is announced with only the grace
    /// period left, so it ends soon everywhere unless the user reconnects elsewhere in time.
    pub fn shutdown(&mut self) {
        let grace = self.timing.grace;
        let rooms: Vec<(String, Vec<ChatUser>)> = self
            .rooms
            .iter()
            .filter(|(_, room)| !room.presence.is_idle())
            .map(|(id, room)| (id.clone(), room.presence.local_users()))
            .collect();
        for (room_id, users) in rooms {
            self.publish_presence(&room_id, users, vec![], grace, false);
        }
    }

    pub fn room_ids(&self) -> HashSet<String> {
        self.rooms.keys().cloned().collect()
    }

    /// The `limit` rooms with the most local subscriptions (ties by room id), and how many
    /// rooms there are in all.
    pub fn top_rooms(&self, limit: usize) -> (Vec<RoomLoad>, usize) {
        let mut loads: Vec<RoomLoad> = self
            .rooms
            .iter()
            .map(|(id, room)| RoomLoad {
                room_id: id.clone(),
                connections: room.presence.local_connections(),
                users: room.presence.local_user_count(),
            })
            .collect();
        loads.sort_by(|a, b| {
            b.connections.cmp(&a.connections).then_with(|| a.room_id.cmp(&b.room_id))
        });
        loads.truncate(limit);
        (loads, self.rooms.len())
    }

    /// (rooms followed, local users summed over rooms, typing indicators shown)
    pub fn stats(&self) -> (usize, usize, usize) {
        let users = self.rooms.values().map(|r| r.presence.local_user_count()).sum();
        let typing = self.rooms.values().map(|r| r.typing.len()).sum();
        (self.rooms.len(), users, typing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_core::chat_live::TypingSignal;

    const TIMING: Timing = Timing {
        typing_ttl: Duration::from_secs(5),
        heartbeat: Duration::from_secs(5),
        presence_ttl: Duration::from_secs(15),
        grace: Duration::from_secs(3),
    };

    fn user(id: &str) -> ChatUser {
        ChatUser { id: id.into(), username: format!("name-{id}") }
    }

    fn frames(rx: &mut ring::Receiver<ChatDelivery>) -> Vec<(ServerFrame, Option<String>)> {
        let mut out = Vec::new();
        while let Ok(Some(ChatDelivery { frame, except })) = rx.try_recv() {
            out.push((serde_json::from_str(&frame).unwrap(), except.map(|e| e.to_string())));
        }
        out
    }

    fn signals(rooms: &mut Rooms) -> Vec<(String, serde_json::Value)> {
        rooms
            .take_outgoing()
            .into_iter()
            .map(|o| (o.subject, serde_json::from_slice(&o.payload).unwrap()))
            .collect()
    }

    #[test]
    fn a_join_announces_the_user_and_asks_others_to_sync_only_for_a_new_room() {
        let (mut rooms, t0) = (Rooms::new("me".into(), TIMING), Instant::now());
        let mark = rooms.removal_mark();
        let mut joined = rooms.join("r1", &user("a"), mark, t0).unwrap();
        assert!(joined.new_room);
        assert!(rooms.take_outgoing().is_empty(), "announced once the room is followed");
        rooms.request_sync("r1");
        let sent = signals(&mut rooms);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, "ephemeral.chat.r1.presence");
        assert_eq!(sent[0].1["present"][0]["id"], "a");
        assert_eq!(sent[0].1["sync"], true);
        assert_eq!(sent[0].1["ttl_ms"], 15_000);
        assert!(
            matches!(&frames(&mut joined.receiver)[..], [(ServerFrame::PresenceDiff { joined, .. }, None)] if joined[0].id == "a")
        );

        let second = rooms.join("r1", &user("b"), mark, t0).unwrap();
        assert!(!second.new_room);
        assert!(signals(&mut rooms)[0].1.get("sync").is_none());
        assert!(rooms.known_member("r1", "a") && !rooms.known_member("r1", "zed"));
    }

    #[test]
    fn a_removal_seen_during_the_check_wins_and_a_later_one_unseats() {
        let (mut rooms, t0) = (Rooms::new("me".into(), TIMING), Instant::now());
        let mark = rooms.removal_mark();
        rooms.member_removed("r1", "a", t0);
        assert!(rooms.join("r1", &user("a"), mark, t0).is_none(), "removed while checking");

        let mark = rooms.removal_mark();
        let seat = rooms.join("r1", &user("a"), mark, t0).unwrap();
        let mut other = rooms.join("r1", &user("b"), mark, t0).unwrap();
        rooms.take_outgoing();
        frames(&mut other.receiver);
        rooms.typing("r1", &user("a"), t0);
        rooms.member_removed("r1", "a", t0);
        assert!(!rooms.holds("r1", "a", seat.epoch), "the seat no longer stands");
        assert!(!rooms.known_member("r1", "a"), "nor does the cached membership");
        let got = frames(&mut other.receiver);
        let kinds: Vec<String> = got
            .iter()
            .map(|(f, _)| match f {
                ServerFrame::Typing { active, .. } => format!("typing {active}"),
                ServerFrame::PresenceDiff { left, .. } => format!("left {}", left[0].id),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, ["typing true", "left a", "typing false"]);
        let sent = signals(&mut rooms);
        assert_eq!(sent.last().unwrap().1["left"][0], "a", "the others hear it too: {sent:?}");
        assert_eq!(rooms.presence("r1"), vec![user("b")]);
    }

    #[test]
    fn typing_reaches_others_not_the_typist_and_ends_on_expiry_send_or_leave() {
        let (mut rooms, t0) = (Rooms::new("me".into(), TIMING), Instant::now());
        let mut a = rooms.join("r1", &user("a"), 0, t0).unwrap();
        rooms.join("r1", &user("b"), 0, t0).unwrap();
        frames(&mut a.receiver);
        rooms.take_outgoing();

        rooms.typing("r1", &user("a"), t0);
        rooms.typing("r1", &user("a"), t0 + Duration::from_secs(2));
        let got = frames(&mut a.receiver);
        assert_eq!(got.len(), 1, "a start, then only refreshes: {got:?}");
        assert!(
            matches!(&got[0], (ServerFrame::Typing { active: true, .. }, Some(except)) if except == "a")
        );
        let sent = signals(&mut rooms);
        assert_eq!(sent.len(), 2, "every accepted frame refreshes the other broadcasters");
        assert_eq!(sent[0].0, "ephemeral.chat.r1.typing");
        assert_eq!(
            (sent[0].1["node"].as_str(), sent[0].1["active"].as_bool()),
            (Some("me"), Some(true))
        );

        rooms.tick(t0 + Duration::from_secs(6));
        assert!(frames(&mut a.receiver).is_empty(), "refreshed at 2 s: lasts until 7 s");
        rooms.tick(t0 + Duration::from_secs(7));
        assert!(matches!(
            &frames(&mut a.receiver)[..],
            [(ServerFrame::Typing { active: false, .. }, _)]
        ));

        rooms.typing("r1", &user("a"), t0);
        rooms.message_sent("r1", "a");
        assert!(matches!(
            &frames(&mut a.receiver)[..],
            [_, (ServerFrame::Typing { active: false, .. }, _)]
        ));

        rooms.typing("r1", &user("b"), t0);
        rooms.take_outgoing();
        rooms.leave("r1", "b", 2, Some(t0), t0 + Duration::from_secs(1));
        assert!(matches!(
            &frames(&mut a.receiver)[..],
            [_, (ServerFrame::Typing { active: false, .. }, _)]
        ));
        let sent = signals(&mut rooms);
        assert_eq!(sent[0].1["active"], false, "the stop goes to the other broadcasters");
    }

    #[test]
    fn remote_typing_expires_by_itself_and_own_signals_are_ignored() {
        let (mut rooms, t0) = (Rooms::new("me".into(), TIMING), Instant::now());
        let mut a = rooms.join("r1", &user("a"), 0, t0).unwrap();
        frames(&mut a.receiver);
        let remote = |node: &str, active| {
            serde_json::to_vec(&TypingSignal { node: node.into(), user: user("x"), active })
                .unwrap()
        };
        rooms.on_signal("r1", SignalKind::Typing, &remote("me", true), t0);
        assert!(frames(&mut a.receiver).is_empty());
        rooms.on_signal("r1", SignalKind::Typing, &remote("other", true), t0);
        rooms.on_signal("unknown-room", SignalKind::Typing, &remote("other", true), t0);
        rooms.on_signal("r1", SignalKind::Typing, b"not json", t0);
        assert_eq!(frames(&mut a.receiver).len(), 1);
        rooms.tick(t0 + TIMING.typing_ttl);
        assert!(matches!(
            &frames(&mut a.receiver)[..],
            [(ServerFrame::Typing { active: false, .. }, _)]
        ));
    }

    #[test]
    fn grace_heartbeats_sync_and_idle_rooms() {
        let (mut rooms, t0) = (Rooms::new("me".into(), TIMING), Instant::now());
        let a = rooms.join("r1", &user("a"), 0, t0).unwrap();
        rooms.take_outgoing();
        assert!(!rooms.tick(t0 + Duration::from_secs(1)));
        assert!(rooms.take_outgoing().is_empty());
        rooms.tick(t0 + TIMING.heartbeat);
        let sent = signals(&mut rooms);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].1["present"][0]["id"], "a");

        // A sync request from a new broadcaster is answered at the next tick.
        let sync = PresenceSignal {
            node: "new".into(),
            present: vec![user("n")],
            left: vec![],
            ttl_ms: 15_000,
            sync: true,
        };
        rooms.on_signal(
            "r1",
            SignalKind::Presence,
            &serde_json::to_vec(&sync).unwrap(),
            t0 + Duration::from_secs(6),
        );
        rooms.tick(t0 + Duration::from_secs(6));
        assert_eq!(signals(&mut rooms).len(), 1);
        assert_eq!(rooms.presence("r1").len(), 2);

        let leave_at = t0 + Duration::from_secs(7);
        rooms.leave("r1", "a", a.epoch, None, leave_at);
        assert!(!rooms.tick(leave_at + Duration::from_secs(2)), "in the grace");
        assert!(rooms.tick(leave_at + TIMING.grace), "gone, and the room with it");
        let sent = signals(&mut rooms);
        assert_eq!(sent[0].1["left"][0], "a");
        assert!(rooms.room_ids().is_empty());
    }

    #[test]
    fn shutdown_hands_out_the_grace_as_ttl_and_big_rooms_are_chunked() {
        let (mut rooms, t0) = (Rooms::new("me".into(), TIMING), Instant::now());
        for n in 0..(MAX_PRESENCE_USERS_PER_SIGNAL + 1) {
            rooms.join("r1", &user(&format!("u{n}")), 0, t0).unwrap();
        }
        rooms.take_outgoing();
        rooms.shutdown();
        let sent = signals(&mut rooms);
        assert_eq!(sent.len(), 2, "chunked");
        assert!(sent.iter().all(|(_, s)| s["ttl_ms"] == 3_000));
        let named: usize = sent.iter().map(|(_, s)| s["present"].as_array().unwrap().len()).sum();
        assert_eq!(named, MAX_PRESENCE_USERS_PER_SIGNAL + 1);
        let (top, total) = rooms.top_rooms(10);
        assert_eq!((total, top[0].connections, top[0].users), (1, 501, 501));
    }

    #[test]
    fn top_rooms_orders_by_connections_and_is_bounded() {
        let (mut rooms, t0) = (Rooms::new("me".into(), TIMING), Instant::now());
        for (room, n) in [("quiet", 1), ("busy", 4), ("mid", 2)] {
            for tab in 0..n {
                rooms.join(room, &user(if tab % 2 == 0 { "a" } else { "b" }), 0, t0).unwrap();
            }
        }
        let (top, total) = rooms.top_rooms(2);
        assert_eq!(total, 3);
        assert_eq!(
            top,
            vec![
                RoomLoad { room_id: "busy".into(), connections: 4, users: 2 },
                RoomLoad { room_id: "mid".into(), connections: 2, users: 2 },
            ]
        );
        assert_eq!(rooms.stats(), (3, 5, 0));
    }
}
