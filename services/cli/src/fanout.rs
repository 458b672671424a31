//! `courier bench fanout` and `courier bench connections`: N WebSocket subscribers against the
//! broadcaster (or nats-server's own WebSocket listener, `--target nats`), events published at
//! a set rate, and the figures: deliveries/s, publish→receive latency, lost and duplicated
//! frames, connect time, server CPU per delivery and RSS per connection (from `/proc`).
//!
//! Each event carries a marker `~B<channel>.<index>.<unix µs>~` that subscribers scan for
//! (no JSON parse per frame), so lost, duplicated and late frames are counted exactly, per
//! subscription (a connection may subscribe to several channels, `--subs-per-client`).
//! `--ws` may list several broadcasters: subscriber j connects to URL j mod n. `--procs P`
//! splits the subscribers over P child processes (this binary with `bench fanout --role
//! subscriber`), each on its own source address 127.0.0.(i+1), talking over stdin/stdout;
//! `connections --procs` uses the same children. `--stalled N` adds connections that never
//! read, and reports whether the server cut them off.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::Write as _,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use futures::{SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    sync::watch,
};
use tokio_tungstenite::tungstenite::Message;

use crate::probe::{self, Histogram};

/// Subscribers connecting at once during the ramp.
const CONNECT_CONCURRENCY: usize = 64;
/// How long after the last publish the run waits for frames still in flight (while they come).
const DRAIN_QUIET: Duration = Duration::from_secs(3);
/// Most subscribers per run (a process may hold 20,000 open files here).
const MAX_CLIENTS: usize = 200_000;
/// Most channels one connection subscribes to: the broadcaster's default
/// `COURIER_WS_MAX_SUBSCRIPTIONS`.
const MAX_SUBS_PER_CLIENT: usize = 100;
/// Most stalled connections (`--stalled`); they live in the lead process.
const MAX_STALLED: usize = 10_000;
/// A stalled connection that brings no event for this long once publishing is over (its
/// backlog read) was not cut off by the server.
const STALLED_QUIET: Duration = Duration::from_secs(30);
/// Kernel receive buffer of a stalled connection: small, so what the server cannot send piles
/// up on its side soon, as with a client that stopped reading for good.
const STALLED_RECV_BUFFER: u32 = 4096;
/// How long a subscriber process may stay silent while connecting (it reports progress).
const CHILD_SILENCE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Courier,
    Nats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Runs the whole benchmark (spawning `--procs` subscriber processes if asked).
    Lead,
    /// Internal: a subscriber process driven by a lead over stdin/stdout.
    Subscriber,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Subscribers (WebSocket connections) to open.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Events published per second, round robin over the channels (deliveries/s = rate ×
    /// subscriptions per channel).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// How long to publish (e.g. 10s, 2m).
    #[arg(long, default_value = "10s", value_parser = courier_core::config::seconds_or_duration)]
    pub duration: Duration,
    /// Distinct channels K, 1 to clients × --subs-per-client.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Channels each subscriber listens to, M: subscriber j takes channels (j·M + i) mod K for
    /// i < M (M ≤ K and M ≤ 100, the broadcaster's default COURIER_WS_MAX_SUBSCRIPTIONS).
    #[arg(long, default_value_t = 1)]
    pub subs_per_client: usize,
    /// Approximate size of each event's data in bytes.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    #[arg(long, value_enum, default_value = "courier")]
    pub target: Target,
    /// The collection the events belong to (`--target courier`): `notes` measures a
    /// per-document read rule (with `--token` and `--creator`).
    #[arg(long, default_value = "products", value_parser = collection_name)]
    pub collection: String,
    /// Subscribe with this filter (a JSON object, docs/protocol.md): every subscriber then has
    /// a view, evaluated per event. Events carry a `nombre` field (`{"nombre":{"gte":"~"}}`
    /// matches them all, so deliveries stay comparable).
    #[arg(long, value_parser = filter_text)]
    pub filter: Option<String>,
    /// Access token every subscriber sends (`--help` never shows its value).
    #[arg(long, env = "COURIER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The user id published events record as their creator (`created_by`), so that a
    /// per-document rule (`owner`) admits that user's subscribers.
    #[arg(long)]
    pub creator: Option<String>,
    /// Publish through the api (`POST /api/v1/products`) instead of straight into the EVENTS
    /// stream: the whole write path (one channel, `products`; rate bounded by the store).
    #[arg(long, value_parser = ["api"])]
    pub via: Option<String>,
    /// The broadcaster's WebSocket URL, or several comma separated: subscriber j connects to
    /// URL j mod n (`--target courier`).
    #[arg(long = "ws", env = "COURIER_WS_URL", default_value = "ws://127.0.0.1:8765/ws")]
    pub ws: String,
    /// nats-server's WebSocket URL (`--target nats`; one).
    #[arg(long, default_value = "ws://127.0.0.1:8443")]
    pub nats_ws: String,
    /// NATS URL the events are published to (it may carry credentials: `--help` never shows
    /// its value from the environment).
    #[arg(
        long,
        env = "COURIER_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub nats: String,
    #[arg(long, env = "COURIER_API_URL", default_value = "http://127.0.0.1:8000")]
    pub api: String,
    /// Local server processes to read CPU and RSS of (repeat, or comma separated).
    #[arg(long = "server-pid", value_delimiter = ',')]
    pub server_pids: Vec<String>,
    /// Split the subscribers over this many child processes (source addresses 127.0.0.1, .2,
    /// …; each child gets the whole --ws list and its subscribers' global numbers).
    #[arg(long, default_value_t = 1)]
    pub procs: usize,
    /// Extra connections in the lead process, each subscribed to min(K, 100) channels, that
    /// never read after their subscriptions are confirmed (small receive buffer; not counted in
    /// delivered, lost or latency). After publishing each is read until it ends: reported cut
    /// off when the server closed it (close 4008, or EOF/reset), not when it stays silent 30 s.
    #[arg(long, default_value_t = 0)]
    pub stalled: usize,
    #[arg(long)]
    pub json: bool,
    /// Internal (`--procs`): this process's part.
    #[arg(long, value_enum, default_value = "lead", hide = true)]
    pub role: Role,
    #[arg(long, hide = true)]
    pub run_id: Option<String>,
    #[arg(long, hide = true, default_value_t = 0)]
    pub client_offset: usize,
    #[arg(long, hide = true)]
    pub source_ip: Option<IpAddr>,
    /// Internal: the executable `--procs` children run (default: this one; tests give the
    /// built `courier`).
    #[arg(long, env = "COURIER_BENCH_EXE", hide = true)]
    pub bench_exe: Option<PathBuf>,
}

/// What one process's subscribers saw.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SubscriberTally {
    pub clients: usize,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub failed_clients: usize,
    /// Connections still open when the run ended (before this process closed them).
    #[serde(default)]
    pub still_open: usize,
    /// Connections opened per `--ws` URL (in list order).
    #[serde(default)]
    pub connected_by_ws: Vec<usize>,
    pub latency: Histogram,
    pub connect: Histogram,
    pub ramp_secs: f64,
    /// This process's CPU share of one core while the events flowed.
    pub bench_cpu_share: Option<f64>,
}

