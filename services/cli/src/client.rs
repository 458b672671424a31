//! A protocol-v1 WebSocket client: connect, subscribe (optionally from a sequence), read typed
//! frames. [`ResumingSubscriber`] adds reconnects with backoff that resume from the last sequence
//! seen per channel, across any of several broadcaster URLs.

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use courier_core::{
    backoff::Backoff,
    protocol::{ClientFrame, ServerFrame},
};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: tokio_tungstenite::tungstenite::Error },
    #[error("websocket error: {0}")]
    Socket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("connection closed{}", .code.map(|c| format!(" (code {c}: {})", .reason)).unwrap_or_default())]
    Closed { code: Option<u16>, reason: String },
    #[error("unexpected frame from server: {0}")]
    Unexpected(String),
    #[error("server refused: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("timed out waiting for the server")]
    Timeout,
    #[error("nothing heard from the server (not even a ping) for {0:?}")]
    Silent(Duration),
}

pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Frames read while waiting for something else (e.g. events during a subscribe).
    pending: VecDeque<ServerFrame>,
    pub connection_id: String,
    pub url: String,
    /// When set, a read fails with [`ClientError::Silent`] if the server sends nothing at all
    /// (the broadcaster pings idle connections, so silence means a dead peer or network).
    idle_limit: Option<Duration>,
}

