//! One WebSocket connection: the protocol v1 state machine. Reads client frames, manages the
//! connection's subscriptions (live rings, plus replay for `since`), writes event frames in
//! batches, pings idle clients, and cuts off clients that cannot keep up (close 4008).

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use courier_core::{
    channel::Channel,
    protocol::{ClientFrame, PROTOCOL_VERSION, ServerFrame, Status, close_code, error_code},
};
use futures::{FutureExt, SinkExt, StreamExt, stream::SplitSink};
use tokio_stream::{StreamMap, wrappers::BroadcastStream, wrappers::errors::BroadcastStreamRecvError};

use crate::{app::Shared, hub::Delivery, replay};

/// Most frames written before one flush.
const WRITE_BATCH: usize = 64;
/// Most events one `since` replay may send (larger gaps: resubscribe without `since`).
const MAX_REPLAY_EVENTS: usize = 100_000;

type Sink = SplitSink<WebSocket, Message>;

/// Why a connection ended (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    ClientClosed,
    SlowConsumer,
    IdleTimeout,
    Shutdown,
    ProtocolError,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Shutdown => "shutdown",
            CloseReason::ProtocolError => "protocol_error",
        }
    }
}

/// One subscription of a connection.
struct Sub {
    channel: Channel,
    /// Highest sequence already sent on this channel: live deliveries at or below it are skipped.
    sent_up_to: u64,
}

struct Connection {
    id: String,
    shared: Arc<Shared>,
    sink: Sink,
    /// Live rings keyed by a small subscription number (no string clone per delivery).
    subscriptions: StreamMap<u32, BroadcastStream<Delivery>>,
    subs: HashMap<u32, Sub>,
    by_name: HashMap<String, u32>,
    next_sub: u32,
    last_heard: Instant,
}

/// Runs one connection to its end.
pub async fn serve(socket: WebSocket, shared: Arc<Shared>) {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let (sink, mut stream) = socket.split();
    let mut conn = Connection {
        id,
        shared: shared.clone(),
        sink,
        subscriptions: StreamMap::new(),
        subs: HashMap::new(),
        by_name: HashMap::new(),
        next_sub: 0,
        last_heard: Instant::now(),
    };
    shared.metrics.connection_opened();
    let hello = ServerFrame::ConnectionEstablished { connection_id: conn.id.clone(), protocol: PROTOCOL_VERSION };
    let reason = if conn.send_frame(&hello).await.is_err() {
        CloseReason::ClientClosed
    } else {
        conn.run(&mut stream).await
    };
    tracing::debug!(connection_id = %conn.id, reason = reason.as_str(), "connection closed");
    let subscribed: Vec<Channel> = conn.subs.into_values().map(|s| s.channel).collect();
    shared.metrics.connection_closed(reason, &subscribed);
    shared.connections.fetch_sub(1, Ordering::Relaxed);
}