impl SubscriberTally {
    fn merge(&mut self, other: &SubscriberTally) {
        self.clients += other.clients;
        self.received += other.received;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.failed_clients += other.failed_clients;
        self.still_open += other.still_open;
        if self.connected_by_ws.len() < other.connected_by_ws.len() {
            self.connected_by_ws.resize(other.connected_by_ws.len(), 0);
        }
        for (mine, theirs) in self.connected_by_ws.iter_mut().zip(&other.connected_by_ws) {
            *mine += theirs;
        }
        self.latency.merge(&other.latency);
        self.connect.merge(&other.connect);
        self.ramp_secs = self.ramp_secs.max(other.ramp_secs);
        self.bench_cpu_share = match (self.bench_cpu_share, other.bench_cpu_share) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FanoutReport {
    pub target: Target,
    pub via: &'static str,
    pub clients: usize,
    pub channels: usize,
    pub subs_per_client: usize,
    /// clients × subs_per_client.
    pub subscriptions: usize,
    pub procs: usize,
    /// Subscribers connected per WebSocket URL (`--ws` order).
    pub connected_by_ws: Vec<usize>,
    pub payload_bytes: usize,
    pub published: u64,
    pub expected_deliveries: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Frames that arrived after a later event of their channel (publish order).
    pub reordered: u64,
    pub failed_clients: usize,
    /// Subscribers still connected after the drain.
    pub still_open: usize,
    pub publish_secs: f64,
    pub offered_deliveries_per_sec: f64,
    pub delivered_per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub connect_p50_ms: f64,
    pub connect_max_ms: f64,
    pub ramp_secs: f64,
    pub server_cpu_secs: Option<f64>,
    pub server_cpu_us_per_delivery: Option<f64>,
    pub server_rss_bytes: Option<u64>,
    pub server_rss_per_connection_bytes: Option<f64>,
    pub bench_cpu_share: Option<f64>,
    /// Connections that never read (`--stalled`).
    pub stalled: usize,
    /// Of those, how many the server ended: close 4008 or EOF/reset.
    pub stalled_cut_off: usize,
    /// Close codes the stalled connections got, with how many got each.
    pub stalled_close_codes: BTreeMap<u16, usize>,
    /// Stalled connections that ended without a close frame (EOF, reset).
    pub stalled_ended_without_close: usize,
    /// Stalled connections still open after 30 s without an event.
    pub stalled_still_open: usize,
}

impl std::fmt::Display for FanoutReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("-".to_owned(), |v| format!("{v:.2} {unit}"));
        let mut rows = vec![
            ("target", format!("{:?} (via {})", self.target, self.via).to_lowercase()),
            (
                "clients / channels / procs",
                format!("{} / {} / {}", self.clients, self.channels, self.procs),
            ),
            (
                "subscriptions (per client)",
                format!("{} ({})", self.subscriptions, self.subs_per_client),
            ),
        ];
        if self.connected_by_ws.len() > 1 {
            rows.push(("connected per URL", join(&self.connected_by_ws)));
        }
        rows.extend([
            ("published events", self.published.to_string()),
            (
                "deliveries expected / received",
                format!("{} / {}", self.expected_deliveries, self.delivered),
            ),
            (
                "lost / duplicated / reordered",
                format!("{} / {} / {}", self.lost, self.duplicated, self.reordered),
            ),
            (
                "failed / still open at the end",
                format!("{} / {}", self.failed_clients, self.still_open),
            ),
            ("offered deliveries/s", format!("{:.0}", self.offered_deliveries_per_sec)),
            ("delivered/s", format!("{:.0}", self.delivered_per_sec)),
            (
                "latency p50 / p90 / p99 / max",
                format!(
                    "{:.2} / {:.2} / {:.2} / {:.2} ms",
                    self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms
                ),
            ),
            (
                "connect p50 / max; ramp",
                format!(
                    "{:.2} / {:.2} ms; {:.2} s",
                    self.connect_p50_ms, self.connect_max_ms, self.ramp_secs
                ),
            ),
            ("server CPU per delivery", opt(self.server_cpu_us_per_delivery, "µs")),
            (
                "server RSS per connection",
                opt(self.server_rss_per_connection_bytes.map(|b| b / 1024.0), "KiB"),
            ),
            ("bench CPU (share of a core)", opt(self.bench_cpu_share.map(|s| s * 100.0), "%")),
        ]);
        if self.stalled > 0 {
            let codes: Vec<String> =
                self.stalled_close_codes.iter().map(|(code, n)| format!("{code}×{n}")).collect();
            rows.push((
                "stalled: cut off / of",
                format!(
                    "{} / {} (close codes: {}; no close frame {}; still open {})",
                    self.stalled_cut_off,
                    self.stalled,
                    if codes.is_empty() { "none".to_owned() } else { codes.join(", ") },
                    self.stalled_ended_without_close,
                    self.stalled_still_open
                ),
            ));
        }
        for (name, value) in rows {
            writeln!(f, "{name:<32} {value}")?;
        }
        Ok(())
    }
}

fn join<T: std::fmt::Display>(values: &[T]) -> String {
    values.iter().map(ToString::to_string).collect::<Vec<_>>().join(" / ")
}

/// Subscriber `j`'s first channel, (j·m) mod k, computed without overflow.
fn first_channel(j: usize, m: usize, k: usize) -> usize {
    (j % k) * (m % k) % k
}

/// The channels subscriber `j` listens to: (j·m + i) mod k for i < m (distinct when m ≤ k).
pub fn channels_of(j: usize, m: usize, k: usize) -> impl Iterator<Item = usize> {
    let first = first_channel(j, m, k);
    (0..m).map(move |i| (first + i) % k)
}

/// Which of subscriber `j`'s subscriptions (the `i` of [`channels_of`]) channel `c` is.
pub fn slot_of(j: usize, m: usize, k: usize, c: usize) -> Option<usize> {
    if c >= k {
        return None;
    }
    let i = (c + k - first_channel(j, m, k)) % k;
    (i < m).then_some(i)
}

/// How many of subscribers `0..clients` listen to each of the `k` channels.
pub fn subscribers_per_channel(clients: usize, m: usize, k: usize) -> Vec<u64> {
    let mut counts = vec![0u64; k];
    for j in 0..clients {
        for c in channels_of(j, m, k) {
            counts[c] += 1;
        }
    }
    counts
}

/// The `--ws` list: one URL or several, comma separated.
pub fn ws_urls(list: &str) -> anyhow::Result<Vec<String>> {
    let urls: Vec<String> =
        list.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
    if urls.is_empty() {
        bail!("--ws needs at least one WebSocket URL");
    }
    for url in &urls {
        let parsed = reqwest::Url::parse(url).with_context(|| format!("--ws: bad URL {url}"))?;
        if !matches!(parsed.scheme(), "ws" | "wss") || parsed.host_str().is_none() {
            bail!("--ws: {url} is not a ws:// URL");
        }
    }
    Ok(urls)
}

/// Where subscriber `j` listens, and how to reach it.
struct Plan {
    target: Target,
    /// The events' collection (`products` unless `--collection`).
    collection: String,
    /// Sent in every subscribe (`--filter`).
    filter: Option<serde_json::Value>,
    /// Sent in every subscribe (`--token`).
    token: Option<String>,
    urls: Vec<String>,
    run_id: String,
    channels: usize,
    subs_per_client: usize,
    via_api: bool,
    source_ip: Option<IpAddr>,
}

impl Plan {
    fn channel(&self, k: usize) -> String {
        match (self.target, self.via_api) {
            (Target::Courier, true) => "products".to_owned(),
            (Target::Courier, false) => format!("{}:bench-{}-{k}", self.collection, self.run_id),
            (Target::Nats, _) => format!("bench.{}.{k}", self.run_id),
        }
    }

