//! One WebSocket connection: the protocol v1 state machine. Reads client frames, manages the
//! connection's subscriptions (live rings, plus replay for `since`), writes event frames in
//! batches, pings idle clients, and cuts off clients that cannot keep up (close 4008).
//!
//! A connection never holds up anyone else: the fan-out hands it frames through its channel
//! rings and never waits; everything that can block (socket writes, replays) runs in this
//! connection's own task, under a timeout.
//!
//! A `since` replay streams: a reader task pulls the channel's history page by page into a
//! small queue, and this task writes each page as it comes while serving everything else; the
//! channel's live ring waits (buffering) until the replay is done. Subscriptions a token
//! admitted end when it expires, at that moment (a timer), unless `authenticate` renews them.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use courier_core::{
    channel::Channel,
    protocol::{
        ClientFrame, PROTOCOL_VERSION, ServerFrame, Status, close_code, error_code,
        unsubscribe_reason,
    },
};
use futures::{
    FutureExt, SinkExt, StreamExt,
    stream::{BoxStream, SplitSink, SplitStream},
};
use tokio_stream::StreamMap;
use tokio_tungstenite::tungstenite;

use crate::{
    access::unix_now,
    app::Shared,
    chat::{ChatSeat, Refusal, rooms::ChatDelivery, typing::Limiter},
    hub::{Delivery, TooManyChannels},
    metrics::Limit,
    replay::{self, ReplayItem},
    ring::{self, Lagged},
    view::View,
};

/// Most frames written before one flush.
const WRITE_BATCH: usize = 64;
/// How long a close frame other than 4008 may take to go out before the socket is dropped.
const CLOSE_WINDOW: Duration = Duration::from_secs(1);
/// How long a connection closed for breaking the protocol stays open after its close frame.
const CLOSE_LINGER: Duration = Duration::from_millis(250);
/// Longest error message sent back (serde's messages can quote the client's input).
const MAX_ERROR_MESSAGE: usize = 256;

/// Why a write to the client failed.
#[derive(Debug)]
enum WriteError {
    /// The client did not take the frames within the send timeout: a slow consumer.
    TimedOut,
    /// The socket is gone.
    Closed,
}

type Sink = SplitSink<WebSocket, Message>;

/// Why a connection ended (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    ClientClosed,
    SlowConsumer,
    IdleTimeout,
    Shutdown,
    /// The client broke the WebSocket protocol or a size limit (closed 1002, 1007 or 1009).
    ProtocolError,
    /// A process limit left nothing to serve the socket with (seed-compat sockets: 1013).
    Refused,
    /// The token that admitted a seed-compat chat socket expired (4001).
    TokenExpired,
}

impl CloseReason {
    pub const ALL: [CloseReason; 7] = [
        CloseReason::ClientClosed,
        CloseReason::SlowConsumer,
        CloseReason::IdleTimeout,
        CloseReason::Shutdown,
        CloseReason::ProtocolError,
        CloseReason::Refused,
        CloseReason::TokenExpired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Shutdown => "shutdown",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::Refused => "refused",
            CloseReason::TokenExpired => "token_expired",
        }
    }
}

/// One subscription of a connection.
struct Sub {
    channel: Channel,
    /// Highest sequence already sent on this channel: live deliveries at or below it are skipped.
    sent_up_to: u64,
    /// When the access token that admitted it expires (unix seconds); `None` for public channels.
    expires_at: Option<u64>,
    /// The user of that token (an `authenticate` renews only that user's subscriptions).
    user_id: Option<String>,
    /// The subscription's place in its chat room (`chat:` channels only); boxed, so the
    /// subscriptions of other channels (most of them) do not carry its room.
    chat: Option<Box<ChatSeat>>,
    /// What it sees of each event, when a filter or a per-document read rule limits that.
    view: Option<Box<View>>,
}

struct Connection {
    id: String,
    shared: Arc<Shared>,
    sink: Sink,
    /// Live rings keyed by a small subscription number (no string clone per delivery).
    subscriptions: StreamMap<u32, ring::Receiver<Delivery>>,
    /// Typing, presence and revocations of the chat subscriptions, keyed like `subscriptions`.
    chat_streams: StreamMap<u32, ring::Receiver<ChatDelivery>>,
    typing_limiter: Limiter,
    subs: HashMap<u32, Sub>,
    by_name: HashMap<String, u32>,
    next_sub: u32,
    last_heard: Instant,
    /// Pages of the `since` replays in progress, keyed like `subscriptions`.
    replays: StreamMap<u32, BoxStream<'static, ReplayItem>>,
    /// The live rings (and reader tasks) of the subscriptions still replaying.
    replaying: HashMap<u32, Replaying>,
    /// Fires at the earliest token expiry among the subscriptions (`next_expiry`).
    expiry: std::pin::Pin<Box<tokio::time::Sleep>>,
    next_expiry: Option<u64>,
}