impl Connection {
    async fn run(&mut self, stream: &mut futures::stream::SplitStream<WebSocket>) -> CloseReason {
        let ping_interval = self.shared.config.ping_interval();
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
        let shutdown = self.shared.shutdown.clone();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.close(close_code::GOING_AWAY, "server shutting down").await;
                    return CloseReason::Shutdown;
                }
                incoming = stream.next() => {
                    self.last_heard = Instant::now();
                    match incoming {
                        None | Some(Err(_)) => return CloseReason::ClientClosed,
                        Some(Ok(Message::Close(_))) => return CloseReason::ClientClosed,
                        Some(Ok(Message::Text(text))) => {
                            if self.on_client_text(&text).await.is_err() {
                                return CloseReason::ClientClosed;
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            let frame = ServerFrame::error(error_code::BAD_FRAME, "binary frames are not supported; send JSON text", None);
                            if self.send_frame(&frame).await.is_err() {
                                return CloseReason::ClientClosed;
                            }
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    }
                }
                Some((channel, item)) = self.subscriptions.next(), if !self.subscriptions.is_empty() => {
                    if let Some(reason) = self.on_delivery(channel, item).await {
                        return reason;
                    }
                }
                _ = ping.tick() => {
                    if self.last_heard.elapsed() > ping_interval * 3 {
                        self.close(close_code::IDLE_TIMEOUT, "no frame received within the idle timeout").await;
                        return CloseReason::IdleTimeout;
                    }
                    if self.write_with_timeout(vec![Message::Ping(bytes::Bytes::new())]).await.is_err() {
                        return CloseReason::SlowConsumer;
                    }
                }
            }
        }
    }

    /// Writes one delivery plus any others already waiting (one flush for the batch).
    async fn on_delivery(
        &mut self,
        sub: u32,
        item: Result<Delivery, BroadcastStreamRecvError>,
    ) -> Option<CloseReason> {
        let mut batch = Vec::new();
        let mut lagged = self.take_delivery(sub, item, &mut batch);
        while batch.len() < WRITE_BATCH && !lagged {
            match self.subscriptions.next().now_or_never() {
                Some(Some((sub, item))) => lagged = self.take_delivery(sub, item, &mut batch),
                _ => break,
            }
        }
        if lagged {
            self.shared.metrics.slow_consumer_disconnects.inc();
            self.close(close_code::SLOW_CONSUMER, "client fell too far behind; resume with since").await;
            return Some(CloseReason::SlowConsumer);
        }
        let frames = batch.len() as u64;
        if frames == 0 {
            return None;
        }
        if self.write_with_timeout(batch).await.is_err() {
            self.shared.metrics.slow_consumer_disconnects.inc();
            return Some(CloseReason::SlowConsumer);
        }
        self.shared.metrics.frames_sent.inc_by(frames);
        None
    }

    /// Adds a delivery to `batch` unless the client already has it; true if the ring lagged.
    fn take_delivery(
        &mut self,
        sub: u32,
        item: Result<Delivery, BroadcastStreamRecvError>,
        batch: &mut Vec<Message>,
    ) -> bool {
        match item {
            Ok(delivery) => {
                if let Some(sub) = self.subs.get_mut(&sub)
                    && delivery.seq > sub.sent_up_to
                {
                    sub.sent_up_to = delivery.seq;
                    batch.push(Message::Text(delivery.frame));
                }
                false
            }
            Err(BroadcastStreamRecvError::Lagged(_)) => true,
        }
    }

    async fn on_client_text(&mut self, text: &str) -> Result<(), axum::Error> {
        let frame = match serde_json::from_str::<ClientFrame>(text) {
            Ok(frame) => frame,
            Err(err) => {
                let message = format!("unreadable frame: {err}");
                return self.send_frame(&ServerFrame::error(error_code::BAD_FRAME, message, None)).await;
            }
        };
        match frame {
            ClientFrame::Ping {} => self.send_frame(&ServerFrame::Pong).await,
            ClientFrame::GetStatus {} => {
                let status = self.status();
                self.send_frame(&ServerFrame::Status(status)).await
            }
            ClientFrame::Unsubscribe { channel } => {
                if let Some(sub) = self.by_name.remove(&channel) {
                    self.subscriptions.remove(&sub);
                    if let Some(removed) = self.subs.remove(&sub) {
                        self.shared.metrics.subscription_removed(&removed.channel);
                    }
                    self.send_frame(&ServerFrame::Unsubscribed { channel }).await
                } else {
                    let message = format!("not subscribed to '{channel}'");
                    self.send_frame(&ServerFrame::error(error_code::NOT_SUBSCRIBED, message, Some(&channel))).await
                }
            }
            ClientFrame::Subscribe { channel, since, token: _ } => self.subscribe(channel, since).await,
        }
    }

    async fn subscribe(&mut self, name: String, since: Option<u64>) -> Result<(), axum::Error> {
        let channel = match Channel::parse(&name) {
            Ok(channel) => channel,
            Err(err) => {
                return self.send_frame(&ServerFrame::error(error_code::BAD_CHANNEL, err.to_string(), Some(&name))).await;
            }
        };
        let name = channel.name();
        let already = self.by_name.get(&name).copied();
        if already.is_none() && self.subs.len() >= self.shared.config.max_subscriptions {
            let message = format!("at most {} subscriptions per connection", self.shared.config.max_subscriptions);
            return self.send_frame(&ServerFrame::error(error_code::TOO_MANY_SUBSCRIPTIONS, message, Some(&name))).await;
        }
        // Join live first, then replay up to the point live covers: no gap between the two.
        let live = self.shared.hub.subscribe(&channel);
        let after = live.after_seq;
        let mut recovered = None;
        let mut replayed_frames = Vec::new();
        // Live deliveries at or below `floor` are skipped: the client has them already.
        let mut floor = since.unwrap_or(after);
        if let Some(since) = since {
            if since < after {
                let outcome = tokio::time::timeout(
                    replay::REPLAY_TIMEOUT,
                    replay::replay(&self.shared.js, &channel, since, after, MAX_REPLAY_EVENTS),
                )
                .await;
                match outcome {
                    Ok(Ok(replayed)) => {
                        recovered = Some(replayed.recovered);
                        floor = replayed.last_seq.max(after);
                        replayed_frames = replayed.frames;
                        self.shared.metrics.replays_served.inc();
                    }
                    Ok(Err(err)) => {
                        let message = format!("replay failed: {err}");
                        return self.send_frame(&ServerFrame::error(error_code::REPLAY_FAILED, message, Some(&name))).await;
                    }
                    Err(_) => {
                        let message = "replay timed out; retry".to_owned();
                        return self.send_frame(&ServerFrame::error(error_code::REPLAY_FAILED, message, Some(&name))).await;
                    }
                }
            } else {
                recovered = Some(true);
            }
        }
        // A repeated subscribe replaces the old ring (and its position) with the new one.
        let sub = match already {
            Some(sub) => sub,
            None => {
                self.shared.metrics.subscription_added(&channel);
                self.next_sub += 1;
                self.by_name.insert(name.clone(), self.next_sub);
                self.next_sub
            }
        };
        self.subscriptions.insert(sub, BroadcastStream::new(live.receiver));
        self.subs.insert(sub, Sub { channel, sent_up_to: floor });
        let position = since.unwrap_or(after);
        self.send_frame(&ServerFrame::Subscribed { channel: name, seq: position, recovered }).await?;
        if !replayed_frames.is_empty() {
            let count = replayed_frames.len() as u64;
            for chunk in replayed_frames.chunks(WRITE_BATCH) {
                let messages = chunk.iter().map(|(_, frame)| Message::Text(frame.clone())).collect();
                self.write_with_timeout(messages).await?;
            }
            self.shared.metrics.frames_sent.inc_by(count);
        }
        Ok(())
    }

    fn status(&self) -> Status {
        let mut subscriptions: Vec<String> = self.by_name.keys().cloned().collect();
        subscriptions.sort();
        Status {
            connection_id: self.id.clone(),
            node: self.shared.node.clone(),
            subscriptions,
            connections: self.shared.connections.load(Ordering::Relaxed),
            last_seq: self.shared.hub.last_seq(),
            uptime_secs: self.shared.started.elapsed().as_secs(),
        }
    }

    async fn send_frame(&mut self, frame: &ServerFrame) -> Result<(), axum::Error> {
        self.write_with_timeout(vec![Message::Text(Utf8Bytes::from(frame.to_json()))]).await
    }

    /// Feeds `messages` and flushes once, failing if the client does not take them within
    /// the send timeout (a stalled reader must not pin this task forever).
    async fn write_with_timeout(&mut self, messages: Vec<Message>) -> Result<(), axum::Error> {
        let timeout = self.shared.config.send_timeout();
        let sink = &mut self.sink;
        let write = async move {
            for message in messages {
                sink.feed(message).await?;
            }
            sink.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(result) => result,
            Err(_) => Err(axum::Error::new(std::io::Error::new(std::io::ErrorKind::TimedOut, "send timed out"))),
        }
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }));
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            let _ = self.sink.send(frame).await;
        })
        .await;
    }
}