    fn url_of(&self, j: usize) -> usize {
        j % self.urls.len()
    }

    fn channels_of(&self, j: usize) -> impl Iterator<Item = usize> {
        channels_of(j, self.subs_per_client, self.channels)
    }
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The `~B<k>.<i>.<t>~` marker in a frame, if any.
fn scan_marker(text: &[u8]) -> Option<(usize, u64, u64)> {
    let start = text.windows(2).position(|w| w == b"~B")? + 2;
    let mut numbers = [0u64; 3];
    let mut which = 0;
    for &byte in &text[start..] {
        match byte {
            b'0'..=b'9' => numbers[which] = numbers[which] * 10 + u64::from(byte - b'0'),
            b'.' if which < 2 => which += 1,
            b'~' if which == 2 => return Some((numbers[0] as usize, numbers[1], numbers[2])),
            _ => return None,
        }
    }
    None
}

/// One subscription's view of its channel: which event indexes arrived, repeats and arrivals
/// out of publish order counted. (Through the api, concurrent writes may commit in another
/// order than they were sent: `reordered` there is not a fault.)
#[derive(Default)]
struct ChannelTrack {
    seen: Vec<u64>,
    unique: u64,
    highest: Option<u64>,
    received: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
}

impl ChannelTrack {
    fn saw(&mut self, index: u64) {
        self.received += 1;
        let (word, bit) = ((index / 64) as usize, 1u64 << (index % 64));
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicated += 1;
            return;
        }
        self.seen[word] |= bit;
        self.unique += 1;
        if self.highest.is_some_and(|h| index < h) {
            self.reordered += 1;
        }
        self.highest = self.highest.max(Some(index));
    }

    /// Closes the books once `published` events went to the channel.
    fn finish(&mut self, published: u64) {
        self.lost = published.saturating_sub(self.unique);
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(
    url: &str,
    source_ip: Option<IpAddr>,
    recv_buffer: Option<u32>,
) -> anyhow::Result<Ws> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("bad URL {url}"))?;
    let host = parsed.host_str().context("URL has no host")?;
    let port = parsed.port_or_known_default().context("URL has no port")?;
    let addr: SocketAddr = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .with_context(|| format!("{host} does not resolve"))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(ip) = source_ip {
        socket.bind(SocketAddr::new(ip, 0)).with_context(|| format!("cannot bind {ip}"))?;
    }
    if let Some(bytes) = recv_buffer {
        socket.set_recv_buffer_size(bytes).context("cannot set SO_RCVBUF")?;
    }
    let stream = socket.connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .context("WebSocket handshake failed")?;
    Ok(ws)
}

/// Connects and subscribes to `channels`; returns once every subscription is confirmed.
async fn connect_subscriber(
    plan: &Plan,
    url: &str,
    channels: &[String],
    recv_buffer: Option<u32>,
) -> anyhow::Result<Ws> {
    let mut ws = open(url, plan.source_ip, recv_buffer).await?;
    match plan.target {
        Target::Courier => {
            for channel in channels {
                let mut frame = serde_json::json!({"type": "subscribe", "channel": channel});
                if let Some(filter) = &plan.filter {
                    frame["filter"] = filter.clone();
                }
                if let Some(token) = &plan.token {
                    frame["token"] = token.clone().into();
                }
                let frame = frame.to_string();
                ws.feed(Message::text(frame)).await?;
            }
            ws.flush().await?;
            let mut confirmed = 0;
            while confirmed < channels.len() {
                let message = tokio::time::timeout(Duration::from_secs(30), ws.next())
                    .await
                    .context("not every subscription confirmed within 30 s")?
                    .context("closed while subscribing")??;
                if let Message::Text(text) = message {
                    if text.contains(r#""type":"subscribed""#) {
                        confirmed += 1;
                    } else if text.contains(r#""type":"error""#) {
                        bail!("subscribe refused: {text}");
                    }
                }
            }
            Ok(ws)
        }
        Target::Nats => {
            let mut connect =
                String::from("CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\n");
            for (i, channel) in channels.iter().enumerate() {
                let _ = write!(connect, "SUB {channel} {}\r\n", i + 1);
            }
            connect.push_str("PING\r\n");
            ws.send(Message::binary(connect.into_bytes())).await?;
            loop {
                let message = tokio::time::timeout(Duration::from_secs(30), ws.next())
                    .await
                    .context("no PONG within 30 s")?
                    .context("closed while subscribing")??;
                let data = message.into_data();
                if data.windows(4).any(|w| w == b"PONG") {
                    return Ok(ws);
                }
                if data.starts_with(b"-ERR") {
                    bail!("nats refused: {}", String::from_utf8_lossy(&data));
                }
            }
        }
    }
}

/// Subscriber `j` with `m` of `k` channels: reads frames until `stop` turns true, counting
/// what arrives per subscription.
async fn read_subscriber(
    mut ws: Ws,
    target: Target,
    (j, m, k): (usize, usize, usize),
    mut stop: watch::Receiver<bool>,
    received: Arc<AtomicU64>,
) -> (Vec<ChannelTrack>, Histogram) {
    let mut tracks: Vec<ChannelTrack> = (0..m).map(|_| ChannelTrack::default()).collect();
    let mut latency = Histogram::default();
    loop {
        let message = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            message = ws.next() => message,
        };
        let Some(Ok(message)) = message else { break };
        let data: &[u8] = match &message {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(data) => data,
            _ => continue,
        };
        let arrived = now_us();
        // A nats frame may hold several messages and a PING; a courier frame holds one event.
        if target == Target::Nats && data.windows(6).any(|w| w == b"PING\r\n") {
            let _ = ws.send(Message::binary(b"PONG\r\n".to_vec())).await;
        }
        let mut rest = data;
        while let Some((c, index, sent)) = scan_marker(rest) {
            if let Some(i) = slot_of(j, m, k, c) {
                tracks[i].saw(index);
                latency.record(arrived.saturating_sub(sent));
                received.fetch_add(1, Ordering::Relaxed);
            }
            let at = rest.windows(2).position(|w| w == b"~B").unwrap_or(0) + 2;
            rest = &rest[at..];
        }
    }
    (tracks, latency)
}

type Reader = tokio::task::JoinHandle<(Vec<ChannelTrack>, Histogram)>;

/// This process's subscribers: connected, then reading until told to stop.
struct Crowd {
    plan: Arc<Plan>,
    /// (global subscriber number, its reader)
    readers: Vec<(usize, Reader)>,
    stop: watch::Sender<bool>,
    received: Arc<AtomicU64>,
    tally: SubscriberTally,
}

fn ramp_bar(show: bool, len: usize) -> ProgressBar {
    if show {
        ProgressBar::new(len as u64).with_style(
            ProgressStyle::with_template("connecting {bar:40} {pos}/{len}  {per_sec}  eta {eta}")
                .expect("valid template"),
        )
    } else {
        ProgressBar::hidden()
    }
}

