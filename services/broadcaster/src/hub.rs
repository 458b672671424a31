//! The in-process fan-out: one broadcast ring per channel holding ready-to-send frames. An event
//! is serialized once per channel and its bytes are shared by every subscriber; the feed task
//! never waits on a client, and a client that falls a whole ring behind is told so (`Lagged`).
//! Rings are sized lazily ([`crate::ring`]): an idle channel holds no slots. Memory is bounded
//! per channel (events and bytes a ring may buffer) and per process (how many channels exist).

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::extract::ws::Utf8Bytes;
use courier_core::{
    channel::{CHAT_COLLECTION, Channel, USER_COLLECTION},
    protocol::encode_event_frame,
    subjects::{EventSubject, parse_event_subject},
};

use crate::{
    ring,
    view::{EventStates, View, ViewedEvent},
};

/// One event frame for one channel, ready to write to any socket.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub seq: u64,
    pub frame: Utf8Bytes,
    /// When the change was committed (the event's `time`), for the delivery-lag histogram.
    pub committed_at: Option<std::time::SystemTime>,
    /// A `chat.message` event (its lag is also recorded as chat delivery lag).
    pub chat_message: bool,
    /// Not an event but a cut-off: this user's subscriptions to the channel end here, right
    /// after the removal event `seq` (`frame` is empty).
    pub revoke: Option<Arc<str>>,
    /// The event as filtered and rule-checked subscriptions see it (document collections).
    pub viewed: Option<Arc<ViewedEvent>>,
}

impl Delivery {
    /// One channel's delivery of the event at `seq`: `payload` as stored, `states` its parse
    /// (document collections: the frame then carries the event without `previous`).
    pub fn event(
        channel: &str,
        seq: u64,
        payload: &str,
        states: Option<&Arc<EventStates>>,
        committed_at: Option<std::time::SystemTime>,
    ) -> Self {
        let raw = states.map_or(payload, |states| &**states.payload());
        Delivery {
            seq,
            frame: Utf8Bytes::from(encode_event_frame(channel, seq, raw)),
            committed_at,
            chat_message: false,
            revoke: None,
            viewed: states
                .map(|states| Arc::new(ViewedEvent::new(states.clone(), Arc::from(channel), seq))),
        }
    }

    /// The frame a subscription gets: the shared frame without a view; with one, the frame
    /// its view decides, or none.
    pub fn frame_for(&self, view: Option<&View>) -> Option<Utf8Bytes> {
        match (view, &self.viewed) {
            (Some(view), Some(viewed)) => viewed.frame_for(view),
            _ => Some(self.frame.clone()),
        }
    }
}

/// The parsed states of an event, for views: only document collections' events have them
/// (chat and per-user events have no view).
pub fn event_states(subject: &EventSubject<'_>, payload: &str) -> Option<Arc<EventStates>> {
    if subject.collection == CHAT_COLLECTION || subject.collection == USER_COLLECTION {
        return None;
    }
    EventStates::parse(subject.action, payload).map(Arc::new)
}

/// The process already keeps its most channels; nothing was joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyChannels(pub usize);

pub struct Hub {
    channels: RwLock<HashMap<String, ring::Sender<Delivery>>>,
    capacity: usize,
    /// Most bytes of frames one ring buffers.
    max_bytes: usize,
    /// Most channels (rings) at once.
    max_channels: usize,
    /// Highest stream sequence fanned out; read under the channel lock by `subscribe`.
    last_seq: AtomicU64,
    started: std::sync::atomic::AtomicBool,
}

/// A new subscription: the receiver and the sequence it starts after.
pub struct Subscription {
    pub receiver: ring::Receiver<Delivery>,
    pub after_seq: u64,
}

impl Hub {
    /// A hub whose rings hold `capacity` events each, with no byte or channel limit (tests).
    pub fn new(capacity: usize) -> Self {
        Self::with_limits(capacity, usize::MAX, usize::MAX)
    }

    /// A hub whose rings hold at most `capacity` events and `max_bytes` bytes of frames each,
    /// with at most `max_channels` channels.
    pub fn with_limits(capacity: usize, max_bytes: usize, max_channels: usize) -> Self {
        Hub {
            channels: RwLock::new(HashMap::new()),
            capacity: capacity.max(1),
            max_bytes,
            max_channels,
            last_seq: AtomicU64::new(0),
            started: Default::default(),
        }
    }

