//! The api's typed configuration: flags with `COURIER_*` environment fallbacks.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use courier_core::{
    auth::{JwtArgs, Secret},
    config::{NatsArgs, TelemetryArgs},
};

#[derive(Debug, Clone, Parser)]
#[command(name = "courier-api", about = "Courier REST API: collections, events through the outbox")]
pub struct ApiConfig {
    /// Address to listen on.
    #[arg(long, env = "COURIER_API_LISTEN", default_value = "0.0.0.0:8000")]
    pub listen: SocketAddr,

    /// MongoDB connection string (a replica set, so transactions work).
    #[arg(
        long,
        env = "COURIER_MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017/?directConnection=true"
    )]
    pub mongodb_uri: String,

    /// Database holding documents and the outbox.
    #[arg(long, env = "COURIER_MONGODB_DATABASE", default_value = "courier")]
    pub mongodb_database: String,

    /// How long a request waits for MongoDB before answering 503.
    #[arg(long, env = "COURIER_MONGODB_TIMEOUT", value_parser = humantime_ms, default_value = "3000")]
    pub mongodb_timeout: Duration,

    #[command(flatten)]
    pub nats: NatsArgs,

    /// Largest accepted request body, in bytes (larger → 413).
    #[arg(long, env = "COURIER_API_MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,

    /// How often the outbox relay looks for events the fast path did not publish (ms).
    #[arg(long, env = "COURIER_OUTBOX_RELAY_INTERVAL", value_parser = humantime_ms, default_value = "250")]
    pub relay_interval: Duration,

    /// How old an outbox record must be before the relay takes it over from the fast path (ms).
    #[arg(long, env = "COURIER_OUTBOX_RELAY_GRACE", value_parser = humantime_ms, default_value = "1000")]
    pub relay_grace: Duration,

    /// How often the scheduler moves due scheduled tasks into the outbox (ms): a task with
    /// `not_before` is enqueued within about this long after its time.
    #[arg(long, env = "COURIER_SCHEDULER_INTERVAL", value_parser = humantime_ms, default_value = "1000")]
    pub scheduler_interval: Duration,

    /// How often the api polls JetStream for the `courier_jetstream_*` gauges (ms); 0 turns the
    /// poll off.
    #[arg(long, env = "COURIER_JETSTREAM_METRICS_INTERVAL", value_parser = humantime_ms, default_value = "5000")]
    pub jetstream_metrics_interval: Duration,

    /// The collections to serve (`collections.yaml` format); reloaded when it changes.
    #[arg(long, env = "COURIER_COLLECTIONS_FILE", default_value = "collections.yaml")]
    pub collections_file: PathBuf,

    /// How often the collections file is checked for changes (ms).
    #[arg(long, env = "COURIER_COLLECTIONS_RELOAD_INTERVAL", value_parser = humantime_ms, default_value = "2000")]
    pub collections_reload_interval: Duration,

    /// Serve the web app's files from this directory instead of the copies built into the
    /// binary (for working on `services/api/web/` without rebuilding; only the app's own file
    /// names are served).
    #[arg(long, env = "COURIER_WEB_DIR")]
    pub web_dir: Option<PathBuf>,

    /// The broadcaster's WebSocket URL as the web app's browsers reach it: `ws://…` or `wss://…`,
    /// or a path such as `/ws` (same host as the page, e.g. behind an Ingress). Empty: the
    /// page's host on port 8765, path `/ws`.
    #[arg(long, env = "COURIER_PUBLIC_WS_URL", default_value = "")]
    pub public_ws_url: String,

    #[command(flatten)]
    pub jwt: JwtArgs,

    /// Lifetime of refresh tokens (seconds).
    #[arg(long, env = "COURIER_REFRESH_TTL_SECS", default_value_t = 30 * 24 * 3600)]
    pub refresh_ttl_secs: u64,

    /// Failed logins per username within the window before 429.
    #[arg(long, env = "COURIER_LOGIN_MAX_FAILURES", default_value_t = 5)]
    pub login_max_failures: usize,

    /// Login attempts per client address within the window before 429.
    #[arg(long, env = "COURIER_LOGIN_MAX_ATTEMPTS_PER_ADDRESS", default_value_t = 30)]
    pub login_max_attempts_per_address: usize,

    /// The rate-limit window (seconds).
    #[arg(long, env = "COURIER_LOGIN_WINDOW_SECS", default_value_t = 300)]
    pub login_window_secs: u64,

    /// Take the client address from X-Forwarded-For (only behind a proxy that sets it).
    #[arg(long, env = "COURIER_TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,

    /// Test-only fault injection: `exit-after-commit` makes the process exit right after a
    /// write commits and before its event is published (the outbox relay must recover it).
    #[arg(long, env = "COURIER_API_FAULT", hide = true)]
    pub fault: Option<Fault>,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// Faults the chaos tests inject into a real api process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    ExitAfterCommit,
}

/// Parses a whole number of milliseconds.
fn humantime_ms(text: &str) -> Result<Duration, String> {
    text.trim_end_matches("ms")
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("'{text}' is not a whole number of milliseconds"))
}

impl ApiConfig {
    /// Defaults for the given dependencies, listening on an ephemeral local port (tests, tools).
    pub fn for_local(mongodb_uri: &str, mongodb_database: &str, nats_url: &str) -> Self {
        let mut config = ApiConfig::parse_from(["courier-api"]);
        config.listen = "127.0.0.1:0".parse().expect("valid address");
        config.mongodb_uri = mongodb_uri.to_owned();
        config.mongodb_database = mongodb_database.to_owned();
        config.nats.nats_url = nats_url.to_owned();
        config.collections_file =
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../collections.yaml"));
        // A random key per call: local instances never share a built-in secret.
        let random: [u8; 32] = rand::random();
        config.jwt.secret = Some(Secret(random.iter().map(|b| format!("{b:02x}")).collect()));
        config
    }
}