/// Connects subscribers `offset .. offset + clients`, counting each attempt on `progress`.
async fn gather(plan: &Arc<Plan>, clients: usize, offset: usize, progress: ProgressBar) -> Crowd {
    let (stop, stop_rx) = watch::channel(false);
    let received = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let (m, k) = (plan.subs_per_client, plan.channels);
    // Each subscriber reads from the moment it is subscribed, not once the whole ramp is done:
    // a long ramp (tens of thousands of connections) would otherwise leave the first ones
    // unread for minutes, answering no ping, and the server rightly drops them as idle.
    let connected: Vec<(usize, anyhow::Result<(Reader, Duration)>)> =
        futures::stream::iter(offset..offset + clients)
            .map(|j| {
                let (plan, progress) = (plan.clone(), progress.clone());
                let (stop_rx, received) = (stop_rx.clone(), received.clone());
                async move {
                    let channels: Vec<String> =
                        plan.channels_of(j).map(|c| plan.channel(c)).collect();
                    let at = Instant::now();
                    let url = &plan.urls[plan.url_of(j)];
                    let ws = connect_subscriber(&plan, url, &channels, None).await;
                    progress.inc(1);
                    let reader = ws.map(|ws| {
                        let read = read_subscriber(ws, plan.target, (j, m, k), stop_rx, received);
                        (tokio::spawn(read), at.elapsed())
                    });
                    (j, reader)
                }
            })
            .buffer_unordered(CONNECT_CONCURRENCY)
            .collect()
            .await;
    progress.finish_and_clear();
    let mut tally = SubscriberTally {
        clients,
        ramp_secs: started.elapsed().as_secs_f64(),
        connected_by_ws: vec![0; plan.urls.len()],
        ..Default::default()
    };
    let mut readers = Vec::new();
    let mut first_error = None;
    for (j, outcome) in connected {
        match outcome {
            Ok((reader, took)) => {
                tally.connect.record(took.as_micros() as u64);
                tally.connected_by_ws[plan.url_of(j)] += 1;
                readers.push((j, reader));
            }
            Err(err) => {
                tally.failed_clients += 1;
                first_error.get_or_insert(err);
            }
        }
    }
    if let Some(err) = first_error {
        eprintln!(
            "warning: {} subscribers failed to connect; first: {err:#}",
            tally.failed_clients
        );
    }
    Crowd { plan: plan.clone(), readers, stop, received, tally }
}

impl Crowd {
    /// Deliveries these subscribers should get once `published` events went to each channel.
    fn expected(&self, published: &[u64]) -> u64 {
        self.readers
            .iter()
            .flat_map(|(j, _)| self.plan.channels_of(*j))
            .map(|c| published.get(c).copied().unwrap_or(0))
            .sum()
    }

    /// Waits until `expected` frames arrived or none came for [`DRAIN_QUIET`], then stops.
    async fn drain(&self, expected: u64) {
        let mut last = self.received.load(Ordering::Relaxed);
        let mut quiet_since = Instant::now();
        while last < expected && quiet_since.elapsed() < DRAIN_QUIET {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = self.received.load(Ordering::Relaxed);
            if now != last {
                (last, quiet_since) = (now, Instant::now());
            }
        }
    }

    async fn finish(mut self, published: &[u64]) -> SubscriberTally {
        self.tally.still_open = self.readers.iter().filter(|(_, r)| !r.is_finished()).count();
        let _ = self.stop.send(true);
        for (j, reader) in self.readers {
            let Ok((mut tracks, latency)) = reader.await else { continue };
            for (track, c) in tracks.iter_mut().zip(self.plan.channels_of(j)) {
                track.finish(published.get(c).copied().unwrap_or(0));
                self.tally.received += track.received;
                self.tally.lost += track.lost;
                self.tally.duplicated += track.duplicated;
                self.tally.reordered += track.reordered;
            }
            self.tally.latency.merge(&latency);
        }
        self.tally
    }
}

/// How a stalled connection ended once read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// A close frame (its code; 1005 when it had none).
    Closed(u16),
    /// EOF or a reset without a close frame.
    Dropped,
    /// Still open after [`STALLED_QUIET`] without an event.
    Open,
}

/// What became of the `--stalled` connections.
#[derive(Debug, Default)]
struct StalledOutcome {
    cut_off: usize,
    close_codes: BTreeMap<u16, usize>,
    ended_without_close: usize,
    still_open: usize,
}

