//! Config pieces every service shares, read from flags with `COURIER_*` environment fallbacks,
//! and the one way services connect to NATS.

use std::time::Duration;

use clap::{Args, ValueEnum};

/// How logs are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, coloured: for local development.
    Pretty,
    /// One JSON object per line: for Kubernetes and log shippers.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Log format.
    #[arg(long, env = "COURIER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` EnvFilter syntax, e.g. `info,courier_api=debug`.
    #[arg(long, env = "COURIER_LOG", default_value = "info")]
    pub log_filter: String,
}

#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma separated.
    #[arg(long = "nats-url", env = "COURIER_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Replicas for the JetStream streams Courier creates (3 on a production NATS cluster).
    #[arg(long, env = "COURIER_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
}

/// Connects to NATS without waiting for the server: the client keeps retrying in the background
/// (initial connect included), so a service starts, and reports not-ready, while NATS is down.
pub async fn connect_nats(
    url: &str,
    client_name: &str,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::new()
        .name(client_name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempts| {
            // 50 ms, 100 ms, … capped at 2 s: fast recovery after a NATS restart.
            Duration::from_millis((50u64 << attempts.min(6)).min(2_000))
        })
        .connect(url)
        .await
}
