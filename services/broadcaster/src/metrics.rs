//! The broadcaster's Prometheus metrics (`courier_*`). Labels stay bounded: channel kinds and
//! close reasons, never channel names or ids.

use std::sync::Arc;

use courier_core::channel::Channel;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{connection::CloseReason, lag_histogram::LagHistogram};

/// Events read from `EVENTS` and not delivered, live or replayed: malformed, or their envelope
/// does not match their subject (`courier_broadcaster_events_refused_total{reason}`; one family
/// per process, shared by every registry).
pub static EVENTS_REFUSED: std::sync::LazyLock<Family<ReasonLabel, Counter>> =
    std::sync::LazyLock::new(|| {
        let family = Family::<ReasonLabel, Counter>::default();
        for reason in ["malformed", "subject_mismatch"] {
            let _ = family.get_or_create(&ReasonLabel { reason });
        }
        family
    });

/// Counts an event refused for `refusal`.
pub fn event_refused(refusal: courier_core::event::EnvelopeRefusal) {
    let reason = match refusal {
        courier_core::event::EnvelopeRefusal::Malformed => "malformed",
        courier_core::event::EnvelopeRefusal::SubjectMismatch => "subject_mismatch",
    };
    EVENTS_REFUSED.get_or_create(&ReasonLabel { reason }).inc();
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Debug)]
pub struct BroadcasterMetrics {
    pub connections: Gauge,
    pub connects: Counter,
    pub disconnects: Family<ReasonLabel, Counter>,
    pub subscriptions: Family<KindLabel, Gauge>,
    pub frames_sent: Counter,
    /// Frames a client never got: skipped when it fell a whole ring behind, or lost with its
    /// connection when a write failed.
    pub frames_dropped: Counter,
    /// Commit (event `time`) → written to the socket, for live deliveries (not replays).
    pub delivery_lag: LagHistogram,
    pub slow_consumer_disconnects: Counter,
    pub replays_served: Counter,
    pub unauthorized_subscribes: Counter,
    pub events_received: Counter,
    pub channel_fanouts: Counter,
    /// Connections and subscribes refused by a limit, by [`Limit`].
    pub limit_refusals: Family<ReasonLabel, Counter>,
}

/// The abuse limits a refusal can come from (the `reason` of `courier_ws_limit_refusals_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Connections,
    ConnectionsPerAddress,
    Channels,
    Replays,
}

impl Limit {
    pub const ALL: [Limit; 4] =
        [Limit::Connections, Limit::ConnectionsPerAddress, Limit::Channels, Limit::Replays];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Connections => "connections",
            Limit::ConnectionsPerAddress => "connections_per_address",
            Limit::Channels => "channels",
            Limit::Replays => "replays",
        }
    }
}

impl BroadcasterMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = BroadcasterMetrics {
            connections: Gauge::default(),
            connects: Counter::default(),
            disconnects: Family::default(),
            subscriptions: Family::default(),
            frames_sent: Counter::default(),
            frames_dropped: Counter::default(),
            delivery_lag: LagHistogram::default(),
            slow_consumer_disconnects: Counter::default(),
            replays_served: Counter::default(),
            unauthorized_subscribes: Counter::default(),
            events_received: Counter::default(),
            channel_fanouts: Counter::default(),
            limit_refusals: Family::default(),
        };
        for limit in Limit::ALL {
            let _ = m.limit_refusals.get_or_create(&ReasonLabel { reason: limit.as_str() });
        }
        // Every label value exists from the start (at 0), so rates and alerts see the first one.
        for reason in CloseReason::ALL {
            let _ = m.disconnects.get_or_create(&ReasonLabel { reason: reason.as_str() });
        }
        for kind in Channel::KINDS {
            let _ = m.subscriptions.get_or_create(&KindLabel { kind });
        }
        registry.register(
            "courier_ws_connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        registry.register(
            "courier_ws_connects",
            "WebSocket connections accepted",
            m.connects.clone(),
        );
        registry.register(
            "courier_ws_disconnects",
            "WebSocket connections closed, by reason",
            m.disconnects.clone(),
        );
        registry.register(
            "courier_ws_subscriptions",
            "Active subscriptions, by channel kind",
            m.subscriptions.clone(),
        );
        registry.register(
            "courier_ws_frames_sent",
            "Event frames written to clients",
            m.frames_sent.clone(),
        );
        registry.register(
            "courier_ws_frames_dropped",
            "Event frames a client never got (fell behind, or its write failed)",
            m.frames_dropped.clone(),
        );
        registry.register(
            "courier_ws_delivery_lag_seconds",
            "Time from a change's commit to its frame being written to a client (live deliveries)",
            m.delivery_lag.clone(),
        );
        registry.register(
            "courier_ws_slow_consumer_disconnects",
            "Clients cut off for falling behind (close 4008)",
            m.slow_consumer_disconnects.clone(),
        );
        registry.register(
            "courier_ws_replays",
            "Subscriptions served with a since-replay",
            m.replays_served.clone(),
        );
        registry.register(
            "courier_ws_unauthorized_subscribes",
            "Subscribes refused for a missing, invalid or expired token",
            m.unauthorized_subscribes.clone(),
        );
        registry.register(
            "courier_broadcaster_events_received",
            "Events read from the EVENTS stream",
            m.events_received.clone(),
        );
        registry.register(
            "courier_broadcaster_events_refused",
            "Events not delivered: malformed, or their envelope does not match their subject",
            EVENTS_REFUSED.clone(),
        );
        registry.register(
            "courier_broadcaster_channel_fanouts",
            "Event frames fanned out to channel rings",
            m.channel_fanouts.clone(),
        );
        registry.register(
            "courier_ws_limit_refusals",
            "Connections and subscribes refused by an abuse limit, by limit",
            m.limit_refusals.clone(),
        );
        Arc::new(m)
    }

    pub fn refused(&self, limit: Limit) {
        self.limit_refusals.get_or_create(&ReasonLabel { reason: limit.as_str() }).inc();
    }

    pub fn connection_opened(&self) {
        self.connects.inc();
        self.connections.inc();
    }

    pub fn connection_closed(&self, reason: CloseReason, subscriptions: &[Channel]) {
        self.connections.dec();
        self.disconnects.get_or_create(&ReasonLabel { reason: reason.as_str() }).inc();
        for channel in subscriptions {
            self.subscription_removed(channel);
        }
    }

    /// Records the lag of frames just written, one per entry of `committed_at`.
    pub fn delivered(&self, committed_at: &[Option<std::time::SystemTime>]) {
        let now = std::time::SystemTime::now();
        for at in committed_at.iter().flatten() {
            // A commit "in the future" (clock skew between hosts) counts as no lag.
            let lag = now.duration_since(*at).unwrap_or_default();
            self.delivery_lag.observe(lag);
        }
        self.frames_sent.inc_by(committed_at.len() as u64);
    }

    pub fn subscription_added(&self, channel: &Channel) {
        self.subscriptions.get_or_create(&KindLabel { kind: channel.kind() }).inc();
    }

    pub fn subscription_removed(&self, channel: &Channel) {
        self.subscriptions.get_or_create(&KindLabel { kind: channel.kind() }).dec();
    }
}
