//! Replay for `subscribe {since}`: reads a channel's events after a sequence from the `EVENTS`
//! stream (a short-lived ordered consumer filtered to the channel's subjects), up to a target
//! sequence the live subscription is known to cover.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull::OrderedConfig},
};
use axum::extract::ws::Utf8Bytes;
use courier_core::{channel::Channel, protocol::encode_event_frame, subjects::EVENTS_STREAM};
use futures::StreamExt;

/// Longest a replay may take before the subscription fails with `replay_failed`.
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(15);

/// The outcome of a replay: frames in order, whether the requested history was complete, and
/// the last sequence replayed.
pub struct Replayed {
    pub frames: Vec<(u64, Utf8Bytes)>,
    /// False when events after `since` had already left the stream (retention).
    pub recovered: bool,
    pub last_seq: u64,
}

/// Events of `channel` with `since < seq`, at least up to `until` (inclusive) when the stream
/// has them; may return a few newer ones, which the caller then skips on the live side.
pub async fn replay(
    js: &jetstream::Context,
    channel: &Channel,
    since: u64,
    until: u64,
    max_events: usize,
) -> Result<Replayed, async_nats::Error> {
    let mut stream = js.get_stream(EVENTS_STREAM).await?;
    let first_seq = stream.info().await?.state.first_sequence;
    let recovered = since + 1 >= first_seq;
    let mut replayed = Replayed { frames: Vec::new(), recovered, last_seq: since };
    if until <= since {
        return Ok(replayed);
    }
    let mut consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: channel.subject_filter(),
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: since + 1 },
            ..Default::default()
        })
        .await?;
    let pending = consumer.info().await?.num_pending;
    if pending == 0 {
        return Ok(replayed);
    }
    if pending as usize > max_events {
        return Err(format!("{pending} events to replay exceeds the limit of {max_events}; resubscribe without since").into());
    }
    let name = channel.name();
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        let info = message.info()?;
        let seq = info.stream_sequence;
        let remaining = info.pending;
        let payload =
            std::str::from_utf8(&message.payload).map_err(|_| "event payload is not UTF-8")?;
        replayed.frames.push((seq, Utf8Bytes::from(encode_event_frame(&name, seq, payload))));
        replayed.last_seq = seq;
        if remaining == 0 || seq >= until {
            break;
        }
    }
    Ok(replayed)
}
