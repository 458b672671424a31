//! The worker's typed configuration: flags with `COURIER_*` environment fallbacks.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use courier_core::config::{NatsArgs, TelemetryArgs};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "courier-worker",
    about = "Courier worker: competing consumer on the TASKS work queue"
)]
pub struct WorkerConfig {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "COURIER_WORKER_METRICS_LISTEN", default_value = "0.0.0.0:9100")]
    pub metrics_listen: SocketAddr,

    #[command(flatten)]
    pub nats: NatsArgs,

    /// MongoDB connection string (a replica set, so transactions work): where handlers store
    /// their results (`pets.enrich` writes the pet's `enrichment`).
    #[arg(
        long,
        env = "COURIER_MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017/?directConnection=true"
    )]
    pub mongodb_uri: String,

    /// Database holding the documents, the outbox and the task results.
    #[arg(long, env = "COURIER_MONGODB_DATABASE", default_value = "courier")]
    pub mongodb_database: String,

    /// How long a store operation waits for MongoDB before the task is retried (ms).
    #[arg(long, env = "COURIER_MONGODB_TIMEOUT", default_value_t = 3_000)]
    pub mongodb_timeout_ms: u64,

    /// This worker's id in task results and logs (defaults to host name + pid).
    #[arg(long, env = "COURIER_WORKER_ID")]
    pub worker_id: Option<String>,

    /// Tasks processed at once by this process.
    #[arg(long, env = "COURIER_WORKER_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,

    /// Deliveries of a task before it goes to the dead-letter stream.
    #[arg(long, env = "COURIER_WORKER_MAX_DELIVER", default_value_t = 5)]
    pub max_deliver: i64,

    /// How long a delivered task may stay unacknowledged before redelivery (ms).
    #[arg(long, env = "COURIER_WORKER_ACK_WAIT_MS", default_value_t = 30_000)]
    pub ack_wait_ms: u64,

    /// First retry delay after a transient failure (ms); doubles per attempt.
    #[arg(long, env = "COURIER_WORKER_BACKOFF_BASE_MS", default_value_t = 1_000)]
    pub backoff_base_ms: u64,

    /// Longest retry delay (ms).
    #[arg(long, env = "COURIER_WORKER_BACKOFF_MAX_MS", default_value_t = 60_000)]
    pub backoff_max_ms: u64,

    /// Test-only fault injection: `delay:<ms>` sleeps before every task (a slow handler, to
    /// kill a worker mid-task); `exit-after-commit` exits right after a result commits, before
    /// the task is acknowledged (the redelivery must not apply it twice).
    #[arg(long, env = "COURIER_WORKER_FAULT", hide = true, value_parser = Fault::parse)]
    pub fault: Option<Fault>,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// Faults the tests inject into a real worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Sleep this long before handling each task.
    Delay(Duration),
    /// Exit (code 86) right after a task's result committed, before the ack.
    ExitAfterCommit,
}

impl Fault {
    fn parse(text: &str) -> Result<Self, String> {
        if text == "exit-after-commit" {
            return Ok(Fault::ExitAfterCommit);
        }
        text.strip_prefix("delay:")
            .and_then(|ms| ms.parse::<u64>().ok())
            .map(|ms| Fault::Delay(Duration::from_millis(ms)))
            .ok_or_else(|| {
                format!("unknown fault '{text}' (expected delay:<ms> or exit-after-commit)")
            })
    }
}

impl WorkerConfig {
    pub fn for_local(nats_url: &str) -> Self {
        let mut config = WorkerConfig::parse_from(["courier-worker"]);
        config.metrics_listen = "127.0.0.1:0".parse().expect("valid address");
        config.nats.nats_url = nats_url.to_owned();
        config
    }

    pub fn worker_id(&self) -> String {
        self.worker_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
            format!("{host}-{}", std::process::id())
        })
    }

    pub fn mongodb_timeout(&self) -> Duration {
        Duration::from_millis(self.mongodb_timeout_ms)
    }

    pub fn ack_wait(&self) -> Duration {
        Duration::from_millis(self.ack_wait_ms)
    }

    /// Delay before retry number `attempt` (1 = first retry): base × 2^(attempt-1), capped.
    pub fn backoff(&self, attempt: i64) -> Duration {
        let exponent = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let millis = self.backoff_base_ms.saturating_mul(1u64 << exponent);
        Duration::from_millis(millis.min(self.backoff_max_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let mut config = WorkerConfig::for_local("nats://x");
        config.backoff_base_ms = 100;
        config.backoff_max_ms = 1_000;
        let delays: Vec<u64> = (1..=6).map(|a| config.backoff(a).as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000]);
    }

    #[test]
    fn faults_parse() {
        assert_eq!(Fault::parse("delay:250"), Ok(Fault::Delay(Duration::from_millis(250))));
        assert_eq!(Fault::parse("exit-after-commit"), Ok(Fault::ExitAfterCommit));
        assert!(Fault::parse("delay:soon").is_err());
    }
}
