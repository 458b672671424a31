//! The live feed: one ordered JetStream consumer per broadcaster process on `events.>`, pushed
//! into the hub. If the consumer is lost (NATS restart), it is recreated from the last sequence
//! fanned out, so live subscribers see every event once NATS is back.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull::OrderedConfig},
};
use courier_core::{
    backoff::Backoff,
    subjects::{EVENTS_ALL, EVENTS_STREAM, broadcaster_consumer_name},
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::{chat::ChatLive, hub::Hub, metrics::BroadcasterMetrics};

/// The parts of an event the feed needs besides its bytes: its trace id (for the log line
/// that follows a request across services) and its commit time (for the lag histogram).
#[derive(Debug, Default, PartialEq)]
struct EventHead<'a> {
    trace_id: &'a str,
    committed_at: Option<std::time::SystemTime>,
}

impl<'a> EventHead<'a> {
    fn parse(payload: &'a str) -> Self {
        #[derive(serde::Deserialize)]
        struct Head<'a> {
            #[serde(borrow, default)]
            trace_id: Option<&'a str>,
            #[serde(default)]
            time: Option<chrono::DateTime<chrono::Utc>>,
        }
        match serde_json::from_str::<Head<'a>>(payload) {
            Ok(head) => EventHead {
                trace_id: head.trace_id.unwrap_or(""),
                committed_at: head.time.map(Into::into),
            },
            Err(_) => EventHead::default(),
        }
    }
}

pub struct LiveFeed {
    pub js: jetstream::Context,
    pub hub: Arc<Hub>,
    pub metrics: Arc<BroadcasterMetrics>,
    /// True while a consumer is attached (part of `/readyz`).
    pub attached: Arc<AtomicBool>,
    /// Sees every event after the hub: chat removals and messages act on subscriptions.
    pub chat: Arc<ChatLive>,
}

impl LiveFeed {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_secs(2));
        while !shutdown.is_cancelled() {
            match self.attach_and_fan_out(&shutdown).await {
                Ok(()) => backoff.reset(),
                Err(err) => {
                    tracing::warn!(%err, retry_in = ?backoff.next_delay(), "live feed detached");
                    if !backoff.wait(&shutdown).await {
                        break;
                    }
                }
            }
            self.attached.store(false, Ordering::Release);
        }
    }

    /// Creates the ordered consumer (new events, or from just after the last one seen) and
    /// fans messages out until the consumer ends or shutdown.
    async fn attach_and_fan_out(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<(), async_nats::Error> {
        let mut stream = self.js.get_stream(EVENTS_STREAM).await?;
        if !self.hub.started() {
            // First attach: start right after the stream's current end, and say so to the hub,
            // so `subscribed.seq` and replays line up with what live delivery will cover.
            let stream_last = stream.info().await?.state.last_sequence;
            self.hub.start_at(stream_last);
        }
        let last = self.hub.last_seq();
        let deliver_policy = if last == 0 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence { start_sequence: last + 1 }
        };
        let consumer = stream
            .create_consumer(OrderedConfig {
                name: Some(broadcaster_consumer_name("feed")),
                filter_subject: EVENTS_ALL.to_owned(),
                deliver_policy,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        self.attached.store(true, Ordering::Release);
        tracing::info!(after_seq = last, "live feed attached to {EVENTS_STREAM}");
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                next = messages.next() => next,
            };
            let message = match next {
                None => return Err("ordered consumer ended".into()),
                Some(Err(err)) => {
                    // The ordered consumer recreates itself after most errors; just note it.
                    tracing::debug!(%err, "live feed error");
                    self.attached.store(false, Ordering::Release);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Some(Ok(message)) => message,
            };
            self.attached.store(true, Ordering::Release);
            let seq = match message.info() {
                Ok(info) => info.stream_sequence,
                Err(err) => {
                    tracing::warn!(%err, "event without JetStream metadata; skipped");
                    continue;
                }
            };
            if seq <= self.hub.last_seq() {
                continue; // already fanned out before a re-attach
            }
            match std::str::from_utf8(&message.payload) {
                Ok(payload) => {
                    let head = EventHead::parse(payload);
                    tracing::debug!(seq, subject = %message.subject, trace_id = head.trace_id, "event received");
                    let channels =
                        self.hub.publish(&message.subject, seq, payload, head.committed_at);
                    if let Some((channel, user_id)) = self.chat.on_event(&message.subject, payload)
                    {
                        self.hub.revoke(&channel, &user_id, seq);
                    }
                    self.metrics.events_received.inc();
                    self.metrics.channel_fanouts.inc_by(channels as u64);
                }
                Err(_) => tracing::warn!(seq, "event payload is not UTF-8; skipped"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_head_gives_the_trace_id_and_commit_time_and_tolerates_anything_else() {
        let head = EventHead::parse(
            r#"{"id":"x","time":"2026-01-01T00:00:00.250Z","trace_id":"abc","data":{"time":"no"}}"#,
        );
        assert_eq!(head.trace_id, "abc");
        let expected = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_767_225_600_250);
        assert_eq!(head.committed_at, Some(expected));
        assert_eq!(EventHead::parse("not json"), EventHead::default());
        assert_eq!(EventHead::parse(r#"{"time":"yesterday"}"#), EventHead::default());
    }
}