impl WsClient {
    /// Connects and reads the `connection_established` greeting.
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|source| ClientError::Connect { url: url.to_owned(), source })?;
        Self::greeted(socket, url).await
    }

    /// Connects over an already connected TCP stream (e.g. one with tuned socket options).
    pub async fn connect_over(stream: TcpStream, url: &str) -> Result<Self, ClientError> {
        let (socket, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .map_err(|source| ClientError::Connect { url: url.to_owned(), source })?;
        Self::greeted(socket, url).await
    }

    async fn greeted(
        socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
        url: &str,
    ) -> Result<Self, ClientError> {
        let mut client = WsClient {
            socket,
            pending: VecDeque::new(),
            connection_id: String::new(),
            url: url.to_owned(),
            idle_limit: None,
        };
        match client.next_frame_within(Duration::from_secs(10)).await? {
            ServerFrame::ConnectionEstablished { connection_id, .. } => {
                client.connection_id = connection_id
            }
            other => return Err(ClientError::Unexpected(format!("{other:?}"))),
        }
        Ok(client)
    }

    /// Fail reads after `limit` without any frame from the server (see `idle_limit`).
    pub fn set_idle_limit(&mut self, limit: Option<Duration>) {
        self.idle_limit = limit;
    }

    pub async fn send(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        let text = serde_json::to_string(frame).expect("client frames serialize");
        self.socket.send(Message::text(text)).await?;
        Ok(())
    }

    /// Sends raw text (tests of malformed input).
    pub async fn send_raw(&mut self, message: Message) -> Result<(), ClientError> {
        self.socket.send(message).await?;
        Ok(())
    }

    /// Subscribes and waits for `subscribed`; returns `(seq, recovered)`. Frames of other
    /// channels that arrive meanwhile are kept, in order, for the next reads.
    pub async fn subscribe(
        &mut self,
        channel: &str,
        since: Option<u64>,
        token: Option<String>,
    ) -> Result<(u64, Option<bool>), ClientError> {
        self.subscribe_filtered(channel, since, token, None).await
    }

    /// [`WsClient::subscribe`] with a `filter` (docs/protocol.md, "Filtered subscriptions").
    pub async fn subscribe_filtered(
        &mut self,
        channel: &str,
        since: Option<u64>,
        token: Option<String>,
        filter: Option<serde_json::Value>,
    ) -> Result<(u64, Option<bool>), ClientError> {
        let channel_name = channel.to_owned();
        self.send(&ClientFrame::Subscribe { channel: channel_name, since, token, filter }).await?;
        let mut early = Vec::new();
        let outcome = loop {
            let frame = match tokio::time::timeout(Duration::from_secs(30), self.read_frame()).await
            {
                Ok(Ok(frame)) => frame,
                Ok(Err(err)) => break Err(err),
                Err(_) => break Err(ClientError::Timeout),
            };
            match frame {
                ServerFrame::Subscribed { channel: c, seq, recovered } if c == channel => {
                    break Ok((seq, recovered));
                }
                ServerFrame::Error { code, message, channel: Some(c), .. } if c == channel => {
                    break Err(ClientError::Refused { code, message });
                }
                other => early.push(other),
            }
        };
        self.pending.extend(early);
        outcome
    }

    /// The next protocol frame (WebSocket pings are answered by the library and skipped).
    pub async fn next_frame(&mut self) -> Result<ServerFrame, ClientError> {
        match self.pending.pop_front() {
            Some(frame) => Ok(frame),
            None => self.read_frame().await,
        }
    }

    async fn read_frame(&mut self) -> Result<ServerFrame, ClientError> {
        loop {
            let next = match self.idle_limit {
                Some(limit) => tokio::time::timeout(limit, self.socket.next())
                    .await
                    .map_err(|_| ClientError::Silent(limit))?,
                None => self.socket.next().await,
            };
            let message =
                next.ok_or(ClientError::Closed { code: None, reason: String::new() })??;
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(&text)
                        .map_err(|err| ClientError::Unexpected(format!("{err}: {text}")));
                }
                Message::Close(frame) => {
                    return Err(ClientError::Closed {
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    });
                }
                _ => continue,
            }
        }
    }

    pub async fn next_frame_within(
        &mut self,
        timeout: Duration,
    ) -> Result<ServerFrame, ClientError> {
        tokio::time::timeout(timeout, self.next_frame()).await.map_err(|_| ClientError::Timeout)?
    }

    /// Reads for `period`, keeping every frame for the next reads (lets the server go on
    /// writing, e.g. a replay, while the caller waits to retry something).
    pub async fn buffer_for(&mut self, period: Duration) -> Result<(), ClientError> {
        let until = tokio::time::Instant::now() + period;
        loop {
            match tokio::time::timeout_at(until, self.read_frame()).await {
                Ok(frame) => self.pending.push_back(frame?),
                Err(_) => return Ok(()),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// One event as a subscriber sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub channel: String,
    pub seq: u64,
    /// On a filtered or rule-checked subscription: how the document relates to it.
    pub view: Option<courier_core::protocol::ViewChange>,
    pub event: courier_core::Event,
}

/// Something worth telling the user about while tailing.
#[derive(Debug)]
pub enum Notice {
    Connected { url: String, connection_id: String },
    Subscribed { channel: String, seq: u64, recovered: Option<bool> },
    Disconnected { error: String, retry_in: Duration },
    ServerError { code: String, message: String },
}

/// Subscribes to channels and keeps them subscribed: after any disconnect it reconnects (round
/// robin over `urls`, jittered exponential [`Backoff`]) and resumes each channel from its last
/// sequence.
pub struct ResumingSubscriber {
    urls: Vec<String>,
    channels: Vec<String>,
    token: Option<String>,
    /// The filter every channel is subscribed with, if any.
    filter: Option<serde_json::Value>,
    last_seq: HashMap<String, u64>,
    client: Option<WsClient>,
    next_url: usize,
    backoff: Backoff,
    idle_limit: Duration,
    connects: u64,
    duplicates_dropped: u64,
}

/// Default for [`ResumingSubscriber::with_idle_limit`]: three of the broadcaster's default
/// ping intervals (20 s), so a silently dead connection is replaced within a minute.
pub const DEFAULT_IDLE_LIMIT: Duration = Duration::from_secs(60);

/// The longest wait between reconnect attempts (they start at [`Backoff::MIN`]).
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A `since` subscribe refused with `too_many_replays` is asked again this many times, waiting
/// up to this long in between, before the connection counts as failed.
const REPLAY_RETRIES: u32 = 20;
const REPLAY_RETRY_MAX: Duration = Duration::from_secs(2);

impl ResumingSubscriber {
    /// `since` applies to every channel (None: start live).
    pub fn new(
        urls: Vec<String>,
        channels: Vec<String>,
        since: Option<u64>,
        token: Option<String>,
    ) -> Self {
        let last_seq =
            since.map(|s| channels.iter().map(|c| (c.clone(), s)).collect()).unwrap_or_default();
        ResumingSubscriber {
            urls,
            channels,
            token,
            filter: None,
            last_seq,
            client: None,
            next_url: 0,
            backoff: Backoff::new(MAX_BACKOFF),
            idle_limit: DEFAULT_IDLE_LIMIT,
            connects: 0,
            duplicates_dropped: 0,
        }
    }

    /// Subscribe every channel with this filter (and resume it with the same).
    pub fn with_filter(mut self, filter: Option<serde_json::Value>) -> Self {
        self.filter = filter;
        self
    }

    /// Reconnect when the server has sent nothing (not even a ping) for `limit`.
    pub fn with_idle_limit(mut self, limit: Duration) -> Self {
        self.idle_limit = limit;
        self
    }

    /// How many connections were established so far (1 + reconnects).
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// Event frames the server sent twice (a `seq` at or below the last one handed out) and
    /// this subscriber dropped. The broadcaster's resume never does that; tests assert it.
    pub fn duplicates_dropped(&self) -> u64 {
        self.duplicates_dropped
    }

    /// The URL of the current connection, if connected.
    pub fn connected_url(&self) -> Option<&str> {
        self.client.as_ref().map(|c| c.url.as_str())
    }

    /// The last sequence delivered per channel.
    pub fn positions(&self) -> &HashMap<String, u64> {
        &self.last_seq
    }

    /// Connects and subscribes now (instead of on the first `next_event`), so that events
    /// from this moment on are delivered. One attempt, on the next URL in turn.
    pub async fn connect(&mut self, mut on_notice: impl FnMut(Notice)) -> Result<(), ClientError> {
        if self.client.is_none() {
            self.client = Some(self.connect_and_subscribe(&mut on_notice).await?);
            self.backoff.reset();
        }
        Ok(())
    }

    /// Drops the current connection (the next `next_event` reconnects and resumes).
    pub fn disconnect(&mut self) {
        self.client = None;
    }

    /// The next event; `on_notice` hears about connects, subscriptions and disconnects.
    pub async fn next_event(&mut self, mut on_notice: impl FnMut(Notice)) -> Received {
        loop {
            if self.client.is_none() {
                match self.connect_and_subscribe(&mut on_notice).await {
                    Ok(client) => {
                        self.client = Some(client);
                        self.backoff.reset();
                    }
                    Err(err) => {
                        self.wait_before_retry(err.to_string(), &mut on_notice).await;
                        continue;
                    }
                }
            }
            let client = self.client.as_mut().expect("connected above");
            match client.next_frame().await {
                Ok(ServerFrame::Event { channel, seq, view, event }) => {
                    let last = self.last_seq.entry(channel.clone()).or_insert(0);
                    if seq <= *last {
                        self.duplicates_dropped += 1;
                        continue; // never hand out a duplicate, whatever the server does
                    }
                    *last = seq;
                    return Received { channel, seq, view, event };
                }
                Ok(ServerFrame::Error { code, message, .. }) => {
                    on_notice(Notice::ServerError { code, message })
                }
                Ok(_) => {}
                Err(err) => {
                    self.client = None;
                    self.wait_before_retry(err.to_string(), &mut on_notice).await;
                }
            }
        }
    }

    async fn connect_and_subscribe(
        &mut self,
        on_notice: &mut impl FnMut(Notice),
    ) -> Result<WsClient, ClientError> {
        let url = self.urls[self.next_url % self.urls.len()].clone();
        self.next_url += 1;
        let mut client = WsClient::connect(&url).await?;
        client.set_idle_limit(Some(self.idle_limit));
        self.connects += 1;
        on_notice(Notice::Connected { url, connection_id: client.connection_id.clone() });
        for channel in self.channels.clone() {
            let since = self.last_seq.get(&channel).copied();
            let mut waits = Backoff::new(REPLAY_RETRY_MAX);
            let mut tries = 0;
            let (seq, recovered) = loop {
                let (token, filter) = (self.token.clone(), self.filter.clone());
                match client.subscribe_filtered(&channel, since, token, filter).await {
                    // The connection's earlier replays are still running: read on (they need a
                    // reader to finish), then ask again.
                    Err(ClientError::Refused { code, .. })
                        if code == "too_many_replays" && tries < REPLAY_RETRIES =>
                    {
                        tries += 1;
                        client.buffer_for(waits.advance()).await?;
                    }
                    outcome => break outcome?,
                }
            };
            self.last_seq.entry(channel.clone()).or_insert(seq);
            on_notice(Notice::Subscribed { channel, seq, recovered });
        }
        Ok(client)
    }

    async fn wait_before_retry(&mut self, error: String, on_notice: &mut impl FnMut(Notice)) {
        let retry_in = self.backoff.advance();
        on_notice(Notice::Disconnected { error, retry_in });
        tokio::time::sleep(retry_in).await;
    }
}
