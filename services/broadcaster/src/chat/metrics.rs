//! The broadcaster's chat metrics (`courier_chat_*`, names from the chat contract). Labels are
//! bounded: outcomes and actions, never a room or user id (the busiest rooms are reported by
//! `/chat/top-rooms` instead).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::membership::Outcome;
use crate::lag_histogram::LagHistogram;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub action: &'static str,
}

#[derive(Debug)]
pub struct ChatMetrics {
    /// Chat subscriptions open on this broadcaster (one per connection and room).
    pub subscriptions: Gauge,
    pub typing_frames: Counter,
    pub rate_limited: Family<ActionLabel, Counter>,
    /// Users present in this broadcaster's rooms through one of its connections, summed over
    /// rooms (a user in two rooms counts twice).
    pub presence_users: Gauge,
    /// Rooms with at least one subscriber here.
    pub rooms: Gauge,
    /// Commit → written to the socket, for `chat.message` events delivered live.
    pub delivery_lag: LagHistogram,
    pub membership_checks: Family<OutcomeLabel, Counter>,
    /// Subscribes admitted without asking the api: the user already had a subscription to the
    /// room here (the membership cache).
    pub membership_cache_hits: Counter,
    /// Subscriptions ended because the member was removed from the room.
    pub revocations: Counter,
}

impl ChatMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = ChatMetrics {
            subscriptions: Gauge::default(),
            typing_frames: Counter::default(),
            rate_limited: Family::default(),
            presence_users: Gauge::default(),
            rooms: Gauge::default(),
            delivery_lag: LagHistogram::default(),
            membership_checks: Family::default(),
            membership_cache_hits: Counter::default(),
            revocations: Counter::default(),
        };
        for outcome in Outcome::ALL {
            let _ = m.membership_checks.get_or_create(&OutcomeLabel { outcome: outcome.as_str() });
        }
        let _ = m.rate_limited.get_or_create(&ActionLabel { action: "typing" });
        registry.register(
            "courier_chat_subscriptions",
            "Chat room subscriptions open on this broadcaster",
            m.subscriptions.clone(),
        );
        registry.register(
            "courier_chat_typing_frames",
            "typing frames accepted from clients",
            m.typing_frames.clone(),
        );
        registry.register(
            "courier_chat_rate_limited",
            "Chat actions refused for exceeding their rate limit, by action",
            m.rate_limited.clone(),
        );
        registry.register(
            "courier_chat_presence_users",
            "Users present in chat rooms through this broadcaster's connections, summed over rooms",
            m.presence_users.clone(),
        );
        registry.register(
            "courier_chat_rooms",
            "Chat rooms with at least one subscriber on this broadcaster",
            m.rooms.clone(),
        );
        registry.register(
            "courier_chat_delivery_lag_seconds",
            "Time from a chat message's commit to its frame being written to a client",
            m.delivery_lag.clone(),
        );
        registry.register(
            "courier_chat_membership_checks",
            "rpc.chat.membership requests made for chat subscribes, by outcome",
            m.membership_checks.clone(),
        );
        registry.register(
            "courier_chat_membership_cache_hits",
            "Chat subscribes admitted from the membership cache (the user already had one here)",
            m.membership_cache_hits.clone(),
        );
        registry.register(
            "courier_chat_revocations",
            "Chat subscriptions ended because the member was removed from the room",
            m.revocations.clone(),
        );
        m
    }

    pub fn checked(&self, outcome: Outcome) {
        self.membership_checks.get_or_create(&OutcomeLabel { outcome: outcome.as_str() }).inc();
    }

    pub fn typing_rate_limited(&self) {
        self.rate_limited.get_or_create(&ActionLabel { action: "typing" }).inc();
    }

    /// Records the lag of chat messages just written.
    pub fn delivered(&self, committed_at: &[std::time::SystemTime]) {
        let now = std::time::SystemTime::now();
        for at in committed_at {
            self.delivery_lag.observe(now.duration_since(*at).unwrap_or_default());
        }
    }
}