/// Opens `n` connections subscribed to the first min(K, 100) channels, with a small receive
/// buffer; they are not read again until [`end_stalled`].
async fn open_stalled(plan: &Plan, n: usize) -> anyhow::Result<Vec<Ws>> {
    let channels: Vec<String> =
        (0..plan.channels.min(MAX_SUBS_PER_CLIENT)).map(|c| plan.channel(c)).collect();
    let opened: Vec<anyhow::Result<Ws>> = futures::stream::iter(0..n)
        .map(|s| {
            let url = &plan.urls[plan.url_of(s)];
            connect_subscriber(plan, url, &channels, Some(STALLED_RECV_BUFFER))
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    opened.into_iter().collect::<anyhow::Result<_>>().context("a stalled connection failed")
}

/// Reads a stalled connection's backlog until it ends, or until no event came for
/// [`STALLED_QUIET`] (server pings do not count).
async fn stalled_ending(mut ws: Ws) -> Ending {
    let mut deadline = tokio::time::Instant::now() + STALLED_QUIET;
    loop {
        let message = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Ending::Open,
            Ok(None | Some(Err(_))) => return Ending::Dropped,
            Ok(Some(Ok(message))) => message,
        };
        let data: &[u8] = match &message {
            Message::Close(frame) => {
                return Ending::Closed(frame.as_ref().map_or(1005, |f| u16::from(f.code)));
            }
            Message::Text(text) => text.as_bytes(),
            Message::Binary(data) => data,
            _ => continue,
        };
        if scan_marker(data).is_some() {
            deadline = tokio::time::Instant::now() + STALLED_QUIET;
        }
    }
}

async fn end_stalled(stalled: Vec<Ws>) -> StalledOutcome {
    let endings = futures::future::join_all(stalled.into_iter().map(stalled_ending)).await;
    let mut outcome = StalledOutcome::default();
    for ending in endings {
        match ending {
            Ending::Closed(code) => {
                *outcome.close_codes.entry(code).or_default() += 1;
                if code == 4008 {
                    outcome.cut_off += 1;
                }
            }
            Ending::Dropped => {
                outcome.ended_without_close += 1;
                outcome.cut_off += 1;
            }
            Ending::Open => outcome.still_open += 1,
        }
    }
    outcome
}

/// Publishes `rate` events/s for `duration`, round robin over the channels; returns how many
/// went to each channel. Subjects are built beforehand and bodies written without a JSON tree
/// (every field is plain ASCII that needs no escaping), so 100,000 channels cost no more per
/// event than one.
async fn publish(args: &FanoutArgs, plan: &Plan) -> anyhow::Result<Vec<u64>> {
    let mut published = vec![0u64; plan.channels];
    let pad = "x".repeat(args.payload.saturating_sub(40));
    let creator = match &args.creator {
        Some(id) => format!(r#","created_by":{}"#, serde_json::Value::from(id.as_str())),
        None => String::new(),
    };
    let progress = ProgressBar::new(args.duration.as_millis() as u64).with_style(
        ProgressStyle::with_template("publishing {bar:40} {elapsed}/{duration}  {msg}")
            .expect("valid template"),
    );
    let http = reqwest::Client::new();
    let api_url = format!("{}/api/v1/products", args.api.trim_end_matches('/'));
    let nats = if plan.via_api {
        None
    } else {
        Some(
            async_nats::connect(&args.nats)
                .await
                .with_context(|| format!("cannot reach NATS at {}", args.nats))?,
        )
    };
    let subjects: Vec<async_nats::Subject> = match (plan.via_api, plan.target) {
        (true, _) => Vec::new(),
        (false, Target::Courier) => (0..plan.channels)
            .map(|k| format!("events.{}.bench-{}-{k}.created", plan.collection, plan.run_id).into())
            .collect(),
        (false, Target::Nats) => (0..plan.channels).map(|k| plan.channel(k).into()).collect(),
    };
    let mut api_writes = futures::stream::FuturesUnordered::new();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent_total = 0u64;
    let mut next_k = 0;
    while started.elapsed() < args.duration {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * args.rate) as u64;
        // Events carry milliseconds: one time string per tick.
        let time = chrono_now();
        while sent_total < due {
            let k = next_k;
            next_k = (next_k + 1) % plan.channels;
            let marker = format!("~B{k}.{}.{}~", published[k], now_us());
            published[k] += 1;
            sent_total += 1;
            match (&nats, plan.target) {
                (Some(nats), Target::Courier) => {
                    let mut body = String::with_capacity(pad.len() + 320);
                    let collection = &plan.collection;
                    let _ = write!(
                        body,
                        r#"{{"id":"{}","type":"{collection}.created","collection":"{collection}","doc_id":"bench-{}-{k}","data":{{"nombre":"{marker}","pad":"{pad}"{creator}}},"actor":null,"time":"{time}","trace_id":"bench"}}"#,
                        uuid::Uuid::now_v7(),
                        plan.run_id,
                    );
                    nats.publish(subjects[k].clone(), body.into()).await?;
                }
                (Some(nats), Target::Nats) => {
                    let body = format!(r#"{{"m":"{marker}","pad":"{pad}"}}"#);
                    nats.publish(subjects[k].clone(), body.into()).await?;
                }
                (None, _) => {
                    let body = serde_json::json!({"nombre": marker, "precio": 1.0});
                    let request = http.post(&api_url).json(&body).send();
                    api_writes.push(async move { request.await.map(|r| r.status()) });
                    while api_writes.len() >= 32 {
                        if let Some(outcome) = api_writes.next().await {
                            check_api(outcome)?;
                        }
                    }
                }
            }
        }
        progress.set_position(started.elapsed().as_millis() as u64);
        progress.set_message(format!("{sent_total} events"));
    }
    while let Some(outcome) = api_writes.next().await {
        check_api(outcome)?;
    }
    if let Some(nats) = &nats {
        nats.flush().await.context("NATS flush failed")?;
    }
    progress.finish_and_clear();
    Ok(published)
}

fn check_api(outcome: reqwest::Result<reqwest::StatusCode>) -> anyhow::Result<()> {
    let status = outcome.context("POST failed")?;
    if !status.is_success() {
        bail!("POST answered {status}");
    }
    Ok(())
}

/// RFC 3339 UTC time with milliseconds, as events carry it.
fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn validate(args: &FanoutArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.clients > MAX_CLIENTS {
        bail!("--clients must be 1 to {MAX_CLIENTS}");
    }
    if args.subs_per_client == 0 || args.subs_per_client > MAX_SUBS_PER_CLIENT {
        bail!(
            "--subs-per-client must be 1 to {MAX_SUBS_PER_CLIENT} (the broadcaster's default COURIER_WS_MAX_SUBSCRIPTIONS)"
        );
    }
    // A subscriber process gets the run's K and only its share of the clients.
    let most_channels = match args.role {
        Role::Lead => args.clients * args.subs_per_client,
        Role::Subscriber => MAX_CLIENTS * MAX_SUBS_PER_CLIENT,
    };
    if args.channels == 0 || args.channels > most_channels {
        bail!("--channels must be 1 to --clients × --subs-per-client ({most_channels})");
    }
    if args.subs_per_client > args.channels {
        bail!(
            "--subs-per-client must be at most --channels (a connection subscribes to distinct channels)"
        );
    }
    if !(args.rate > 0.0 && args.rate <= 1_000_000.0) {
        bail!("--rate must be above 0 and at most 1000000 events/s");
    }
    let courier_options = args.collection != "products"
        || args.filter.is_some()
        || args.token.is_some()
        || args.creator.is_some();
    if courier_options && (args.target != Target::Courier || args.via.is_some()) {
        bail!(
            "--collection, --filter, --token and --creator apply to --target courier without --via"
        );
    }
    if args.payload > 1_000_000 {
        bail!("--payload must be at most 1000000 bytes");
    }
    if args.procs == 0 || args.procs > 200 || args.procs > args.clients {
        bail!("--procs must be 1 to 200 and at most --clients");
    }
    if args.stalled > MAX_STALLED {
        bail!("--stalled must be at most {MAX_STALLED}");
    }
    if args.via.is_some() && (args.target == Target::Nats || args.channels != 1) {
        bail!(
            "--via api goes through the broadcaster's `products` channel: use --target courier --channels 1"
        );
    }
    Ok(())
}

fn collection_name(text: &str) -> Result<String, String> {
    if courier_core::subjects::is_valid_collection_name(text) {
        Ok(text.to_owned())
    } else {
        Err("a collection name: lowercase letters, digits and '_'".into())
    }
}

fn filter_text(text: &str) -> Result<String, String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(_)) => Ok(text.to_owned()),
        _ => Err("a JSON object of field conditions, e.g. {\"nombre\":{\"gte\":\"~\"}}".into()),
    }
}

fn plan_of(args: &FanoutArgs, run_id: String) -> anyhow::Result<Plan> {
    let filter = args.filter.as_deref().map(serde_json::from_str).transpose()?;
    Ok(Plan {
        collection: args.collection.clone(),
        filter,
        token: args.token.clone(),
        target: args.target,
        urls: match args.target {
            Target::Courier => ws_urls(&args.ws)?,
            Target::Nats => vec![args.nats_ws.clone()],
        },
        run_id,
        channels: args.channels,
        subs_per_client: args.subs_per_client,
        via_api: args.via.is_some(),
        source_ip: args.source_ip,
    })
}

fn new_run_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()[20..].to_owned()
}

