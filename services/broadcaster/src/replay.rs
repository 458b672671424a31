//! Replay for `subscribe {since}`: reads a channel's events after a sequence from the `EVENTS`
//! stream (a short-lived ordered consumer filtered to the channel's subjects), up to a target
//! sequence the live subscription is known to cover.
//!
//! It is streamed, never buffered whole: [`prepare`] checks what there is to replay (and refuses
//! too much), then [`Reader::run`] pulls the consumer page by page ([`PAGE`] events per pull
//! request, at most [`PAGE_BYTES`] per page) and hands each page to the connection through a
//! bounded queue, so a replay holds at most a few pages however long it is, and runs at the
//! pace the client reads.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{Consumer, DeliverPolicy, pull::OrderedConfig},
};
use axum::extract::ws::Utf8Bytes;
use courier_core::{
    channel::Channel,
    event::{EnvelopeRefusal, check_envelope},
    protocol::encode_event_frame,
    subjects::EVENTS_STREAM,
};
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;

/// Longest the set-up may take, and longest the stream may stay silent mid-replay, before the
/// replay fails with `replay_failed`.
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(15);

/// Events per pull request and per page handed to the connection.
pub const PAGE: usize = 64;

/// A page is cut short once its frames reach this many bytes (large events).
pub const PAGE_BYTES: usize = 512 * 1024;

/// Pages queued between the reader and the connection (the reader waits when it is full).
pub const QUEUE_PAGES: usize = 2;

/// What the reader hands the connection.
#[derive(Debug)]
pub enum ReplayItem {
    /// Event frames, in order, with their sequences.
    Page(Vec<(u64, Utf8Bytes)>),
    /// Everything up to the target was sent.
    Done,
    /// The replay broke off (the message says why); the frames sent so far are valid.
    Failed(String),
}

/// What [`prepare`] found.
pub struct Prepared {
    /// False when events after `since` had already left the stream (retention).
    pub recovered: bool,
    /// `None`: nothing to replay.
    pub reader: Option<Reader>,
}

/// Reads a prepared replay; see [`Reader::run`].
pub struct Reader {
    consumer: Consumer<OrderedConfig>,
    name: String,
    until: u64,
}

/// Checks a replay of `channel`'s events with `since < seq`, at least up to `until`
/// (inclusive): whether the history is complete, and that at most `max_events` wait.
pub async fn prepare(
    js: &jetstream::Context,
    channel: &Channel,
    since: u64,
    until: u64,
    max_events: u64,
) -> Result<Prepared, async_nats::Error> {
    let mut stream = js.get_stream(EVENTS_STREAM).await?;
    let first_seq = stream.info().await?.state.first_sequence;
    let recovered = since + 1 >= first_seq;
    if until <= since {
        return Ok(Prepared { recovered, reader: None });
    }
    let mut consumer = stream
        .create_consumer(OrderedConfig {
            name: Some(courier_core::subjects::broadcaster_consumer_name("replay")),
            filter_subject: channel.subject_filter(),
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: since + 1 },
            // Pull requests (the client's buffer) of one page each.
            max_batch: PAGE as i64,
            ..Default::default()
        })
        .await?;
    let pending = consumer.info().await?.num_pending;
    if pending == 0 {
        return Ok(Prepared { recovered, reader: None });
    }
    if pending > max_events {
        return Err(format!("{pending} events to replay exceeds the limit of {max_events}; resubscribe without since").into());
    }
    Ok(Prepared { recovered, reader: Some(Reader { consumer, name: channel.name(), until }) })
}

impl Reader {
    /// Sends pages to `pages` until the target is reached (then [`ReplayItem::Done`]) or the
    /// replay fails ([`ReplayItem::Failed`]); stops early if the receiver goes away. Waits
    /// while the queue is full: the connection writes a page before the next is read.
    pub async fn run(self, pages: mpsc::Sender<ReplayItem>) {
        let last = match self.pump(&pages).await {
            Ok(()) => ReplayItem::Done,
            Err(err) => ReplayItem::Failed(err.to_string()),
        };
        let _ = pages.send(last).await;
    }

    async fn pump(self, pages: &mpsc::Sender<ReplayItem>) -> Result<(), async_nats::Error> {
        let Reader { consumer, name, until } = self;
        let mut messages = consumer.messages().await?;
        loop {
            let mut page = Vec::with_capacity(PAGE);
            let mut bytes = 0;
            let mut finished = false;
            // Wait for one message, then take whatever else is already here, up to a page.
            let mut next = match tokio::time::timeout(REPLAY_TIMEOUT, messages.next()).await {
                Ok(next) => next,
                Err(_) => return Err("the event stream did not answer in time; retry".into()),
            };
            loop {
                let message = match next {
                    None => return Err("the event stream ended the replay; retry".into()),
                    Some(message) => message?,
                };
                let info = message.info()?;
                let (seq, remaining) = (info.stream_sequence, info.pending);
                // Replayed like live events: only an envelope that matches its subject.
                let checked = std::str::from_utf8(&message.payload)
                    .map_err(|_| EnvelopeRefusal::Malformed)
                    .and_then(|payload| check_envelope(&message.subject, payload).map(|_| payload));
                match checked {
                    Ok(payload) => {
                        let frame = encode_event_frame(&name, seq, payload);
                        bytes += frame.len();
                        page.push((seq, Utf8Bytes::from(frame)));
                    }
                    Err(refusal) => {
                        tracing::warn!(seq, subject = %message.subject, %refusal, "event refused; not replayed");
                        crate::metrics::event_refused(refusal);
                    }
                }
                if remaining == 0 || seq >= until {
                    finished = true;
                    break;
                }
                if page.len() >= PAGE || bytes >= PAGE_BYTES {
                    break;
                }
                match messages.next().now_or_never() {
                    Some(ready) => next = ready,
                    None => break,
                }
            }
            if pages.send(ReplayItem::Page(page)).await.is_err() {
                return Ok(()); // the subscription is gone
            }
            if finished {
                return Ok(());
            }
        }
    }
}

/// A queue for one replay's pages.
pub fn queue() -> (mpsc::Sender<ReplayItem>, mpsc::Receiver<ReplayItem>) {
    mpsc::channel(QUEUE_PAGES)
}
