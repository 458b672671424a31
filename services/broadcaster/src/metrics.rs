//! The broadcaster's Prometheus metrics (`courier_*`). Labels stay bounded: channel kinds and
//! close reasons, never channel names or ids.

use std::sync::Arc;

use courier_core::channel::Channel;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::connection::CloseReason;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Debug, Default)]
pub struct BroadcasterMetrics {
    pub connections: Gauge,
    pub connects: Counter,
    pub disconnects: Family<ReasonLabel, Counter>,
    pub subscriptions: Family<KindLabel, Gauge>,
    pub frames_sent: Counter,
    pub slow_consumer_disconnects: Counter,
    pub replays_served: Counter,
    pub unauthorized_subscribes: Counter,
    pub events_received: Counter,
    pub channel_fanouts: Counter,
}

impl BroadcasterMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Self::default();
        registry.register("courier_ws_connections", "Open WebSocket connections", m.connections.clone());
        registry.register("courier_ws_connects", "WebSocket connections accepted", m.connects.clone());
        registry.register("courier_ws_disconnects", "WebSocket connections closed, by reason", m.disconnects.clone());
        registry.register("courier_ws_subscriptions", "Active subscriptions, by channel kind", m.subscriptions.clone());
        registry.register("courier_ws_frames_sent", "Event frames written to clients", m.frames_sent.clone());
        registry.register(
            "courier_ws_slow_consumer_disconnects",
            "Clients cut off for falling behind (close 4008)",
            m.slow_consumer_disconnects.clone(),
        );
        registry.register("courier_ws_replays", "Subscriptions served with a since-replay", m.replays_served.clone());
        registry.register("courier_ws_unauthorized_subscribes", "Subscribes refused for a missing, invalid or expired token", m.unauthorized_subscribes.clone());
        registry.register("courier_broadcaster_events_received", "Events read from the EVENTS stream", m.events_received.clone());
        registry.register("courier_broadcaster_channel_fanouts", "Event frames fanned out to channel rings", m.channel_fanouts.clone());
        Arc::new(m)
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

    pub fn subscription_added(&self, channel: &Channel) {
        self.subscriptions.get_or_create(&KindLabel { kind: channel.kind() }).inc();
    }

    pub fn subscription_removed(&self, channel: &Channel) {
        self.subscriptions.get_or_create(&KindLabel { kind: channel.kind() }).dec();
    }
}
