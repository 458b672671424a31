//! The broadcaster's typed configuration: flags with `COURIER_*` environment fallbacks.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use courier_core::{
    auth::JwtArgs,
    config::{MAX_DURATION, NatsArgs, TelemetryArgs, duration_in, millis_or_duration},
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
    /// api's `collections.yaml`); re-read when it changes. A channel of a collection it does not
    /// declare is refused (`unknown_collection`). Required unless `--public-channels`.
    #[arg(long, env = "COURIER_COLLECTIONS_FILE")]
    pub collections_file: Option<std::path::PathBuf>,

    /// Run without a collections file, every collection's channels public (tests, demos).
    /// Without this flag and without `--collections-file` the broadcaster refuses to start;
    /// the two exclude each other. `chat:` and `user:` channels still need a token.
    #[arg(long, env = "COURIER_PUBLIC_CHANNELS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub public_channels: bool,

    /// How often the collections file is checked for changes: `250ms`, `5s`, `2m`, `1h` (a bare
    /// number is milliseconds; at least 100 ms).
    #[arg(
        long = "collections-reload-interval-ms",
        env = "COURIER_COLLECTIONS_RELOAD_INTERVAL",
        value_parser = duration_in(millis_or_duration, Duration::from_millis(100), MAX_DURATION),
        default_value = "2s"
    )]
    pub collections_reload_interval: Duration,

    /// Token verification keys (the api's: secret, or RS256 public key).
    #[command(flatten)]
    pub jwt: JwtArgs,

    /// Name of this broadcaster in `status` frames and logs (defaults to `<host name>-<pid>`).
    #[arg(long, env = "COURIER_NODE_NAME")]
    pub node_name: Option<String>,

    /// Largest frame or message a client may send, in bytes (larger → close 1009).
    #[arg(long, env = "COURIER_WS_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Most channels one connection may subscribe to (more → `error` `too_many_subscriptions`).
    #[arg(long, env = "COURIER_WS_MAX_SUBSCRIPTIONS", default_value_t = 100)]
    pub max_subscriptions: usize,

    /// Events a channel buffers for its slowest subscriber; a client further behind is
    /// disconnected with close code 4008 (and resumes with `since`).
    #[arg(long, env = "COURIER_WS_CHANNEL_BUFFER", default_value_t = 1024)]
    pub channel_buffer: usize,

    /// Bytes of event frames a channel buffers for its slowest subscriber (whichever of this
    /// and `COURIER_WS_CHANNEL_BUFFER` is reached first; the newest frame is always kept): a
    /// client further behind is disconnected with 4008.
    #[arg(long, env = "COURIER_WS_CHANNEL_BUFFER_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub channel_buffer_bytes: usize,

    /// Most channels (distinct subscribed channel names) this process keeps at once; a
    /// subscribe that would open one more is refused with `error` `too_many_channels`.
    #[arg(long, env = "COURIER_WS_MAX_CHANNELS", default_value_t = 100_000)]
    pub max_channels: usize,

    /// Most `since` replays one connection runs at once (more → `error` `too_many_replays`;
    /// retry once one has finished).
    #[arg(long, env = "COURIER_WS_MAX_REPLAYS_PER_CONNECTION", default_value_t = 4)]
    pub max_replays_per_connection: usize,

    /// Most `since` replays this process runs at once, over all connections (more → `error`
    /// `too_many_replays`; retry shortly).
    #[arg(long, env = "COURIER_WS_MAX_REPLAYS", default_value_t = 64)]
    pub max_replays: usize,

    /// Most events one `since` replay may send (a larger gap → `error` `replay_failed`: reload
    /// over REST and subscribe without `since`).
    #[arg(long, env = "COURIER_WS_MAX_REPLAY_EVENTS", default_value_t = 100_000)]
    pub max_replay_events: u64,

    /// How long a send to one client may block before it is cut off as a slow consumer: `250ms`,
    /// `5s`, `2m`, `1h` (a bare number is milliseconds).
    #[arg(
        long = "send-timeout-ms",
        env = "COURIER_WS_SEND_TIMEOUT_MS",
        value_parser = duration_in(millis_or_duration, Duration::from_millis(1), MAX_DURATION),
        default_value = "5s"
    )]
    pub send_timeout: Duration,

    /// Kernel send buffer of each client socket, in bytes (0: the OS default, which Linux grows
    /// to megabytes). Bounds how much the kernel holds for a client that stopped reading, and
    /// so how soon such a client meets the send timeout.
    #[arg(long, env = "COURIER_WS_SEND_BUFFER_BYTES", default_value_t = 256 * 1024)]
    pub send_buffer_bytes: usize,

    /// Server ping interval: `250ms`, `5s`, `2m`, `1h` (a bare number is milliseconds); a client
    /// silent for 3 intervals is closed (4000).
    #[arg(
        long = "ping-interval-ms",
        env = "COURIER_WS_PING_INTERVAL_MS",
        value_parser = duration_in(millis_or_duration, Duration::from_millis(1), MAX_DURATION),
        default_value = "20s"
    )]
    pub ping_interval: Duration,

    /// Most concurrent WebSocket connections; further upgrades get 503.
    #[arg(long, env = "COURIER_WS_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Most concurrent WebSocket connections from one client address (0: no limit); further
    /// upgrades from it get 429 `too_many_connections`.
    #[arg(long, env = "COURIER_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 256)]
    pub max_connections_per_address: usize,

    /// Which proxies in front of the broadcaster to believe about the client address
    /// (`X-Forwarded-For`): `0` none (the peer is the client), a hop count (`1` behind one
    /// Ingress), or a comma-separated CIDR list of the proxies' addresses.
    #[arg(long, env = "COURIER_TRUSTED_PROXIES", default_value = "0")]
    pub trusted_proxies: courier_core::client_addr::TrustedProxies,

    /// How long shutdown waits for connections to close after sending 1001: `250ms`, `5s`, `2m`,
    /// `1h` (a bare number is milliseconds).
    #[arg(
        long = "shutdown-grace-ms",
        env = "COURIER_SHUTDOWN_GRACE_MS",
        value_parser = millis_or_duration,
        default_value = "5s"
    )]
    pub shutdown_grace: Duration,

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
    /// Defaults for the given NATS, listening on an ephemeral local port (tests, tools). No
    /// collections file: set `collections_file` (and clear `public_channels`) to have one;
    /// without, every collection's channels are public (`public_channels`).
    pub fn for_local(nats_url: &str) -> Self {
        let mut config = BroadcasterConfig::parse_from(["courier-broadcaster"]);
        config.listen = "127.0.0.1:0".parse().expect("valid address");
        config.nats.nats_url = nats_url.to_owned();
        config.public_channels = true;
        config
    }

    /// The read rules' source: refuses to run open by accident (no file and no
    /// `--public-channels`) or with both.
    pub fn channel_rules(&self) -> Result<Option<&std::path::Path>, &'static str> {
        match (&self.collections_file, self.public_channels) {
            (Some(path), false) => Ok(Some(path)),
            (None, true) => Ok(None),
            (None, false) => {
                Err("no collections file: set COURIER_COLLECTIONS_FILE (--collections-file), or \
                 COURIER_PUBLIC_CHANNELS=true (--public-channels) to make every channel public")
            }
            (Some(_), true) => {
                Err("COURIER_COLLECTIONS_FILE and COURIER_PUBLIC_CHANNELS exclude each other: the \
                 file's read rules decide, or every channel is public")
            }
        }
    }

    pub fn node(&self) -> String {
        self.node_name.clone().unwrap_or_else(courier_core::config::instance_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_or_the_legacy_bare_milliseconds() {
        let three = Duration::from_secs(3);
        for text in ["3000ms", "3s", "3000"] {
            let config = BroadcasterConfig::try_parse_from([
                "courier-broadcaster",
                "--collections-reload-interval-ms",
                text,
                "--send-timeout-ms",
                text,
                "--ping-interval-ms",
                text,
                "--shutdown-grace-ms",
                text,
            ])
            .unwrap_or_else(|err| panic!("{text}: {err}"));
            assert_eq!(
                [
                    config.collections_reload_interval,
                    config.send_timeout,
                    config.ping_interval,
                    config.shutdown_grace,
                ],
                [three; 4],
                "{text}"
            );
        }
        let defaults = BroadcasterConfig::parse_from(["courier-broadcaster"]);
        assert_eq!(defaults.ping_interval, Duration::from_secs(20));
        assert_eq!(defaults.send_timeout, Duration::from_secs(5));
        for bad in ["50ms", "0", "soon"] {
            assert!(
                BroadcasterConfig::try_parse_from([
                    "courier-broadcaster",
                    "--collections-reload-interval-ms",
                    bad
                ])
                .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn it_needs_a_collections_file_or_public_channels_but_not_both() {
        let parse = |args: &[&str]| {
            let all = [&["courier-broadcaster"], args].concat();
            BroadcasterConfig::try_parse_from(all).unwrap()
        };
        assert!(parse(&[]).channel_rules().unwrap_err().contains("COURIER_PUBLIC_CHANNELS"));
        let file = parse(&["--collections-file", "c.yaml"]);
        assert_eq!(file.channel_rules(), Ok(Some(std::path::Path::new("c.yaml"))));
        assert_eq!(parse(&["--public-channels"]).channel_rules(), Ok(None));
        assert_eq!(parse(&["--public-channels", "true"]).channel_rules(), Ok(None));
        let both = parse(&["--collections-file", "c.yaml", "--public-channels"]);
        assert!(both.channel_rules().unwrap_err().contains("exclude each other"));
        let defaults = parse(&[]);
        assert_eq!((defaults.max_connections_per_address, defaults.max_channels), (256, 100_000));
        assert_eq!((defaults.max_replays_per_connection, defaults.max_replays), (4, 64));
        assert_eq!(defaults.channel_buffer_bytes, 4 * 1024 * 1024);
    }

    #[test]
    fn the_node_name_defaults_to_the_instance_id() {
        let config = BroadcasterConfig::for_local("nats://x");
        assert_eq!(config.node(), courier_core::config::instance_id());
        let named =
            BroadcasterConfig::try_parse_from(["courier-broadcaster", "--node-name", "b-0"])
                .unwrap();
        assert_eq!(named.node(), "b-0");
    }
}