pub async fn fanout(args: &FanoutArgs) -> anyhow::Result<Option<FanoutReport>> {
    validate(args)?;
    let run_id = args.run_id.clone().unwrap_or_else(new_run_id);
    let plan = Arc::new(plan_of(args, run_id.clone())?);
    if args.role == Role::Subscriber {
        subscriber_process(args, &plan).await?;
        return Ok(None);
    }
    let rss_before = probe::sum_over(&args.server_pids, probe::rss_bytes);
    let spec = ChildSpec {
        exe: args.bench_exe.clone(),
        procs: args.procs,
        clients: args.clients,
        plan: &plan,
        ws: &args.ws,
        nats_ws: &args.nats_ws,
        show: !args.json,
    };
    let subscribers = open_subscribers(spec).await?;
    let rss_after = probe::sum_over(&args.server_pids, probe::rss_bytes);
    let connected = subscribers.connected();
    let Subscribers { local, mut children } = subscribers;
    if connected == 0 {
        bail!("no subscriber connected");
    }
    let stalled = open_stalled(&plan, args.stalled).await?;
    for child in &mut children {
        child.say("GO").await?;
    }
    let cpu_before = probe::sum_over(&args.server_pids, probe::cpu_secs);
    let self_cpu = probe::cpu_secs("self");
    let started = Instant::now();
    let published = publish(args, &plan).await?;
    let publish_secs = started.elapsed().as_secs_f64();
    let per_channel = subscribers_per_channel(args.clients, args.subs_per_client, args.channels);
    let expected: u64 = published.iter().zip(&per_channel).map(|(n, subs)| n * subs).sum();
    let mut tally = SubscriberTally::default();
    let line = serde_json::to_string(&published)?;
    for child in &mut children {
        child.say(&format!("END {line}")).await?;
    }
    if let Some(crowd) = local {
        crowd.drain(crowd.expected(&published)).await;
        let wall = started.elapsed();
        let mut own = crowd.finish(&published).await;
        own.bench_cpu_share = probe::warn_if_saturated(self_cpu, wall);
        tally.merge(&own);
    }
    for child in children {
        tally.merge(&child.result().await?);
    }
    let drained = started.elapsed().as_secs_f64();
    let cpu_after = probe::sum_over(&args.server_pids, probe::cpu_secs);
    let server_cpu = cpu_before.zip(cpu_after).map(|(a, b)| b - a);
    let stalled = end_stalled(stalled).await;
    let latency = &tally.latency;
    Ok(Some(FanoutReport {
        target: args.target,
        via: if args.via.is_some() {
            "api"
        } else if args.target == Target::Nats {
            "nats"
        } else {
            "events-stream"
        },
        clients: args.clients,
        channels: args.channels,
        subs_per_client: args.subs_per_client,
        subscriptions: args.clients * args.subs_per_client,
        procs: args.procs,
        connected_by_ws: tally.connected_by_ws.clone(),
        payload_bytes: args.payload,
        published: published.iter().sum(),
        expected_deliveries: expected,
        delivered: tally.received,
        lost: tally.lost,
        duplicated: tally.duplicated,
        reordered: tally.reordered,
        failed_clients: tally.failed_clients,
        still_open: tally.still_open,
        publish_secs,
        offered_deliveries_per_sec: expected as f64 / publish_secs.max(1e-9),
        delivered_per_sec: tally.received as f64 / drained.max(1e-9),
        p50_ms: latency.quantile_ms(0.5),
        p90_ms: latency.quantile_ms(0.9),
        p99_ms: latency.quantile_ms(0.99),
        max_ms: latency.max_us as f64 / 1000.0,
        connect_p50_ms: tally.connect.quantile_ms(0.5),
        connect_max_ms: tally.connect.max_us as f64 / 1000.0,
        ramp_secs: tally.ramp_secs,
        server_cpu_secs: server_cpu,
        server_cpu_us_per_delivery: server_cpu
            .filter(|_| tally.received > 0)
            .map(|cpu| cpu * 1e6 / tally.received as f64),
        server_rss_bytes: rss_after,
        server_rss_per_connection_bytes: rss_before
            .zip(rss_after)
            .map(|(a, b)| b.saturating_sub(a) as f64 / connected as f64),
        bench_cpu_share: tally.bench_cpu_share,
        stalled: args.stalled,
        stalled_cut_off: stalled.cut_off,
        stalled_close_codes: stalled.close_codes,
        stalled_ended_without_close: stalled.ended_without_close,
        stalled_still_open: stalled.still_open,
    }))
}

/// A child subscriber process: `CONNECTED <attempted>` lines while connecting, `READY
/// <connected>` once done, waits for `GO`, then for `END <published per channel>`, drains and
/// prints its tally as JSON.
async fn subscriber_process(args: &FanoutArgs, plan: &Arc<Plan>) -> anyhow::Result<()> {
    let progress = ProgressBar::hidden();
    let reporter = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(250));
            loop {
                every.tick().await;
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "CONNECTED {}", progress.position());
                let _ = stdout.flush();
            }
        })
    };
    let crowd = gather(plan, args.clients, args.client_offset, progress).await;
    reporter.abort();
    let _ = reporter.await;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "READY {}", crowd.readers.len())?;
    stdout.flush()?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut self_cpu = None;
    let mut started = Instant::now();
    while let Some(line) = lines.next_line().await? {
        if line == "GO" {
            self_cpu = probe::cpu_secs("self");
            started = Instant::now();
        } else if let Some(published) = line.strip_prefix("END ") {
            let published: Vec<u64> = serde_json::from_str(published).context("bad END line")?;
            crowd.drain(crowd.expected(&published)).await;
            let wall = started.elapsed();
            let mut tally = crowd.finish(&published).await;
            tally.bench_cpu_share = probe::warn_if_saturated(self_cpu, wall);
            writeln!(stdout, "{}", serde_json::to_string(&tally)?)?;
            stdout.flush()?;
            return Ok(());
        }
    }
    bail!("the lead process went away")
}

struct Child {
    process: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    connected: usize,
}

impl Child {
    async fn say(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.process.stdin.as_mut().context("child has no stdin")?;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    async fn next_line(&mut self, within: Duration, doing: &str) -> anyhow::Result<String> {
        tokio::time::timeout(within, self.lines.next_line())
            .await
            .with_context(|| format!("a subscriber process went silent {doing}"))??
            .with_context(|| format!("a subscriber process ended {doing}"))
    }

    async fn result(mut self) -> anyhow::Result<SubscriberTally> {
        let line = self.next_line(Duration::from_secs(120), "before its result").await?;
        let _ = self.process.wait().await;
        serde_json::from_str(&line).context("a subscriber process printed a bad result")
    }
}

/// What `--procs` children are started with.
struct ChildSpec<'a> {
    exe: Option<PathBuf>,
    procs: usize,
    clients: usize,
    plan: &'a Arc<Plan>,
    /// The `--ws` list and `--nats-ws` as given.
    ws: &'a str,
    nats_ws: &'a str,
    show: bool,
}

/// A run's subscribers: in this process (`--procs 1`) or in child processes.
struct Subscribers {
    local: Option<Crowd>,
    children: Vec<Child>,
}

impl Subscribers {
    /// Subscribers connected, over this process and the children.
    fn connected(&self) -> usize {
        self.local.as_ref().map_or(0, |c| c.readers.len())
            + self.children.iter().map(|c| c.connected).sum::<usize>()
    }
}

/// Opens the subscribers: in this process with `--procs 1`, else in `--procs` child processes.
async fn open_subscribers(spec: ChildSpec<'_>) -> anyhow::Result<Subscribers> {
    Ok(if spec.procs == 1 {
        let crowd = gather(spec.plan, spec.clients, 0, ramp_bar(spec.show, spec.clients)).await;
        Subscribers { local: Some(crowd), children: Vec::new() }
    } else {
        Subscribers { local: None, children: spawn_children(&spec).await? }
    })
}

