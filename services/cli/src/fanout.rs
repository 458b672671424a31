//! `courier bench fanout` and `courier bench connections`: N WebSocket subscribers against the
//! broadcaster (or nats-server's own WebSocket listener, `--target nats`), events published at
//! a set rate, and the figures: deliveries/s, publish→receive latency, lost and duplicated
//! frames, connect time, server CPU per delivery and RSS per connection (from `/proc`).
//!
//! Each event carries a marker `~B<channel>.<index>.<unix µs>~` that subscribers scan for
//! (no JSON parse per frame), so lost, duplicated and late frames are counted exactly.
//! `--procs P` splits the subscribers over P child processes (this binary with `--role
//! subscriber`), each on its own source address 127.0.0.(i+1), talking over stdin/stdout.

use std::{
    io::Write as _,
    net::{IpAddr, SocketAddr},
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
    /// Subscribers to open.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Events published per second (deliveries/s = rate × subscribers per channel).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// How long to publish (e.g. 10s, 2m).
    #[arg(long, default_value = "10s", value_parser = courier_core::config::seconds_or_duration)]
    pub duration: Duration,
    /// Distinct channels; subscriber j listens to channel j mod K.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Approximate size of each event's data in bytes.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    #[arg(long, value_enum, default_value = "courier")]
    pub target: Target,
    /// Publish through the api (`POST /api/v1/products`) instead of straight into the EVENTS
    /// stream: the whole write path (one channel, `products`; rate bounded by the store).
    #[arg(long, value_parser = ["api"])]
    pub via: Option<String>,
    /// The broadcaster's WebSocket URL (`--target courier`).
    #[arg(long = "ws", env = "COURIER_WS_URL", default_value = "ws://127.0.0.1:8765/ws")]
    pub ws: String,
    /// nats-server's WebSocket URL (`--target nats`).
    #[arg(long, default_value = "ws://127.0.0.1:8443")]
    pub nats_ws: String,
    /// NATS URL the events are published to.
    #[arg(long, env = "COURIER_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    #[arg(long, env = "COURIER_API_URL", default_value = "http://127.0.0.1:8000")]
    pub api: String,
    /// Local server processes to read CPU and RSS of (repeat, or comma separated).
    #[arg(long = "server-pid", value_delimiter = ',')]
    pub server_pids: Vec<String>,
    /// Split the subscribers over this many processes (source addresses 127.0.0.1, .2, …).
    #[arg(long, default_value_t = 1)]
    pub procs: usize,
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
    pub procs: usize,
    pub payload_bytes: usize,
    pub published: u64,
    pub expected_deliveries: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Frames that arrived after a later event of their channel (publish order).
    pub reordered: u64,
    pub failed_clients: usize,
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
}

impl std::fmt::Display for FanoutReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("-".to_owned(), |v| format!("{v:.2} {unit}"));
        let rows = [
            ("target", format!("{:?} (via {})", self.target, self.via).to_lowercase()),
            (
                "clients / channels / procs",
                format!("{} / {} / {}", self.clients, self.channels, self.procs),
            ),
            ("published events", self.published.to_string()),
            (
                "deliveries expected / received",
                format!("{} / {}", self.expected_deliveries, self.delivered),
            ),
            (
                "lost / duplicated / reordered",
                format!("{} / {} / {}", self.lost, self.duplicated, self.reordered),
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
        ];
        for (name, value) in rows {
            writeln!(f, "{name:<32} {value}")?;
        }
        Ok(())
    }
}

/// Where subscriber `j` listens, and how to reach it.
#[derive(Clone)]
struct Plan {
    target: Target,
    url: String,
    run_id: String,
    channels: usize,
    via_api: bool,
    source_ip: Option<IpAddr>,
}