    /// Whether the live feed has attached once (before that, positions are unknown).
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Called by the live feed on its first attach: live delivery covers every event after
    /// `stream_last`.
    pub fn start_at(&self, stream_last: u64) {
        let _channels = self.channels.write().expect("hub lock poisoned");
        self.last_seq.fetch_max(stream_last, Ordering::AcqRel);
        self.started.store(true, Ordering::Release);
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    /// Joins `channel`. Every event fanned out after this call whose sequence is greater than
    /// `after_seq` reaches the receiver (the lock makes the two consistent). A new channel
    /// past the channel limit is refused (rings nobody listens to are dropped first).
    pub fn subscribe(&self, channel: &Channel) -> Result<Subscription, TooManyChannels> {
        let mut channels = self.channels.write().expect("hub lock poisoned");
        let name = channel.name();
        if !channels.contains_key(&name) && channels.len() >= self.max_channels {
            channels.retain(|_, sender| sender.receiver_count() > 0);
            if channels.len() >= self.max_channels {
                return Err(TooManyChannels(self.max_channels));
            }
        }
        let receiver = channels
            .entry(name)
            .or_insert_with(|| {
                ring::channel_bounded(self.capacity, self.max_bytes, |d: &Delivery| d.frame.len())
            })
            .subscribe();
        Ok(Subscription { receiver, after_seq: self.last_seq.load(Ordering::Acquire) })
    }

    /// Fans out one event from the stream. `payload` is the event JSON as stored. Returns how
    /// many channel rings received it.
    pub fn publish(
        &self,
        subject: &str,
        seq: u64,
        payload: &str,
        committed_at: Option<std::time::SystemTime>,
    ) -> usize {
        let Some(parts) = parse_event_subject(subject) else {
            tracing::warn!(subject, "ignoring event with an unexpected subject");
            return 0;
        };
        let document_channel = format!("{}:{}", parts.collection, parts.doc_id);
        let chat_message = parts.collection == CHAT_COLLECTION && parts.action == "message";
        let channels = self.channels.read().expect("hub lock poisoned");
        let mut delivered = 0;
        let mut states = None;
        for name in [parts.collection, document_channel.as_str()] {
            if let Some(sender) = channels.get(name)
                && sender.receiver_count() > 0
            {
                let states = states.get_or_insert_with(|| event_states(&parts, payload));
                let mut delivery =
                    Delivery::event(name, seq, payload, states.as_ref(), committed_at);
                delivery.chat_message = chat_message;
                // An error only means every receiver left since the check: nothing to do.
                let _ = sender.send(delivery);
                delivered += 1;
            }
        }
        self.last_seq.fetch_max(seq, Ordering::AcqRel);
        delivered
    }

    /// Records the event at `seq` as handled without delivering it (a refused event), so the
    /// sequence bookkeeping moves past it as after a delivery.
    pub fn skip(&self, seq: u64) {
        self.last_seq.fetch_max(seq, Ordering::AcqRel);
    }

    /// Ends `user_id`'s subscriptions to `channel` after the event at `seq` (already fanned
    /// out): a marker in the channel's ring, so each subscriber gets exactly the events up to
    /// the removal. Call it after the chat state has recorded the removal, so a subscribe that
    /// joins the ring after the marker sees the removal there instead.
    pub fn revoke(&self, channel: &str, user_id: &str, seq: u64) {
        let channels = self.channels.read().expect("hub lock poisoned");
        if let Some(sender) = channels.get(channel) {
            let marker = Delivery {
                seq,
                frame: Utf8Bytes::from_static(""),
                committed_at: None,
                chat_message: false,
                revoke: Some(Arc::from(user_id)),
                viewed: None,
            };
            let _ = sender.send(marker);
        }
    }

    /// Drops rings nobody listens to any more and releases idle rings' buffers; called
    /// periodically.
    pub fn prune(&self) -> usize {
        let mut channels = self.channels.write().expect("hub lock poisoned");
        let before = channels.len();
        channels.retain(|_, sender| sender.receiver_count() > 0);
        for sender in channels.values() {
            sender.shrink_idle();
        }
        before - channels.len()
    }

    /// Heap bytes held for `channel` (its ring and map entry; 0 if it has none): the
    /// per-channel memory bound made measurable.
    pub fn channel_heap_bytes(&self, channel: &str) -> usize {
        let channels = self.channels.read().expect("hub lock poisoned");
        channels.get(channel).map_or(0, |sender| {
            sender.heap_bytes()
                + channel.len()
                + std::mem::size_of::<(String, ring::Sender<Delivery>)>()
        })
    }

    pub fn channel_count(&self) -> usize {
        self.channels.read().expect("hub lock poisoned").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_core::protocol::ServerFrame;

    const EVENT: &str = r#"{"id":"0192f3a4-7b6c-7d8e-9f00-112233445566","type":"products.created","collection":"products","doc_id":"abc","data":{},"actor":null,"time":"2026-01-01T00:00:00.000Z","trace_id":"t"}"#;

    #[test]
    fn an_event_reaches_its_collection_and_document_channels_only() {
        let hub = Hub::new(8);
        let mut all = hub.subscribe(&Channel::parse("products").unwrap()).unwrap().receiver;
        let mut one = hub.subscribe(&Channel::parse("products:abc").unwrap()).unwrap().receiver;
        let mut other = hub.subscribe(&Channel::parse("products:zzz").unwrap()).unwrap().receiver;
        let mut desks = hub.subscribe(&Channel::parse("desks").unwrap()).unwrap().receiver;

        assert_eq!(hub.publish("events.products.abc.created", 7, EVENT, None), 2);

        for (receiver, channel) in [(&mut all, "products"), (&mut one, "products:abc")] {
            let delivery = receiver.try_recv().unwrap().expect("a delivery");
            assert_eq!(delivery.seq, 7);
            match serde_json::from_str::<ServerFrame>(&delivery.frame).unwrap() {
                ServerFrame::Event { channel: c, seq, event, .. } => {
                    assert_eq!((c.as_str(), seq, event.doc_id.as_str()), (channel, 7, "abc"));
                }
                other => panic!("unexpected frame {other:?}"),
            }
        }
        assert!(matches!(other.try_recv(), Ok(None)));
        assert!(matches!(desks.try_recv(), Ok(None)));
        assert_eq!(hub.last_seq(), 7);
    }

    #[test]
    fn a_subscription_starts_after_the_last_fanned_out_sequence() {
        let hub = Hub::new(8);
        hub.publish("events.products.abc.created", 3, EVENT, None);
        let sub = hub.subscribe(&Channel::parse("products").unwrap()).unwrap();
        assert_eq!(sub.after_seq, 3);
    }

    #[test]
    fn a_subscriber_a_whole_ring_behind_is_told_it_lagged() {
        let hub = Hub::new(2);
        let mut slow = hub.subscribe(&Channel::parse("products").unwrap()).unwrap().receiver;
        for seq in 1..=3 {
            hub.publish("events.products.abc.created", seq, EVENT, None);
        }
        assert_eq!(slow.try_recv().map(|d| d.map(|d| d.seq)), Err(ring::Lagged(1)));
    }

    #[test]
    fn a_revocation_follows_the_removal_in_the_channel_ring() {
        let hub = Hub::new(8);
        let mut room = hub.subscribe(&Channel::parse("chat:r1").unwrap()).unwrap().receiver;
        hub.publish("events.chat.r1.member_removed", 5, EVENT, None);
        hub.revoke("chat:r1", "u1", 5);
        hub.revoke("chat:nobody-here", "u1", 5);
        hub.publish("events.chat.r1.message", 6, EVENT, None);
        let got: Vec<(u64, Option<String>, bool)> =
            std::iter::from_fn(|| room.try_recv().ok().flatten())
                .map(|d| (d.seq, d.revoke.map(|u| u.to_string()), d.chat_message))
                .collect();
        assert_eq!(got, [(5, None, false), (5, Some("u1".to_owned()), false), (6, None, true)]);
    }

    #[test]
    fn an_idle_channel_with_one_subscriber_holds_under_a_kibibyte() {
        let hub = Hub::new(1024);
        let mut sub = hub.subscribe(&Channel::parse("products:abc").unwrap()).unwrap().receiver;
        let fresh = hub.channel_heap_bytes("products:abc");
        assert!(fresh <= 1024, "a fresh channel holds {fresh} bytes");
        // A burst grows the ring (up to its cap); once read and idle it is released again.
        for seq in 1..=500 {
            hub.publish("events.products.abc.created", seq, EVENT, None);
        }
        let mut got = Vec::new();
        assert_eq!(sub.try_recv_many(&mut got, 1000), Ok(500));
        hub.prune();
        let idle = hub.channel_heap_bytes("products:abc");
        assert!(idle <= 1024, "an idle channel holds {idle} bytes after a burst");
        assert_eq!(hub.channels.read().unwrap()["products:abc"].allocated_slots(), 0);
    }

    #[test]
    fn a_channel_buffers_at_most_its_bytes_for_a_slow_subscriber() {
        let frame_len = encode_event_frame("products", 1, EVENT).len();
        let hub = Hub::with_limits(1024, 10 * frame_len, usize::MAX);
        let mut slow = hub.subscribe(&Channel::parse("products").unwrap()).unwrap().receiver;
        for seq in 1..=100 {
            hub.publish("events.products.abc.created", seq, EVENT, None);
        }
        let held = hub.channels.read().unwrap()["products"].buffered_bytes();
        assert!(held <= 10 * frame_len, "{held} bytes held, cap {}", 10 * frame_len);
        assert!(matches!(slow.try_recv(), Err(ring::Lagged(skipped)) if skipped >= 90));
    }

    #[test]
    fn past_the_channel_limit_a_new_channel_is_refused_and_idle_ones_make_room() {
        let hub = Hub::with_limits(8, usize::MAX, 2);
        let a = hub.subscribe(&Channel::parse("products:a").unwrap()).unwrap();
        let _b = hub.subscribe(&Channel::parse("products:b").unwrap()).unwrap();
        let c = Channel::parse("products:c").unwrap();
        assert_eq!(hub.subscribe(&c).err(), Some(TooManyChannels(2)));
        let _again = hub.subscribe(&Channel::parse("products:a").unwrap()).expect("existing");
        drop((a, _again));
        hub.subscribe(&c).expect("the channel nobody listens to any more made room");
        assert_eq!(hub.channel_count(), 2);
    }

    #[test]
    fn unused_rings_are_pruned() {
        let hub = Hub::new(2);
        let sub = hub.subscribe(&Channel::parse("products").unwrap()).unwrap();
        assert_eq!(hub.prune(), 0);
        drop(sub);
        assert_eq!(hub.prune(), 1);
        assert_eq!(hub.channel_count(), 0);
    }
}