/// A subscription whose `since` replay is still being written.
struct Replaying {
    /// Joined before the replay started; polled once the replay is done (taken then).
    live: Option<ring::Receiver<Delivery>>,
    /// What live delivery covers (everything after it): the replay's target.
    after: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Replaying {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Live frames gathered for one write, with their commit times.
#[derive(Default)]
struct DeliveryBatch {
    frames: Vec<Message>,
    committed_at: Vec<Option<std::time::SystemTime>>,
    /// Commit times of the `chat.message` events among them.
    chat_committed_at: Vec<std::time::SystemTime>,
    /// Chat subscriptions whose member was removed: they end once the batch is written, and
    /// nothing of theirs after the removal goes into it.
    revoked: Vec<u32>,
}

/// Runs one connection to its end.
///
/// Not an `async fn`: the socket is split before the future is built, so the connection's task
/// does not also keep the unsplit socket (an async fn keeps its arguments for its whole run).
/// `guard` (what counts the connection: its admission permit, the shutdown tracker's token) is
/// dropped when it ends.
pub fn serve<G: Send + 'static>(
    socket: WebSocket,
    shared: Arc<Shared>,
    guard: G,
) -> impl Future<Output = ()> + Send + 'static {
    let (sink, stream) = socket.split();
    run_connection(sink, stream, shared, guard)
}

async fn run_connection<G>(
    sink: Sink,
    mut stream: SplitStream<WebSocket>,
    shared: Arc<Shared>,
    _guard: G,
) {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let mut conn = Connection {
        id,
        shared: shared.clone(),
        sink,
        subscriptions: StreamMap::with_capacity(1), // most connections hold one
        chat_streams: StreamMap::new(),
        typing_limiter: shared.chat.typing_limiter(),
        subs: HashMap::new(),
        by_name: HashMap::new(),
        next_sub: 0,
        last_heard: Instant::now(),
        replays: StreamMap::new(),
        replaying: HashMap::new(),
        expiry: Box::pin(tokio::time::sleep(Duration::ZERO)),
        next_expiry: None,
    };
    shared.metrics.connection_opened();
    let greeted = {
        // Scoped: the frame is not kept in the task while the connection runs.
        let hello = ServerFrame::ConnectionEstablished {
            connection_id: conn.id.clone(),
            protocol: PROTOCOL_VERSION,
        };
        conn.send_frame(&hello).await
    };
    let reason = match greeted {
        Ok(()) => conn.run(&mut stream).await,
        Err(err) => Box::pin(conn.write_failed(err)).await,
    };
    tracing::debug!(connection_id = %conn.id, reason = reason.as_str(), "connection closed");
    let subscribed: Vec<Channel> = conn.subs.into_values().map(|s| s.channel).collect();
    shared.metrics.connection_closed(reason, &subscribed);
}