impl Plan {
    fn channel(&self, k: usize) -> String {
        match (self.target, self.via_api) {
            (Target::Courier, true) => "products".to_owned(),
            (Target::Courier, false) => format!("products:bench-{}-{k}", self.run_id),
            (Target::Nats, _) => format!("bench.{}.{k}", self.run_id),
        }
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

/// One subscriber's view of its channel: which event indexes arrived, repeats and arrivals
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

async fn open(url: &str, source_ip: Option<IpAddr>) -> anyhow::Result<Ws> {
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
    let stream = socket.connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .context("WebSocket handshake failed")?;
    Ok(ws)
}

/// Connects and subscribes; returns once the subscription is confirmed.
async fn connect_subscriber(plan: &Plan, channel: &str) -> anyhow::Result<Ws> {
    let mut ws = open(&plan.url, plan.source_ip).await?;
    match plan.target {
        Target::Courier => {
            let frame = serde_json::json!({"type": "subscribe", "channel": channel}).to_string();
            ws.send(Message::text(frame)).await?;
            loop {
                let message = tokio::time::timeout(Duration::from_secs(30), ws.next())
                    .await
                    .context("no subscribed frame within 30 s")?
                    .context("closed while subscribing")??;
                if let Message::Text(text) = message {
                    if text.contains(r#""type":"subscribed""#) {
                        return Ok(ws);
                    }
                    if text.contains(r#""type":"error""#) {
                        bail!("subscribe refused: {text}");
                    }
                }
            }
        }
        Target::Nats => {
            let connect = format!(
                "CONNECT {{\"verbose\":false,\"pedantic\":false,\"protocol\":1}}\r\nSUB {channel} 1\r\nPING\r\n"
            );
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

/// Reads frames until `stop` turns true, counting what arrives.
async fn read_subscriber(
    mut ws: Ws,
    target: Target,
    mut stop: watch::Receiver<bool>,
    received: Arc<AtomicU64>,
) -> (ChannelTrack, Histogram) {
    let mut track = ChannelTrack::default();
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
        while let Some((_, index, sent)) = scan_marker(rest) {
            track.saw(index);
            latency.record(arrived.saturating_sub(sent));
            received.fetch_add(1, Ordering::Relaxed);
            let at = rest.windows(2).position(|w| w == b"~B").unwrap_or(0) + 2;
            rest = &rest[at..];
        }
    }
    (track, latency)
}

/// This process's subscribers: connected, then reading until told to stop.
struct Crowd {
    readers: Vec<(usize, tokio::task::JoinHandle<(ChannelTrack, Histogram)>)>,
    stop: watch::Sender<bool>,
    received: Arc<AtomicU64>,
    tally: SubscriberTally,
}

async fn gather(plan: &Plan, clients: usize, offset: usize, show: bool) -> Crowd {
    let progress = if show {
        ProgressBar::new(clients as u64).with_style(
            ProgressStyle::with_template("connecting {bar:40} {pos}/{len}  {per_sec}  eta {eta}")
                .expect("valid template"),
        )
    } else {
        ProgressBar::hidden()
    };
    let (stop, stop_rx) = watch::channel(false);
    let received = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let connected: Vec<(usize, anyhow::Result<(Ws, Duration)>)> = futures::stream::iter(0..clients)
        .map(|j| {
            let (plan, progress) = (plan.clone(), progress.clone());
            async move {
                let k = (offset + j) % plan.channels;
                let at = Instant::now();
                let ws = connect_subscriber(&plan, &plan.channel(k)).await;
                progress.inc(1);
                (k, ws.map(|ws| (ws, at.elapsed())))
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    progress.finish_and_clear();
    let mut tally = SubscriberTally {
        clients,
        ramp_secs: started.elapsed().as_secs_f64(),
        ..Default::default()
    };
    let mut readers = Vec::new();
    let mut first_error = None;
    for (k, outcome) in connected {
        match outcome {
            Ok((ws, took)) => {
                tally.connect.record(took.as_micros() as u64);
                let task = read_subscriber(ws, plan.target, stop_rx.clone(), received.clone());
                readers.push((k, tokio::spawn(task)));
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
    Crowd { readers, stop, received, tally }
}

impl Crowd {
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
        let _ = self.stop.send(true);
        for (k, reader) in self.readers {
            if let Ok((mut track, latency)) = reader.await {
                track.finish(published[k]);
                self.tally.received += track.received;
                self.tally.lost += track.lost;
                self.tally.duplicated += track.duplicated;
                self.tally.reordered += track.reordered;
                self.tally.latency.merge(&latency);
            }
        }
        self.tally
    }
}

/// Publishes `rate` events/s for `duration`, round robin over the channels; returns how many
/// went to each channel.
async fn publish(args: &FanoutArgs, plan: &Plan) -> anyhow::Result<Vec<u64>> {
    let mut published = vec![0u64; plan.channels];
    let pad = "x".repeat(args.payload.saturating_sub(40));
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
    let mut api_writes = futures::stream::FuturesUnordered::new();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent_total = 0u64;
    let mut next_k = 0;
    while started.elapsed() < args.duration {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * args.rate) as u64;
        while sent_total < due {
            let k = next_k;
            next_k = (next_k + 1) % plan.channels;
            let marker = format!("~B{k}.{}.{}~", published[k], now_us());
            published[k] += 1;
            sent_total += 1;
            match (&nats, plan.target) {
                (Some(nats), Target::Courier) => {
                    let doc_id = format!("bench-{}-{k}", plan.run_id);
                    let event = serde_json::json!({
                        "id": uuid::Uuid::now_v7(), "type": "products.created",
                        "collection": "products", "doc_id": doc_id,
                        "data": {"nombre": marker, "pad": pad}, "actor": null,
                        "time": chrono_now(), "trace_id": "bench",
                    });
                    let subject = format!("events.products.{doc_id}.created");
                    nats.publish(subject, event.to_string().into()).await?;
                }
                (Some(nats), Target::Nats) => {
                    let body = serde_json::json!({"m": marker, "pad": pad}).to_string();
                    nats.publish(plan.channel(k), body.into()).await?;
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
    if args.channels == 0 || args.channels > args.clients {
        bail!("--channels must be 1 to --clients");
    }
    if !(args.rate > 0.0 && args.rate <= 1_000_000.0) {
        bail!("--rate must be above 0 and at most 1000000 events/s");
    }
    if args.payload > 1_000_000 {
        bail!("--payload must be at most 1000000 bytes");
    }
    if args.procs == 0 || args.procs > 200 || args.procs > args.clients {
        bail!("--procs must be 1 to 200 and at most --clients");
    }
    if args.via.is_some() && (args.target == Target::Nats || args.channels != 1) {
        bail!(
            "--via api goes through the broadcaster's `products` channel: use --target courier --channels 1"
        );
    }
    Ok(())
}

fn plan_of(args: &FanoutArgs, run_id: String) -> Plan {
    Plan {
        target: args.target,
        url: match args.target {
            Target::Courier => args.ws.clone(),
            Target::Nats => args.nats_ws.clone(),
        },
        run_id,
        channels: args.channels,
        via_api: args.via.is_some(),
        source_ip: args.source_ip,
    }
}

pub async fn fanout(args: &FanoutArgs) -> anyhow::Result<Option<FanoutReport>> {
    validate(args)?;
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string()[20..].to_owned());
    let plan = plan_of(args, run_id.clone());
    if args.role == Role::Subscriber {
        subscriber_process(args, &plan).await?;
        return Ok(None);
    }
    let rss_before = probe::sum_over(&args.server_pids, probe::rss_bytes);
    // Subscribers: here, or split over child processes.
    let mut children = Vec::new();
    let mut local = None;
    if args.procs == 1 {
        local = Some(gather(&plan, args.clients, 0, !args.json).await);
    } else {
        children = spawn_children(args, &run_id).await?;
    }
    let rss_after = probe::sum_over(&args.server_pids, probe::rss_bytes);
    let connected = local.as_ref().map_or(0, |c| c.readers.len())
        + children.iter().map(|c| c.connected).sum::<usize>();
    if connected == 0 {
        bail!("no subscriber connected");
    }
    for child in &mut children {
        child.say("GO").await?;
    }
    let cpu_before = probe::sum_over(&args.server_pids, probe::cpu_secs);
    let self_cpu = probe::cpu_secs("self");
    let started = Instant::now();
    let published = publish(args, &plan).await?;
    let publish_secs = started.elapsed().as_secs_f64();
    let per_channel_subs =
        |k: usize| -> u64 { (0..args.clients).filter(|j| j % args.channels == k).count() as u64 };
    let expected: u64 = published.iter().enumerate().map(|(k, n)| n * per_channel_subs(k)).sum();
    let mut tally = SubscriberTally::default();
    let line = serde_json::to_string(&published)?;
    for child in &mut children {
        child.say(&format!("END {line}")).await?;
    }
    if let Some(crowd) = local {
        crowd.drain(expected).await;
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
        procs: args.procs,
        payload_bytes: args.payload,
        published: published.iter().sum(),
        expected_deliveries: expected,
        delivered: tally.received,
        lost: tally.lost,
        duplicated: tally.duplicated,
        reordered: tally.reordered,
        failed_clients: tally.failed_clients,
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
    }))
}

/// A child subscriber process: `READY <connected>` once connected, waits for `GO`, then for
/// `END <published per channel>`, drains and prints its tally as JSON.
async fn subscriber_process(args: &FanoutArgs, plan: &Plan) -> anyhow::Result<()> {
    let crowd = gather(plan, args.clients, args.client_offset, false).await;
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
            let expected: u64 =
                crowd.readers.iter().map(|(k, _)| published.get(*k).copied().unwrap_or(0)).sum();
            crowd.drain(expected).await;
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

    async fn result(mut self) -> anyhow::Result<SubscriberTally> {
        let line = tokio::time::timeout(Duration::from_secs(120), self.lines.next_line())
            .await
            .context("a subscriber process gave no result within 120 s")??
            .context("a subscriber process ended without a result")?;
        let _ = self.process.wait().await;
        serde_json::from_str(&line).context("a subscriber process printed a bad result")
    }
}

async fn spawn_children(args: &FanoutArgs, run_id: &str) -> anyhow::Result<Vec<Child>> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let progress =
        if args.json { ProgressBar::hidden() } else { ProgressBar::new(args.clients as u64) };
    progress.set_style(
        ProgressStyle::with_template("connecting {bar:40} {pos}/{len} (in {msg} processes)")
            .expect("valid template"),
    );
    progress.set_message(args.procs.to_string());
    let mut children = Vec::new();
    let mut offset = 0;
    for i in 0..args.procs {
        let share = args.clients / args.procs + usize::from(i < args.clients % args.procs);
        let mut command = tokio::process::Command::new(&exe);
        command
            .args(["bench", "fanout", "--role", "subscriber", "--run-id", run_id])
            .args(["--clients", &share.to_string(), "--client-offset", &offset.to_string()])
            .args(["--channels", &args.channels.to_string()])
            .args(["--source-ip", &format!("127.0.0.{}", (i % 250) + 1)])
            .args([
                "--target",
                match args.target {
                    Target::Courier => "courier",
                    Target::Nats => "nats",
                },
            ])
            .args(["--ws", &args.ws, "--nats-ws", &args.nats_ws])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        if args.via.is_some() {
            command.args(["--via", "api"]);
        }
        let mut process = command.spawn().context("cannot start a subscriber process")?;
        let stdout = process.stdout.take().context("child has no stdout")?;
        children.push(Child { process, lines: BufReader::new(stdout).lines(), connected: 0 });
        offset += share;
    }
    for child in &mut children {
        let line = tokio::time::timeout(Duration::from_secs(600), child.lines.next_line())
            .await
            .context("a subscriber process did not connect within 10 minutes")??
            .context("a subscriber process ended while connecting")?;
        let count =
            line.strip_prefix("READY ").context("unexpected line from a subscriber process")?;
        child.connected = count.parse().context("bad READY line")?;
        progress.inc(child.connected as u64);
    }
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
    #[arg(long = "ws", env = "COURIER_WS_URL", default_value = "ws://127.0.0.1:8765/ws")]
    pub ws: String,
    #[arg(long = "server-pid", value_delimiter = ',')]
    pub server_pids: Vec<String>,
    /// Spread the connections over source addresses 127.0.0.1 … 127.0.0.P (≈28k ports each).
    #[arg(long, default_value_t = 1)]
    pub procs: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectionsReport {
    pub clients: usize,
    pub connected: usize,
    pub failed_clients: usize,
    pub channels: usize,
    pub hold_secs: f64,
    pub ramp_secs: f64,
    pub connect_p50_ms: f64,
    pub connect_max_ms: f64,
    pub pings: u64,
    pub ping_failures: u64,
    pub ping_p50_ms: f64,
    pub ping_p99_ms: f64,
    pub ping_max_ms: f64,
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
        let rows = [
            (
                "connections held / asked",
                format!("{} / {} ({} channels)", self.still_open, self.clients, self.channels),
            ),
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
            ("server RSS per connection", rss),
            ("server RSS drift over the hold", drift),
        ];
        for (name, value) in rows {
            writeln!(f, "{name:<32} {value}")?;
        }
        Ok(())
    }
}

/// Holds idle subscribed connections and probes the server with protocol pings meanwhile.
pub async fn connections(args: &ConnectionsArgs) -> anyhow::Result<ConnectionsReport> {
    let channels = args.channels.unwrap_or(args.clients);
    if args.clients == 0 || args.clients > MAX_CLIENTS || channels == 0 || channels > args.clients {
        bail!("--clients must be 1 to {MAX_CLIENTS} and --channels 1 to --clients");
    }
    if args.procs == 0 || args.procs > 250 {
        bail!("--procs must be 1 to 250");
    }
    let run_id = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
    let rss_before = probe::sum_over(&args.server_pids, probe::rss_bytes);
    let mut crowds = Vec::new();
    for i in 0..args.procs {
        let share = args.clients / args.procs + usize::from(i < args.clients % args.procs);
        let offset = (0..i)
            .map(|p| args.clients / args.procs + usize::from(p < args.clients % args.procs))
            .sum();
        let plan = Plan {
            target: Target::Courier,
            url: args.ws.clone(),
            run_id: run_id.clone(),
            channels,
            via_api: false,
            source_ip: (args.procs > 1).then(|| IpAddr::from([127, 0, 0, (i % 250) as u8 + 1])),
        };
        crowds.push(gather(&plan, share, offset, !args.json).await);
    }
    let connected: usize = crowds.iter().map(|c| c.readers.len()).sum();
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
    let mut probe_ws = open(&args.ws, None).await.context("probe connection failed")?;
    let mut pings = Histogram::default();
    let mut ping_failures = 0;
    let started = Instant::now();
    while started.elapsed() < args.hold {
        let sent = Instant::now();
        probe_ws.send(Message::text(r#"{"type":"ping"}"#)).await?;
        let answered = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(message) = probe_ws.next().await {
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
            Ok(Ok(true)) => pings.record(sent.elapsed().as_micros() as u64),
            _ => ping_failures += 1,
        }
        progress.set_position(started.elapsed().as_millis() as u64);
        progress.set_message(format!("ping p99 {:.2} ms", pings.quantile_ms(0.99)));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress.finish_and_clear();
    let rss_end = probe::sum_over(&args.server_pids, probe::rss_bytes);
    let still_open =
        crowds.iter().flat_map(|c| &c.readers).filter(|(_, r)| !r.is_finished()).count();
    let mut tally = SubscriberTally::default();
    for crowd in crowds {
        tally.merge(&crowd.finish(&vec![0; channels]).await);
    }
    Ok(ConnectionsReport {
        clients: args.clients,
        connected,
        failed_clients: tally.failed_clients,
        channels,
        hold_secs: started.elapsed().as_secs_f64(),
        ramp_secs: tally.ramp_secs,
        connect_p50_ms: tally.connect.quantile_ms(0.5),
        connect_max_ms: tally.connect.max_us as f64 / 1000.0,
        pings: pings.total,
        ping_failures,
        ping_p50_ms: pings.quantile_ms(0.5),
        ping_p99_ms: pings.quantile_ms(0.99),
        ping_max_ms: pings.max_us as f64 / 1000.0,
        still_open,
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
}