/// Starts the subscriber processes, child i with its share of the clients on source address
/// 127.0.0.(i+1), and waits until each has connected (one progress bar over all).
async fn spawn_children(spec: &ChildSpec<'_>) -> anyhow::Result<Vec<Child>> {
    let exe = match &spec.exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().context("cannot find this executable")?,
    };
    let plan = spec.plan;
    let progress =
        if spec.show { ProgressBar::new(spec.clients as u64) } else { ProgressBar::hidden() };
    progress.set_style(
        ProgressStyle::with_template(
            "connecting {bar:40} {pos}/{len}  {per_sec}  eta {eta} (in {msg} processes)",
        )
        .expect("valid template"),
    );
    progress.set_message(spec.procs.to_string());
    let mut children = Vec::new();
    let mut offset = 0;
    for i in 0..spec.procs {
        let share = spec.clients / spec.procs + usize::from(i < spec.clients % spec.procs);
        let mut command = tokio::process::Command::new(&exe);
        command
            .args(["bench", "fanout", "--role", "subscriber", "--run-id", &plan.run_id])
            .args(["--clients", &share.to_string(), "--client-offset", &offset.to_string()])
            .args(["--channels", &plan.channels.to_string()])
            .args(["--subs-per-client", &plan.subs_per_client.to_string()])
            .args(["--source-ip", &format!("127.0.0.{}", (i % 250) + 1)])
            .args([
                "--target",
                match plan.target {
                    Target::Courier => "courier",
                    Target::Nats => "nats",
                },
            ])
            .args(["--ws", spec.ws, "--nats-ws", spec.nats_ws])
            .args(["--collection", &plan.collection])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        if plan.via_api {
            command.args(["--via", "api"]);
        }
        if let Some(filter) = &plan.filter {
            command.args(["--filter", &filter.to_string()]);
        }
        // Through the environment: a token never shows in the process list.
        match &plan.token {
            Some(token) => command.env("COURIER_TOKEN", token),
            None => command.env_remove("COURIER_TOKEN"),
        };
        let mut process = command
            .spawn()
            .with_context(|| format!("cannot start a subscriber process ({})", exe.display()))?;
        let stdout = process.stdout.take().context("child has no stdout")?;
        children.push(Child { process, lines: BufReader::new(stdout).lines(), connected: 0 });
        offset += share;
    }
    let attempted: Vec<AtomicU64> = children.iter().map(|_| AtomicU64::new(0)).collect();
    futures::future::try_join_all(children.iter_mut().zip(&attempted).map(|(child, mine)| {
        let (progress, attempted) = (progress.clone(), &attempted);
        async move {
            loop {
                let line = child.next_line(CHILD_SILENCE, "while connecting").await?;
                let (count, ready) = if let Some(n) = line.strip_prefix("CONNECTED ") {
                    (n, false)
                } else if let Some(n) = line.strip_prefix("READY ") {
                    (n, true)
                } else {
                    bail!("unexpected line from a subscriber process: {line}");
                };
                let count: usize = count.parse().context("bad line from a subscriber process")?;
                if ready {
                    child.connected = count;
                    return Ok::<(), anyhow::Error>(());
                }
                mine.store(count as u64, Ordering::Relaxed);
                progress.set_position(attempted.iter().map(|a| a.load(Ordering::Relaxed)).sum());
            }
        }
    }))
    .await?;
    progress.finish_and_clear();
    Ok(children)
}

#[derive(Debug, Clone, Args)]
pub struct ConnectionsArgs {
    /// Idle subscribed connections to hold.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// How long to hold them (e.g. 30s, 10m).
    #[arg(long, default_value = "30s", value_parser = courier_core::config::seconds_or_duration)]
    pub hold: Duration,
    /// Distinct channels (default: one per connection, the costliest case).
    #[arg(long)]
    pub channels: Option<usize>,
    /// The broadcaster's WebSocket URL, or several comma separated: connection j goes to URL
    /// j mod n, and every one is pinged (round robin).
    #[arg(long = "ws", env = "COURIER_WS_URL", default_value = "ws://127.0.0.1:8765/ws")]
    pub ws: String,
    #[arg(long = "server-pid", value_delimiter = ',')]
    pub server_pids: Vec<String>,
    /// Hold the connections in P child processes, child i on source address 127.0.0.(i+1)
    /// (≈28k ports per address; one process here may hold 20,000 open files). 1: in this
    /// process, from the default source address.
    #[arg(long, default_value_t = 1)]
    pub procs: usize,
    #[arg(long)]
    pub json: bool,
    /// Internal: the executable `--procs` children run (default: this one).
    #[arg(long, env = "COURIER_BENCH_EXE", hide = true)]
    pub bench_exe: Option<PathBuf>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectionsReport {
    pub clients: usize,
    pub connected: usize,
    pub failed_clients: usize,
    pub channels: usize,
    pub procs: usize,
    /// Connections opened per `--ws` URL (in list order).
    pub connected_by_ws: Vec<usize>,
    pub hold_secs: f64,
    pub ramp_secs: f64,
    pub connect_p50_ms: f64,
    pub connect_max_ms: f64,
    /// Pings over all URLs.
    pub pings: u64,
    pub ping_failures: u64,
    pub ping_p50_ms: f64,
    pub ping_p99_ms: f64,
    pub ping_max_ms: f64,
    /// Ping p99 per `--ws` URL (in list order).
    pub ping_p99_ms_by_ws: Vec<f64>,
    /// Connections still open at the end of the hold.
    pub still_open: usize,
    pub server_rss_per_connection_bytes: Option<f64>,
    /// RSS at the end of the hold relative to its start (1.0 = flat).
    pub server_rss_drift: Option<f64>,
}

impl std::fmt::Display for ConnectionsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rss = self
            .server_rss_per_connection_bytes
            .map_or("-".into(), |b| format!("{:.2} KiB", b / 1024.0));
        let drift =
            self.server_rss_drift.map_or("-".into(), |d| format!("{:+.1} %", (d - 1.0) * 100.0));
        let mut rows = vec![(
            "connections held / asked",
            format!(
                "{} / {} ({} channels, {} procs)",
                self.still_open, self.clients, self.channels, self.procs
            ),
        )];
        if self.connected_by_ws.len() > 1 {
            rows.push(("connected per URL", join(&self.connected_by_ws)));
        }
        rows.extend([
            (
                "connect p50 / max; ramp",
                format!(
                    "{:.2} / {:.2} ms; {:.2} s",
                    self.connect_p50_ms, self.connect_max_ms, self.ramp_secs
                ),
            ),
            ("pings (failed)", format!("{} ({})", self.pings, self.ping_failures)),
            (
                "ping p50 / p99 / max",
                format!(
                    "{:.2} / {:.2} / {:.2} ms",
                    self.ping_p50_ms, self.ping_p99_ms, self.ping_max_ms
                ),
            ),
        ]);
        if self.ping_p99_ms_by_ws.len() > 1 {
            let each: Vec<String> =
                self.ping_p99_ms_by_ws.iter().map(|p| format!("{p:.2}")).collect();
            rows.push(("ping p99 per URL", format!("{} ms", each.join(" / "))));
        }
        rows.extend([
            ("server RSS per connection", rss),
            ("server RSS drift over the hold", drift),
        ]);
        for (name, value) in rows {
            writeln!(f, "{name:<32} {value}")?;
        }
        Ok(())
    }
}

/// One probe connection: protocol pings to one broadcaster, timed.
struct Prober {
    ws: Ws,
    pings: Histogram,
    failures: u64,
}