impl Connection {
    /// Every path but live delivery and pings runs boxed: an idle connection's task then holds
    /// only the state this loop waits in, not the largest of all its paths inline (subscribe,
    /// replay, authenticate…), which made each connection's task ~10 KiB (heaptrack).
    async fn run(&mut self, stream: &mut SplitStream<WebSocket>) -> CloseReason {
        let ping_interval = self.shared.config.ping_interval;
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
        // A child token of its own: waiting on it locks only this connection's node, where
        // every connection polling the process-wide token on each turn of this loop (twice per
        // delivery: registered, then dropped) queued on that token's one mutex. Pinned once.
        let shutdown = self.shared.shutdown.child_token().cancelled_owned();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let outcome = tokio::select! {
                biased;
                _ = &mut shutdown => {
                    Box::pin(self.close(close_code::GOING_AWAY, "server shutting down", CLOSE_WINDOW)).await;
                    return CloseReason::Shutdown;
                }
                incoming = stream.next() => {
                    self.last_heard = Instant::now();
                    match incoming {
                        None => return CloseReason::ClientClosed,
                        Some(Err(err)) => return Box::pin(self.read_failed(err)).await,
                        Some(Ok(Message::Close(_))) => {
                            // Let the library's close reply go out, then end.
                            let _ = tokio::time::timeout(CLOSE_WINDOW, self.sink.flush()).await;
                            return CloseReason::ClientClosed;
                        }
                        Some(Ok(Message::Text(text))) => Box::pin(self.on_client_text(&text)).await,
                        Some(Ok(Message::Binary(_))) => {
                            let frame = ServerFrame::error(error_code::BAD_FRAME, "binary frames are not supported; send JSON text", None);
                            self.send_frame(&frame).await
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                    }
                }
                Some((channel, item)) = self.subscriptions.next(), if !self.subscriptions.is_empty() => {
                    match self.on_delivery(channel, item).await {
                        Ok(Some(reason)) => return reason,
                        Ok(None) => Ok(()),
                        Err(err) => Err(err),
                    }
                }
                Some((sub, item)) = self.chat_streams.next(), if !self.chat_streams.is_empty() => {
                    Box::pin(self.on_chat_delivery(sub, item)).await
                }
                Some((sub, item)) = self.replays.next(), if !self.replays.is_empty() => {
                    Box::pin(self.on_replay(sub, item)).await
                }
                _ = &mut self.expiry, if self.next_expiry.is_some() => {
                    Box::pin(self.end_expired_subscriptions()).await
                }
                _ = ping.tick() => {
                    if let Err(err) = Box::pin(self.end_expired_subscriptions()).await {
                        return Box::pin(self.write_failed(err)).await;
                    }
                    if self.last_heard.elapsed() > ping_interval * 3 {
                        Box::pin(self.close(close_code::IDLE_TIMEOUT, "no frame received within the idle timeout", CLOSE_WINDOW)).await;
                        return CloseReason::IdleTimeout;
                    }
                    self.write_with_timeout(vec![Message::Ping(bytes::Bytes::new())]).await
                }
            };
            if let Err(err) = outcome {
                return Box::pin(self.write_failed(err)).await;
            }
        }
    }

    /// A write failed: a client that stopped taking frames for the send timeout is a slow
    /// consumer and gets close 4008 if it still can (a client that reads nothing at all cannot
    /// receive any frame, so it only sees the connection end); a vanished one just ends.
    async fn write_failed(&mut self, err: WriteError) -> CloseReason {
        match err {
            WriteError::Closed => CloseReason::ClientClosed,
            WriteError::TimedOut => {
                self.shared.metrics.slow_consumer_disconnects.inc();
                self.close_slow_consumer().await;
                CloseReason::SlowConsumer
            }
        }
    }

    async fn close_slow_consumer(&mut self) {
        let window = self.shared.config.send_timeout;
        self.close(
            close_code::SLOW_CONSUMER,
            "client fell too far behind; resume with since",
            window,
        )
        .await;
    }

