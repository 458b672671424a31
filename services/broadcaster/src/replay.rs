//! Replay for `subscribe {since}`: reads a channel's events after a sequence from the `EVENTS`
//! stream (a short-lived ephemeral pull consumer filtered to the channel's subjects, no acks, in
//! memory), up to a target sequence the live subscription is known to cover.
//!
//! It is streamed, never buffered whole: [`prepare`] checks what there is to replay (and refuses
//! too much), then [`Reader::run`] fetches one page at a time (one pull request of at most
//! [`PAGE`] events and [`PAGE_BYTES`], answered at once from what the stream holds) and hands
//! each page to the connection through a bounded queue, so a replay holds at most a few pages
//! however long it is, and runs at the pace the client reads. An explicit request per page, not
//! a consumer's self-refilling message stream: under heavy load that stream was seen to stop
//! after its first batch for longer than a client waits, and a replay has no use for its
//! prefetching, since every event it reads is already stored.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
};
use courier_core::{
    channel::Channel,
    event::{EnvelopeRefusal, check_envelope},
    subjects::{EVENTS_STREAM, parse_event_subject},
};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::hub::{Delivery, event_states};

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
    /// Events, in order, as live delivery hands them over (so views apply the same way).
    Page(Vec<Delivery>),
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

/// How long the server keeps a replay's consumer after its last request (a broadcaster that
/// died mid-replay leaves none behind for long); a finished replay deletes its own.
const CONSUMER_INACTIVE_THRESHOLD: Duration = Duration::from_secs(30);

/// Reads a prepared replay; see [`Reader::run`].
pub struct Reader {
    consumer: PullConsumer,
    stream: jetstream::stream::Stream,
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
    let mut consumer: PullConsumer = stream
        .create_consumer(pull::Config {
            // Named (the broadcaster's NATS user may only create named, filtered consumers).
            name: Some(courier_core::subjects::broadcaster_consumer_name("replay")),
            filter_subject: channel.subject_filter(),
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: since + 1 },
            ack_policy: AckPolicy::None,
            // Pull requests (the client's buffer) of one page each.
            max_batch: PAGE as i64,
            inactive_threshold: CONSUMER_INACTIVE_THRESHOLD,
            memory_storage: true,
            num_replicas: 1,
            ..Default::default()
        })
        .await?;
    let consumer_name = consumer.cached_info().name.clone();
    let pending = consumer.info().await?.num_pending;
    if pending == 0 || pending > max_events {
        let _ = stream.delete_consumer(&consumer_name).await;
    }
    if pending == 0 {
        return Ok(Prepared { recovered, reader: None });
    }
    if pending > max_events {
        return Err(format!("{pending} events to replay exceeds the limit of {max_events}; resubscribe without since").into());
    }
    Ok(Prepared {
        recovered,
        reader: Some(Reader { consumer, stream, name: channel.name(), until }),
    })
}

impl Reader {
    /// Sends pages to `pages` until the target is reached (then [`ReplayItem::Done`]) or the
    /// replay fails ([`ReplayItem::Failed`]); stops early if the receiver goes away. Waits
    /// while the queue is full: the connection writes a page before the next is read.
    pub async fn run(self, pages: mpsc::Sender<ReplayItem>) {
        let (stream, consumer_name) =
            (self.stream.clone(), self.consumer.cached_info().name.clone());
        let last = match self.pump(&pages).await {
            Ok(()) => ReplayItem::Done,
            Err(err) => ReplayItem::Failed(err.to_string()),
        };
        let _ = pages.send(last).await;
        // Best effort: the inactivity threshold removes it otherwise.
        let _ = stream.delete_consumer(&consumer_name).await;
    }

    async fn pump(self, pages: &mpsc::Sender<ReplayItem>) -> Result<(), async_nats::Error> {
        let Reader { consumer, name, until, .. } = self;
        loop {
            let page = tokio::time::timeout(REPLAY_TIMEOUT, read_page(&consumer, &name, until))
                .await
                .map_err(|_| "the event stream did not answer in time; retry")??;
            let finished = page.finished;
            if pages.send(ReplayItem::Page(page.frames)).await.is_err() {
                return Ok(()); // the subscription is gone
            }
            if finished {
                return Ok(());
            }
        }
    }
}

/// One fetched page: its events, and whether the replay reached its end with it.
struct FetchedPage {
    frames: Vec<Delivery>,
    finished: bool,
}

/// Fetches the next page: one pull request for at most [`PAGE`] events and [`PAGE_BYTES`],
/// answered with what the stream holds (it holds every event a replay asks for). The server
/// ends a request whose next event would pass the byte limit with a 409; the events before it
/// are the page. An event larger than the whole limit is fetched alone.
async fn read_page(
    consumer: &PullConsumer,
    name: &str,
    until: u64,
) -> Result<FetchedPage, async_nats::Error> {
    let page = fetch(consumer, name, until, PAGE, Some(PAGE_BYTES)).await?;
    if page.frames.is_empty() {
        return fetch(consumer, name, until, 1, None).await;
    }
    Ok(page)
}

async fn fetch(
    consumer: &PullConsumer,
    name: &str,
    until: u64,
    max_events: usize,
    max_bytes: Option<usize>,
) -> Result<FetchedPage, async_nats::Error> {
    let mut request = consumer.fetch().max_messages(max_events);
    if let Some(max_bytes) = max_bytes {
        request = request.max_bytes(max_bytes);
    }
    let mut batch = request.messages().await?;
    let mut frames = Vec::with_capacity(max_events);
    while let Some(message) = batch.next().await {
        let message = match message {
            Ok(message) => message,
            // The byte limit reached: the page ends before the event that did not fit.
            Err(err) if max_bytes.is_some() && err.to_string().contains("MaxBytes") => break,
            Err(err) => return Err(err),
        };
        let info = message.info()?;
        let (seq, remaining) = (info.stream_sequence, info.pending);
        // Replayed like live events: only an envelope that matches its subject.
        let checked = std::str::from_utf8(&message.payload)
            .map_err(|_| EnvelopeRefusal::Malformed)
            .and_then(|payload| check_envelope(&message.subject, payload).map(|_| payload));
        match checked {
            Ok(payload) => {
                let states =
                    parse_event_subject(&message.subject).and_then(|s| event_states(&s, payload));
                frames.push(Delivery::event(name, seq, payload, states.as_ref(), None));
            }
            Err(refusal) => {
                tracing::warn!(seq, subject = %message.subject, %refusal, "event refused; not replayed");
                crate::metrics::event_refused(refusal);
            }
        }
        if remaining == 0 || seq >= until {
            return Ok(FetchedPage { frames, finished: true });
        }
    }
    if frames.is_empty() && max_bytes.is_none() {
        return Err("the event stream returned none of the events left to replay; retry".into());
    }
    Ok(FetchedPage { frames, finished: false })
}

/// A queue for one replay's pages.
pub fn queue() -> (mpsc::Sender<ReplayItem>, mpsc::Receiver<ReplayItem>) {
    mpsc::channel(QUEUE_PAGES)
}
