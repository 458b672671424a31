//! The broadcaster's typed configuration: flags with `COURIER_*` environment fallbacks.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use courier_core::{
    auth::JwtArgs,
    config::{NatsArgs, TelemetryArgs},
};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "courier-broadcaster",
    about = "Courier WebSocket broadcaster: fans JetStream events out to subscribed clients"
)]
pub struct BroadcasterConfig {
    /// Address to listen on (`/ws`, `/healthz`, `/readyz`, `/metrics`).
    #[arg(long, env = "COURIER_BROADCASTER_LISTEN", default_value = "0.0.0.0:8765")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub nats: NatsArgs,

    /// Collections file whose `read` rules decide which channels need an access token (the
    /// api's `collections.yaml`); re-read when it changes. Without it every channel is public.
    #[arg(long, env = "COURIER_COLLECTIONS_FILE")]
    pub collections_file: Option<std::path::PathBuf>,

    /// How often the collections file is checked for changes (ms).
    #[arg(long, env = "COURIER_COLLECTIONS_RELOAD_INTERVAL", default_value_t = 2_000)]
    pub collections_reload_interval_ms: u64,

    /// Token verification keys (the api's: secret, or RS256 public key).
    #[command(flatten)]
    pub jwt: JwtArgs,

    /// Name of this broadcaster in `status` frames and logs (defaults to host name + pid).
    #[arg(long, env = "COURIER_NODE_NAME")]
    pub node_name: Option<String>,

    /// Largest frame or message a client may send, in bytes (larger → close 1009).
    #[arg(long, env = "COURIER_WS_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Most channels one connection may subscribe to.
    #[arg(long, env = "COURIER_WS_MAX_SUBSCRIPTIONS", default_value_t = 100)]
    pub max_subscriptions: usize,

    /// Events a channel buffers for its slowest subscriber; a client further behind is
    /// disconnected with close code 4008 (and resumes with `since`).
    #[arg(long, env = "COURIER_WS_CHANNEL_BUFFER", default_value_t = 1024)]
    pub channel_buffer: usize,

    /// How long a send to one client may block before it is cut off as a slow consumer (ms).
    #[arg(long, env = "COURIER_WS_SEND_TIMEOUT_MS", default_value_t = 5_000)]
    pub send_timeout_ms: u64,

    /// Kernel send buffer of each client socket, in bytes (0: the OS default, which Linux grows
    /// to megabytes). Bounds how much the kernel holds for a client that stopped reading, and
    /// so how soon such a client meets the send timeout.
    #[arg(long, env = "COURIER_WS_SEND_BUFFER_BYTES", default_value_t = 256 * 1024)]
    pub send_buffer_bytes: usize,

    /// Server ping interval (ms); a client silent for 3 intervals is closed (4000).
    #[arg(long, env = "COURIER_WS_PING_INTERVAL_MS", default_value_t = 20_000)]
    pub ping_interval_ms: u64,

    /// Most concurrent WebSocket connections; further upgrades get 503.
    #[arg(long, env = "COURIER_WS_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// How long shutdown waits for connections to close after sending 1001 (ms).
    #[arg(long, env = "COURIER_SHUTDOWN_GRACE_MS", default_value_t = 5_000)]
    pub shutdown_grace_ms: u64,

    #[command(flatten)]
    pub chat: crate::chat::ChatArgs,

    /// Serve the seed systems' WebSockets: `/` (flat `product_created`-style messages) and
    /// `/ws/chats/{chat_id}` (see docs/migrating.md). Off unless asked for; on in `./dev up`.
    #[arg(long, env = "COURIER_SEED_COMPAT", default_value_t = false, action = clap::ArgAction::Set)]
    pub seed_compat: bool,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl BroadcasterConfig {
    /// Defaults for the given NATS, listening on an ephemeral local port (tests, tools).
    pub fn for_local(nats_url: &str) -> Self {
        let mut config = BroadcasterConfig::parse_from(["courier-broadcaster"]);
        config.listen = "127.0.0.1:0".parse().expect("valid address");
        config.nats.nats_url = nats_url.to_owned();
        config
    }

    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms)
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    pub fn node(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "broadcaster".into());
            format!("{host}-{}", std::process::id())
        })
    }
}