    /// Reading failed: answer a broken limit or protocol with its close code, then end.
    async fn read_failed(&mut self, err: axum::Error) -> CloseReason {
        let inner = err.into_inner();
        let close = match inner.downcast_ref::<tungstenite::Error>() {
            Some(tungstenite::Error::Capacity(_)) => {
                Some((close_code::MESSAGE_TOO_BIG, "message exceeds the size limit"))
            }
            Some(tungstenite::Error::Utf8(_)) => {
                Some((close_code::INVALID_PAYLOAD, "text frame is not valid UTF-8"))
            }
            Some(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            )) => None,
            Some(tungstenite::Error::Protocol(_)) => {
                Some((close_code::PROTOCOL_ERROR, "websocket protocol violation"))
            }
            _ => None,
        };
        tracing::debug!(connection_id = %self.id, err = %inner, "read failed");
        match close {
            Some((code, reason)) => {
                self.close(code, reason, CLOSE_WINDOW).await;
                // The rest of the offending message is still unread in the kernel; closing now
                // would send a TCP reset that can destroy our close frame before the client
                // reads it. Reading on is no option (it would buffer the oversized message), so
                // linger briefly: the client gets the close frame first.
                tokio::time::sleep(CLOSE_LINGER).await;
                CloseReason::ProtocolError
            }
            None => CloseReason::ClientClosed,
        }
    }

    /// Writes one delivery plus any others already waiting (one flush for the batch); returns
    /// the reason to end the connection, if any.
    async fn on_delivery(
        &mut self,
        sub: u32,
        item: Result<Delivery, Lagged>,
    ) -> Result<Option<CloseReason>, WriteError> {
        let mut batch = DeliveryBatch::default();
        let mut lagged = self.take_delivery(sub, item, &mut batch);
        if !lagged {
            // Everything else this ring has ready, under one lock.
            let mut ready = Vec::new();
            let room = WRITE_BATCH.saturating_sub(batch.frames.len());
            let drained = self
                .subscriptions
                .iter_mut()
                .find(|entry| entry.0 == sub)
                .map(|entry| entry.1.try_recv_many(&mut ready, room));
            for delivery in ready {
                self.take_delivery(sub, Ok(delivery), &mut batch);
            }
            if let Some(Err(gap)) = drained {
                lagged = self.take_delivery(sub, Err(gap), &mut batch);
            }
        }
        while batch.frames.len() < WRITE_BATCH && !lagged {
            match self.subscriptions.next().now_or_never() {
                Some(Some((sub, item))) => lagged = self.take_delivery(sub, item, &mut batch),
                _ => break,
            }
        }
        if lagged {
            // The frames in `batch` are older than the gap: send them, then say why we stop,
            // so the client's last seq per channel is a correct resume point.
            if !batch.frames.is_empty() {
                Box::pin(self.write_batch(batch)).await?;
            }
            self.shared.metrics.slow_consumer_disconnects.inc();
            Box::pin(self.close_slow_consumer()).await;
            return Ok(Some(CloseReason::SlowConsumer));
        }
        let revoked = std::mem::take(&mut batch.revoked);
        if !batch.frames.is_empty() {
            self.write_batch(batch).await?;
        }
        for sub in revoked {
            Box::pin(self.end_revoked(sub)).await?;
        }
        Ok(None)
    }

    /// Writes live deliveries, recording their lag once written (or counting them dropped).
    async fn write_batch(&mut self, batch: DeliveryBatch) -> Result<(), WriteError> {
        let count = batch.frames.len() as u64;
        match self.write_with_timeout(batch.frames).await {
            Ok(()) => {
                self.shared.metrics.delivered(&batch.committed_at);
                self.shared.chat.metrics.delivered(&batch.chat_committed_at);
                Ok(())
            }
            Err(err) => {
                self.shared.metrics.frames_dropped.inc_by(count);
                Err(err)
            }
        }
    }

    /// Adds a delivery to `batch` unless the client already has it; true if the ring lagged.
    fn take_delivery(
        &mut self,
        sub: u32,
        item: Result<Delivery, Lagged>,
        batch: &mut DeliveryBatch,
    ) -> bool {
        match item {
            Ok(delivery) => {
                if batch.revoked.contains(&sub) {
                    return false; // after the removal: not for this user any more
                }
                if let Some(revoked) = &delivery.revoke {
                    let seat = self.subs.get(&sub).and_then(|s| s.chat.as_ref());
                    if seat.is_some_and(|seat| seat.user_id() == &**revoked) {
                        batch.revoked.push(sub);
                    }
                    return false;
                }
                if let Some(sub) = self.subs.get_mut(&sub)
                    && delivery.seq > sub.sent_up_to
                {
                    sub.sent_up_to = delivery.seq;
                    // Outside the subscription's view: nothing to send.
                    let Some(frame) = delivery.frame_for(sub.view.as_deref()) else {
                        return false;
                    };
                    if delivery.chat_message
                        && let Some(at) = delivery.committed_at
                    {
                        batch.chat_committed_at.push(at);
                    }
                    batch.frames.push(Message::Text(frame));
                    batch.committed_at.push(delivery.committed_at);
                }
                false
            }
            Err(Lagged(skipped)) => {
                self.shared.metrics.frames_dropped.inc_by(skipped);
                true
            }
        }
    }

    async fn on_client_text(&mut self, text: &str) -> Result<(), WriteError> {
        let frame = match serde_json::from_str::<ClientFrame>(text) {
            Ok(frame) => frame,
            Err(err) => {
                let message = truncate(format!("unreadable frame: {err}"));
                return self
                    .send_frame(&ServerFrame::error(error_code::BAD_FRAME, message, None))
                    .await;
            }
        };
        match frame {
            ClientFrame::Ping {} => self.send_frame(&ServerFrame::Pong).await,
            ClientFrame::GetStatus {} => {
                let status = self.status();
                self.send_frame(&ServerFrame::Status(status)).await
            }
            ClientFrame::Unsubscribe { channel } => {
                if let Some(&sub) = self.by_name.get(&channel) {
                    self.remove_sub(sub);
                    self.send_frame(&ServerFrame::Unsubscribed { channel, reason: None }).await
                } else {
                    let channel = truncate(channel);
                    let message = format!("not subscribed to '{channel}'");
                    self.send_frame(&ServerFrame::error(
                        error_code::NOT_SUBSCRIBED,
                        message,
                        Some(&channel),
                    ))
                    .await
                }
            }
            ClientFrame::Subscribe { channel, since, token, filter } => {
                self.subscribe(channel, since, token, filter).await
            }
            ClientFrame::Authenticate { token } => self.authenticate(&token).await,
            ClientFrame::Typing { channel } => {
                let sub = match self.chat_sub(&channel) {
                    Ok(sub) => sub,
                    Err(refusal) => return self.send_frame(&refusal).await,
                };
                if !self.typing_limiter.allow(Instant::now()) {
                    self.shared.chat.metrics.typing_rate_limited();
                    let message = "too many typing frames; send one every few seconds while typing";
                    let frame =
                        ServerFrame::error(error_code::RATE_LIMITED, message, Some(&channel));
                    return self.send_frame(&frame).await;
                }
                if let Some(seat) = self.subs.get_mut(&sub).and_then(|s| s.chat.as_mut()) {
                    seat.typing();
                }
                Ok(())
            }
            ClientFrame::Presence { channel } => {
                let sub = match self.chat_sub(&channel) {
                    Ok(sub) => sub,
                    Err(refusal) => return self.send_frame(&refusal).await,
                };
                let room = self
                    .subs
                    .get(&sub)
                    .and_then(|s| s.chat.as_ref())
                    .map(|seat| seat.room_id().to_owned());
                let users = room.map(|room| self.shared.chat.presence(&room)).unwrap_or_default();
                self.send_frame(&ServerFrame::Presence { channel, users }).await
            }
        }
    }

    /// The subscription behind a `typing` or `presence` frame, or the error frame to answer.
    fn chat_sub(&self, channel: &str) -> Result<u32, Box<ServerFrame>> {
        let shown = truncate(channel.to_owned());
        let Some(&sub) = self.by_name.get(channel) else {
            let message = format!("not subscribed to '{shown}'");
            return Err(Box::new(ServerFrame::error(
                error_code::NOT_SUBSCRIBED,
                message,
                Some(&shown),
            )));
        };
        if self.subs.get(&sub).is_none_or(|s| s.chat.is_none()) {
            let message = "typing and presence are for chat:<room_id> channels only";
            return Err(Box::new(ServerFrame::error(
                error_code::BAD_CHANNEL,
                message,
                Some(&shown),
            )));
        }
        Ok(sub)
    }

    /// Ends subscription `sub` on this side (no frame sent).
    fn remove_sub(&mut self, sub: u32) -> Option<Sub> {
        self.subscriptions.remove(&sub);
        self.chat_streams.remove(&sub);
        self.replays.remove(&sub);
        self.replaying.remove(&sub);
        let removed = self.subs.remove(&sub)?;
        self.by_name.remove(&removed.channel.name());
        self.shared.metrics.subscription_removed(&removed.channel);
        self.arm_expiry();
        Some(removed)
    }

    /// Sets the expiry timer to the earliest token expiry of the subscriptions (or disarms it).
    fn arm_expiry(&mut self) {
        self.next_expiry = self.subs.values().filter_map(|s| s.expires_at).min();
        if let Some(exp) = self.next_expiry {
            let at = std::time::UNIX_EPOCH + Duration::from_secs(exp);
            let wait = at.duration_since(std::time::SystemTime::now()).unwrap_or_default();
            self.expiry.as_mut().reset(tokio::time::Instant::now() + wait);
        }
    }

    /// A page of a replay (written at once: the client's pace sets the replay's), its end (the
    /// live ring takes over), or its failure (the subscription ends, saying where to resume).
    async fn on_replay(&mut self, sub: u32, item: ReplayItem) -> Result<(), WriteError> {
        match item {
            ReplayItem::Page(frames) => {
                let Some(state) = self.subs.get_mut(&sub) else { return Ok(()) };
                let mut messages = Vec::with_capacity(frames.len());
                for delivery in frames {
                    if delivery.seq > state.sent_up_to {
                        state.sent_up_to = delivery.seq;
                        if let Some(frame) = delivery.frame_for(state.view.as_deref()) {
                            messages.push(Message::Text(frame));
                        }
                    }
                }
                let count = messages.len() as u64;
                self.write_with_timeout(messages).await?;
                self.shared.metrics.frames_sent.inc_by(count);
                Ok(())
            }
            ReplayItem::Done => {
                self.replays.remove(&sub);
                if let Some(mut replaying) = self.replaying.remove(&sub)
                    && let Some(state) = self.subs.get_mut(&sub)
                    && let Some(live) = replaying.live.take()
                {
                    state.sent_up_to = state.sent_up_to.max(replaying.after);
                    self.subscriptions.insert(sub, live);
                    self.shared.metrics.replays_served.inc();
                }
                Ok(())
            }
            ReplayItem::Failed(reason) => {
                let Some(removed) = self.remove_sub(sub) else { return Ok(()) };
                let name = removed.channel.name();
                let message = truncate(format!(
                    "replay failed: {reason}; subscribe again with since={}",
                    removed.sent_up_to
                ));
                self.send_frame(&ServerFrame::error(
                    error_code::REPLAY_FAILED,
                    message,
                    Some(&name),
                ))
                .await?;
                let reason = Some(unsubscribe_reason::REPLAY_FAILED.to_owned());
                self.send_frame(&ServerFrame::Unsubscribed { channel: name, reason }).await
            }
        }
    }

    /// `authenticate {token}`: the token-admitted subscriptions of the token's user that it
    /// admits (checked as a subscribe would) run on until its `exp`.
    async fn authenticate(&mut self, token: &str) -> Result<(), WriteError> {
        let claims = match self.shared.access.verify(token) {
            Ok(claims) => claims,
            Err(err) => {
                self.shared.metrics.unauthorized_subscribes.inc();
                return self
                    .send_frame(&ServerFrame::error(err.code(), err.to_string(), None))
                    .await;
            }
        };
        let mut channels = Vec::new();
        for sub in self.subs.values_mut() {
            if sub.expires_at.is_none() || sub.user_id.as_deref() != Some(claims.sub.as_str()) {
                continue;
            }
            if let Ok(Some(admitted)) = self.shared.access.admit(&sub.channel, Some(token))
                && admitted.sub == claims.sub
            {
                sub.expires_at = Some(admitted.exp);
                channels.push(sub.channel.name());
            }
        }
        channels.sort();
        self.arm_expiry();
        self.send_frame(&ServerFrame::Authenticated { exp: claims.exp, channels }).await
    }

    /// A typing or presence frame for chat subscription `sub`.
    async fn on_chat_delivery(
        &mut self,
        sub: u32,
        item: Result<ChatDelivery, Lagged>,
    ) -> Result<(), WriteError> {
        let Some(seat) = self.subs.get(&sub).and_then(|s| s.chat.as_ref()) else { return Ok(()) };
        match item {
            Ok(ChatDelivery { frame, except }) => {
                if except.as_deref() == Some(seat.user_id()) {
                    return Ok(());
                }
                self.write_with_timeout(vec![Message::Text(frame)]).await
            }
            // Ephemeral frames a slow reader missed are not worth a disconnect.
            Err(Lagged(_)) => Ok(()),
        }
    }

    /// The member was removed from the room (their last event, the removal, is written): ends
    /// the subscription with `membership_revoked`.
    async fn end_revoked(&mut self, sub: u32) -> Result<(), WriteError> {
        let Some(removed) = self.remove_sub(sub) else { return Ok(()) };
        self.shared.chat.metrics.revocations.inc();
        let frame = ServerFrame::Unsubscribed {
            channel: removed.channel.name(),
            reason: Some(unsubscribe_reason::MEMBERSHIP_REVOKED.to_owned()),
        };
        self.send_frame(&frame).await
    }

    async fn subscribe(
        &mut self,
        name: String,
        since: Option<u64>,
        token: Option<String>,
        filter: Option<serde_json::Value>,
    ) -> Result<(), WriteError> {
        let channel = match Channel::parse(&name) {
            Ok(channel) => channel,
            Err(err) => {
                // The refused name is echoed (cut short) so the client can match the error.
                let shown = truncate(name);
                return self
                    .send_frame(&ServerFrame::error(
                        error_code::BAD_CHANNEL,
                        truncate(err.to_string()),
                        Some(&shown),
                    ))
                    .await;
            }
        };
        let name = channel.name();
        let admitted = self.shared.access.admit(&channel, token.as_deref()).and_then(|claims| {
            let view = self.shared.access.view(&channel, claims.as_ref(), filter.as_ref())?;
            Ok((claims, view))
        });
        let (claims, view) = match admitted {
            Ok(admitted) => admitted,
            Err(err) => {
                if err.field().is_none() {
                    self.shared.metrics.unauthorized_subscribes.inc();
                }
                let frame = ServerFrame::Error {
                    code: err.code().to_owned(),
                    message: truncate(err.to_string()),
                    channel: Some(name),
                    field: err.field().map(|field| truncate(field.to_owned())),
                };
                return self.send_frame(&frame).await;
            }
        };
        let expires_at = claims.as_ref().map(|c| c.exp);
        let user_id = claims.as_ref().map(|c| c.sub.clone());
        let already = self.by_name.get(&name).copied();
        if already.is_none() && self.subs.len() >= self.shared.config.max_subscriptions {
            let message = format!(
                "at most {} subscriptions per connection",
                self.shared.config.max_subscriptions
            );
            return self
                .send_frame(&ServerFrame::error(
                    error_code::TOO_MANY_SUBSCRIPTIONS,
                    message,
                    Some(&name),
                ))
                .await;
        }
        // A chat room also needs membership (asked of the api unless cached here).
        let mut chat = None;
        if let (Some(room_id), Some(claims)) = (channel.chat_room(), claims.as_ref()) {
            match self.shared.chat.admit(room_id, claims).await {
                Ok(admitted) => chat = Some(admitted),
                Err(refusal) => {
                    let (code, message) = match refusal {
                        Refusal::NotMember => {
                            (error_code::FORBIDDEN, "not a member of this room (or no such room)")
                        }
                        Refusal::Unavailable => {
                            (error_code::UNAVAILABLE, "room membership could not be checked; retry")
                        }
                    };
                    return self.send_frame(&ServerFrame::error(code, message, Some(&name))).await;
                }
            }
        }
        // Join live first, then replay up to the point live covers: no gap between the two.
        let live = match self.shared.hub.subscribe(&channel) {
            Ok(live) => live,
            Err(TooManyChannels(max)) => {
                self.shared.metrics.refused(Limit::Channels);
                let message = format!("this broadcaster keeps at most {max} channels; retry later");
                let frame = ServerFrame::error(error_code::TOO_MANY_CHANNELS, message, Some(&name));
                return self.send_frame(&frame).await;
            }
        };
        // A removal fanned out before the ring was joined cannot revoke through it; the chat
        // state recorded it first, so it shows here.
        if let Some((seat, _)) = &chat
            && !seat.stands()
        {
            let message = "not a member of this room (or no such room)";
            let frame = ServerFrame::error(error_code::FORBIDDEN, message, Some(&name));
            return self.send_frame(&frame).await;
        }
        let after = live.after_seq;
        let mut recovered = None;
        let mut reader = None;
        // Live deliveries at or below `floor` are skipped: the client has them already.
        let mut floor = since.unwrap_or(after);
        if let Some(since) = since {
            if since < after {
                let permit = match self.replay_slot(already) {
                    Ok(permit) => permit,
                    Err(message) => {
                        self.shared.metrics.refused(Limit::Replays);
                        let code = error_code::TOO_MANY_REPLAYS;
                        return self
                            .send_frame(&ServerFrame::error(code, message, Some(&name)))
                            .await;
                    }
                };
                let max_events = self.shared.config.max_replay_events;
                let outcome = tokio::time::timeout(
                    replay::REPLAY_TIMEOUT,
                    replay::prepare(&self.shared.js, &channel, since, after, max_events),
                )
                .await;
                let message = match outcome {
                    Ok(Ok(prepared)) => {
                        recovered = Some(prepared.recovered);
                        match prepared.reader {
                            Some(prepared) => reader = Some((prepared, permit)),
                            None => {
                                floor = after; // nothing of the channel up to `after`
                                self.shared.metrics.replays_served.inc();
                            }
                        }
                        None
                    }
                    Ok(Err(err)) => Some(truncate(format!("replay failed: {err}"))),
                    Err(_) => Some("replay timed out; retry".to_owned()),
                };
                if let Some(message) = message {
                    let frame = ServerFrame::error(error_code::REPLAY_FAILED, message, Some(&name));
                    return self.send_frame(&frame).await;
                }
            } else {
                recovered = Some(true);
            }
        }
        // A repeated subscribe replaces the old ring (and its position, and any replay still
        // running) with the new one.
        let sub = match already {
            Some(sub) => {
                self.replays.remove(&sub);
                self.replaying.remove(&sub);
                sub
            }
            None => {
                self.shared.metrics.subscription_added(&channel);
                self.next_sub += 1;
                self.by_name.insert(name.clone(), self.next_sub);
                self.next_sub
            }
        };
        match reader {
            None => {
                self.subscriptions.insert(sub, live.receiver);
            }
            Some((reader, permit)) => {
                // The ring waits (buffering) until the replay is written.
                self.subscriptions.remove(&sub);
                let (pages, queue) = replay::queue();
                let task = tokio::spawn(async move {
                    reader.run(pages).await;
                    drop(permit);
                });
                let ended = futures::stream::once(async {
                    ReplayItem::Failed("the replay stopped unexpectedly".to_owned())
                });
                let stream = tokio_stream::wrappers::ReceiverStream::new(queue).chain(ended);
                self.replays.insert(sub, stream.boxed());
                let replaying = Replaying { live: Some(live.receiver), after, task };
                self.replaying.insert(sub, replaying);
            }
        }
        let seat = chat.map(|(seat, receiver)| {
            self.chat_streams.insert(sub, receiver);
            seat
        });
        if seat.is_none() {
            self.chat_streams.remove(&sub);
        }
        // A replaced subscription's seat is dropped after the new one joined: no leave shows.
        let state = Sub {
            channel,
            sent_up_to: floor,
            expires_at,
            user_id,
            chat: seat.map(Box::new),
            view: view.map(Box::new),
        };
        self.subs.insert(sub, state);
        self.arm_expiry();
        let position = since.unwrap_or(after);
        self.send_frame(&ServerFrame::Subscribed { channel: name, seq: position, recovered }).await
    }

    /// A slot for one more replay, within the connection's and the process's limits
    /// (`replacing`: a subscription whose own replay, if any, the new one replaces); why not
    /// otherwise.
    fn replay_slot(
        &self,
        replacing: Option<u32>,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, String> {
        let per_connection = self.shared.config.max_replays_per_connection;
        let running = self.replaying.keys().filter(|&&id| Some(id) != replacing).count();
        if running >= per_connection {
            return Err(format!(
                "at most {per_connection} since-replays at once per connection; retry when one has finished"
            ));
        }
        self.shared.replays.clone().try_acquire_owned().map_err(|_| {
            format!(
                "this broadcaster runs at most {} since-replays at once; retry shortly",
                self.shared.config.max_replays
            )
        })
    }

    /// Ends subscriptions whose access token has expired, telling the client which (it can
    /// subscribe again, with `since`, using a fresh token).
    async fn end_expired_subscriptions(&mut self) -> Result<(), WriteError> {
        let now = unix_now();
        let expired: Vec<u32> = self
            .subs
            .iter()
            .filter(|(_, s)| s.expires_at.is_some_and(|exp| exp <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let Some(sub) = self.remove_sub(id) else { continue };
            let name = sub.channel.name();
            let message = format!(
                "the access token for '{name}' expired; subscribe again with a fresh token and since={}",
                sub.sent_up_to
            );
            self.send_frame(&ServerFrame::error(error_code::UNAUTHORIZED, message, Some(&name)))
                .await?;
            let reason = Some(unsubscribe_reason::TOKEN_EXPIRED.to_owned());
            self.send_frame(&ServerFrame::Unsubscribed { channel: name, reason }).await?;
        }
        // Also re-arms when the timer fired a little early by the wall clock.
        self.arm_expiry();
        Ok(())
    }

    fn status(&self) -> Status {
        let mut subscriptions: Vec<String> = self.by_name.keys().cloned().collect();
        subscriptions.sort();
        Status {
            connection_id: self.id.clone(),
            node: self.shared.node.clone(),
            subscriptions,
            connections: self.shared.connections.open(),
            last_seq: self.shared.hub.last_seq(),
            uptime_secs: self.shared.started.elapsed().as_secs(),
        }
    }

    async fn send_frame(&mut self, frame: &ServerFrame) -> Result<(), WriteError> {
        self.write_with_timeout(vec![Message::Text(Utf8Bytes::from(frame.to_json()))]).await
    }

    /// Feeds `messages` and flushes once, failing if the client does not take them within
    /// the send timeout (a stalled reader must not pin this task forever).
    ///
    /// The common case, a socket with room, completes on the first poll and arms no timer (a
    /// timer per write per recipient was a measurable share of the fan-out's CPU); only a write
    /// that has to wait gets the timeout.
    async fn write_with_timeout(&mut self, messages: Vec<Message>) -> Result<(), WriteError> {
        let timeout = self.shared.config.send_timeout;
        let sink = &mut self.sink;
        let write = async move {
            for message in messages {
                sink.feed(message).await?;
            }
            sink.flush().await
        };
        let mut write = std::pin::pin!(write);
        let outcome = match write.as_mut().now_or_never() {
            Some(done) => Ok(done),
            // Boxed: the timer lives only while a write waits, not in every idle connection.
            None => Box::pin(tokio::time::timeout(timeout, write)).await,
        };
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(WriteError::Closed),
            Err(_) => Err(WriteError::TimedOut),
        }
    }

    /// Sends a close frame, giving it `window` to go out (frames still queued for the client go
    /// first); the socket is dropped after that either way.
    async fn close(&mut self, code: u16, reason: &'static str, window: Duration) {
        let frame =
            Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }));
        let _ = tokio::time::timeout(window, self.sink.send(frame)).await;
    }
}

/// Cuts an error message or echoed name to [`MAX_ERROR_MESSAGE`] bytes on a character boundary.
fn truncate(mut text: String) -> String {
    if text.len() > MAX_ERROR_MESSAGE {
        let cut =
            (0..=MAX_ERROR_MESSAGE - 1).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let cut = truncate("é".repeat(1000));
        assert!(cut.len() <= MAX_ERROR_MESSAGE + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short".into()), "short");
    }
}