impl Prober {
    async fn ping(&mut self) -> anyhow::Result<()> {
        let sent = Instant::now();
        self.ws.send(Message::text(r#"{"type":"ping"}"#)).await?;
        let ws = &mut self.ws;
        let answered = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(message) = ws.next().await {
                if let Message::Text(text) = message?
                    && text.contains(r#""type":"pong""#)
                {
                    return Ok::<bool, anyhow::Error>(true);
                }
            }
            Ok(false)
        })
        .await;
        match answered {
            Ok(Ok(true)) => self.pings.record(sent.elapsed().as_micros() as u64),
            _ => self.failures += 1,
        }
        Ok(())
    }
}

/// Holds idle subscribed connections and probes the servers with protocol pings meanwhile.
pub async fn connections(args: &ConnectionsArgs) -> anyhow::Result<ConnectionsReport> {
    let channels = args.channels.unwrap_or(args.clients);
    if args.clients == 0 || args.clients > MAX_CLIENTS || channels == 0 || channels > args.clients {
        bail!("--clients must be 1 to {MAX_CLIENTS} and --channels 1 to --clients");
    }
    if args.procs == 0 || args.procs > 250 || args.procs > args.clients {
        bail!("--procs must be 1 to 250 and at most --clients");
    }
    let urls = ws_urls(&args.ws)?;
    let plan = Arc::new(Plan {
        target: Target::Courier,
        collection: "products".to_owned(),
        filter: None,
        token: None,
        urls: urls.clone(),
        run_id: new_run_id(),
        channels,
        subs_per_client: 1,
        via_api: false,
        source_ip: None,
    });
    let rss_before = probe::sum_over(&args.server_pids, probe::rss_bytes);
    let spec = ChildSpec {
        exe: args.bench_exe.clone(),
        procs: args.procs,
        clients: args.clients,
        plan: &plan,
        ws: &args.ws,
        nats_ws: "ws://127.0.0.1:8443",
        show: !args.json,
    };
    let subscribers = open_subscribers(spec).await?;
    let connected = subscribers.connected();
    let Subscribers { local, mut children } = subscribers;
    if connected == 0 {
        bail!("no connection opened");
    }
    let rss_start = probe::sum_over(&args.server_pids, probe::rss_bytes);
    let progress = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.hold.as_millis() as u64)
    };
    progress.set_style(
        ProgressStyle::with_template("holding {bar:40} {elapsed}/{duration}  {msg}")
            .expect("valid template"),
    );
    let mut probers = Vec::new();
    for url in &urls {
        let ws = open(url, None, None)
            .await
            .with_context(|| format!("probe connection to {url} failed"))?;
        probers.push(Prober { ws, pings: Histogram::default(), failures: 0 });
    }
    let mut all_pings = Histogram::default();
    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < args.hold {
        let prober = &mut probers[round % urls.len()];
        round += 1;
        prober.ping().await?;
        all_pings = probers.iter().fold(Histogram::default(), |mut all, p| {
            all.merge(&p.pings);
            all
        });
        progress.set_position(started.elapsed().as_millis() as u64);
        progress.set_message(format!("ping p99 {:.2} ms", all_pings.quantile_ms(0.99)));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress.finish_and_clear();
    let hold_secs = started.elapsed().as_secs_f64();
    let rss_end = probe::sum_over(&args.server_pids, probe::rss_bytes);
    let none_published = vec![0; channels];
    let mut tally = SubscriberTally::default();
    if let Some(crowd) = local {
        tally.merge(&crowd.finish(&none_published).await);
    }
    let line = serde_json::to_string(&none_published)?;
    for child in &mut children {
        child.say(&format!("END {line}")).await?;
    }
    for child in children {
        tally.merge(&child.result().await?);
    }
    Ok(ConnectionsReport {
        clients: args.clients,
        connected,
        failed_clients: tally.failed_clients,
        channels,
        procs: args.procs,
        connected_by_ws: tally.connected_by_ws.clone(),
        hold_secs,
        ramp_secs: tally.ramp_secs,
        connect_p50_ms: tally.connect.quantile_ms(0.5),
        connect_max_ms: tally.connect.max_us as f64 / 1000.0,
        pings: all_pings.total,
        ping_failures: probers.iter().map(|p| p.failures).sum(),
        ping_p50_ms: all_pings.quantile_ms(0.5),
        ping_p99_ms: all_pings.quantile_ms(0.99),
        ping_max_ms: all_pings.max_us as f64 / 1000.0,
        ping_p99_ms_by_ws: probers.iter().map(|p| p.pings.quantile_ms(0.99)).collect(),
        still_open: tally.still_open,
        server_rss_per_connection_bytes: rss_before
            .zip(rss_start)
            .map(|(a, b)| b.saturating_sub(a) as f64 / connected as f64),
        server_rss_drift: rss_start.zip(rss_end).map(|(a, b)| b as f64 / a.max(1) as f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_in_frames() {
        let frame = br#"{"type":"event","event":{"data":{"nombre":"~B3.41.1700000000000000~","pad":"xx"}}}"#;
        assert_eq!(scan_marker(frame), Some((3, 41, 1_700_000_000_000_000)));
        assert_eq!(scan_marker(b"no marker"), None);
        assert_eq!(scan_marker(b"~B1.2~"), None);
    }

    #[test]
    fn gaps_and_repeats_are_counted() {
        let mut t = ChannelTrack::default();
        for i in [0, 1, 1, 3, 4] {
            t.saw(i);
        }
        t.saw(2); // late, but not lost
        t.finish(7);
        assert_eq!((t.received, t.lost, t.duplicated, t.reordered), (6, 2, 1, 1));
    }

    #[test]
    fn subscribers_take_consecutive_channels_wrapping_around() {
        let of = |j, m, k| channels_of(j, m, k).collect::<Vec<_>>();
        assert_eq!(of(0, 1, 3), [0]);
        assert_eq!(of(4, 1, 3), [1], "one each: j mod K, as before");
        assert_eq!(of(1, 4, 10), [4, 5, 6, 7]);
        assert_eq!(of(2, 4, 10), [8, 9, 0, 1]);
        assert_eq!(of(3, 100, 100), (0..100).collect::<Vec<_>>());
        for (j, m, k) in [(0, 1, 1), (7, 3, 10), (2, 4, 10), (999, 100, 100_000), (5, 7, 7)] {
            let mine = of(j, m, k);
            let mut distinct = mine.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), m, "distinct channels for {j} {m} {k}");
            for (i, &c) in mine.iter().enumerate() {
                assert_eq!(slot_of(j, m, k, c), Some(i), "slot of {c} for {j} {m} {k}");
            }
            let others = (0..k).filter(|c| !mine.contains(c));
            assert!(others.clone().all(|c| slot_of(j, m, k, c).is_none()));
        }
        assert_eq!(slot_of(0, 1, 3, 3), None, "a channel out of range");
    }

    #[test]
    fn subscriptions_cover_the_channels_evenly() {
        // clients × M = K: one subscriber per channel (100k channels over 1,000 connections).
        let counts = subscribers_per_channel(1000, 100, 100_000);
        assert!(counts.iter().all(|&n| n == 1));
        assert_eq!(subscribers_per_channel(6, 3, 9), vec![2; 9]);
        assert_eq!(subscribers_per_channel(5, 1, 2), [3, 2]);
        assert_eq!(subscribers_per_channel(2, 3, 4), [2, 2, 1, 1]);
    }

    #[test]
    fn ws_lists_are_split_and_checked() {
        assert_eq!(ws_urls("ws://a:1/ws").unwrap(), ["ws://a:1/ws"]);
        assert_eq!(ws_urls("ws://a:1/ws, ws://b:2/ws,").unwrap(), ["ws://a:1/ws", "ws://b:2/ws"]);
        assert!(ws_urls(" , ").unwrap_err().to_string().contains("--ws"));
        assert!(ws_urls("ws://a:1/ws,nonsense").unwrap_err().to_string().contains("nonsense"));
        assert!(ws_urls("http://a:1/ws").unwrap_err().to_string().contains("ws://"));
    }

    #[test]
    fn tallies_merge_per_url_counts_and_open_connections() {
        let mut a =
            SubscriberTally { still_open: 2, connected_by_ws: vec![1, 1], ..Default::default() };
        let b =
            SubscriberTally { still_open: 3, connected_by_ws: vec![2, 1, 0], ..Default::default() };
        a.merge(&b);
        assert_eq!((a.still_open, a.connected_by_ws), (5, vec![3, 2, 0]));
    }
}
