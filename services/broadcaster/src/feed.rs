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
    event::{EnvelopeRefusal, check_envelope},
    subjects::{EVENTS_ALL, EVENTS_STREAM, broadcaster_consumer_name},
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::{chat::ChatLive, hub::Hub, metrics::BroadcasterMetrics};

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
            let Ok(payload) = std::str::from_utf8(&message.payload) else {
                tracing::warn!(seq, "event payload is not UTF-8; skipped");
                crate::metrics::event_refused(EnvelopeRefusal::Malformed);
                self.hub.skip(seq);
                continue;
            };
            match check_envelope(&message.subject, payload) {
                Ok(head) => {
                    tracing::debug!(seq, subject = %message.subject, trace_id = %head.trace_id, "event received");
                    let committed_at = head.committed_at.map(Into::into);
                    let channels = self.hub.publish(&message.subject, seq, payload, committed_at);
                    if let Some((channel, user_id)) = self.chat.on_event(&message.subject, payload)
                    {
                        self.hub.revoke(&channel, &user_id, seq);
                    }
                    self.metrics.events_received.inc();
                    self.metrics.channel_fanouts.inc_by(channels as u64);
                }
                Err(refusal) => {
                    // Not the api's doing: a publisher with a right to `events.>` (a worker) sent
                    // what its subject does not say. Nobody gets it, not even chat's state.
                    tracing::warn!(seq, subject = %message.subject, %refusal, "event refused; not delivered");
                    crate::metrics::event_refused(refusal);
                    self.hub.skip(seq);
                }
            }
        }
    }
}
