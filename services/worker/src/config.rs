//! The worker's typed configuration: flags with `COURIER_*` environment fallbacks.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use courier_core::{
    backoff::Backoff,
    config::{MAX_DURATION, NatsArgs, TelemetryArgs, duration_in, millis_or_duration},
};

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
    /// their results (`pets.enrich` writes the pet's `enrichment`). `--help` never shows its
    /// value from the environment: it usually carries the password.
    #[arg(
        long,
        env = "COURIER_MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017/?directConnection=true",
        hide_env_values = true
    )]
    pub mongodb_uri: String,

    /// Database holding the documents, the outbox and the task results.
    #[arg(long, env = "COURIER_MONGODB_DATABASE", default_value = "courier")]
    pub mongodb_database: String,

    /// How long a store operation waits for MongoDB before the task is retried: `250ms`, `5s`,
    /// `2m`, `1h` (a bare number is milliseconds).
    #[arg(
        long = "mongodb-timeout",
        env = "COURIER_MONGODB_TIMEOUT",
        value_parser = millis_or_duration,
        default_value = "3s"
    )]
    pub mongodb_timeout: Duration,

    /// Server-side time limit of every MongoDB query and commit (maxTimeMS); a task whose query
    /// runs longer is retried. `250ms`, `5s`, `2m` (a bare number is milliseconds).
    #[arg(long, env = "COURIER_MONGODB_QUERY_TIMEOUT", value_parser = duration_in(millis_or_duration, Duration::from_millis(1), Duration::from_secs(600)), default_value = "5s")]
    pub mongodb_query_timeout: Duration,

    /// This worker's id in task results and logs (defaults to `<host name>-<pid>`).
    #[arg(long, env = "COURIER_WORKER_ID")]
    pub worker_id: Option<String>,

    /// Tasks processed at once by this process.
    #[arg(long, env = "COURIER_WORKER_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,

    /// Deliveries of a task before it goes to the dead-letter stream.
    #[arg(long, env = "COURIER_WORKER_MAX_DELIVER", default_value_t = 5)]
    pub max_deliver: i64,

    /// How long a delivered task may stay unacknowledged before redelivery: `250ms`, `5s`, `2m`,
    /// `1h` (a bare number is milliseconds; at least 100 ms).
    #[arg(
        long = "ack-wait-ms",
        env = "COURIER_WORKER_ACK_WAIT_MS",
        value_parser = duration_in(millis_or_duration, Duration::from_millis(100), MAX_DURATION),
        default_value = "30s"
    )]
    pub ack_wait: Duration,

    /// First retry delay after a transient failure: `250ms`, `5s`, `2m`, `1h` (a bare number is
    /// milliseconds); doubles per attempt up to the max, each delay jittered by up to half.
    #[arg(
        long = "backoff-base-ms",
        env = "COURIER_WORKER_BACKOFF_BASE_MS",
        value_parser = millis_or_duration,
        default_value = "1s"
    )]
    pub backoff_base: Duration,

    /// Longest retry delay: `250ms`, `5s`, `2m`, `1h` (a bare number is milliseconds).
    #[arg(
        long = "backoff-max-ms",
        env = "COURIER_WORKER_BACKOFF_MAX_MS",
        value_parser = millis_or_duration,
        default_value = "60s"
    )]
    pub backoff_max: Duration,

    /// The collections file (`collections.yaml` format) whose `webhook:` tasks this worker
    /// delivers; none: only the built-in handlers. Read at start-up.
    #[arg(long, env = "COURIER_COLLECTIONS_FILE")]
    pub collections_file: Option<std::path::PathBuf>,

    /// Where webhooks may be sent: comma-separated URL prefixes (`https://hooks.example.com/`)
    /// and host patterns (`hooks.example.com`, `*.example.com`). Empty: no webhook is allowed,
    /// and a collections file naming one is refused at start-up.
    #[arg(long, env = "COURIER_WEBHOOK_ALLOWED_URLS", default_value = "")]
    pub webhook_allowed_urls: String,

    /// Let webhook deliveries connect to loopback, link-local and private addresses (refused by
    /// default, judged on the resolved address). For local development only.
    #[arg(long, env = "COURIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS", default_value_t = false)]
    pub webhook_allow_private_networks: bool,

    /// Deliveries in flight at once per webhook (different documents; one document's go one
    /// at a time).
    #[arg(long, env = "COURIER_WEBHOOK_CONCURRENCY", default_value_t = 4)]
    pub webhook_concurrency: usize,

    /// Test-only fault injection: `delay:<duration>` sleeps before every task (a slow handler, to
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
            .and_then(|delay| millis_or_duration(delay).ok())
            .map(Fault::Delay)
            .ok_or_else(|| {
                format!("unknown fault '{text}' (expected delay:<duration> or exit-after-commit)")
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

    /// The webhook allow-list from `webhook_allowed_urls` and `webhook_allow_private_networks`.
    pub fn webhook_allow_list(&self) -> Result<courier_core::webhook::AllowList, String> {
        Ok(courier_core::webhook::AllowList::parse(&self.webhook_allowed_urls)?
            .with_private_networks(self.webhook_allow_private_networks))
    }

    pub fn worker_id(&self) -> String {
        self.worker_id.clone().unwrap_or_else(courier_core::config::instance_id)
    }

    /// The redelivery pacing: from `backoff_base` doubling up to `backoff_max`, jittered.
    pub fn retry_backoff(&self) -> Backoff {
        Backoff::with_min(self.backoff_base, self.backoff_max)
    }

    /// Delay before retry number `attempt` (1 = first retry): jittered within the upper half of
    /// base × 2^(attempt-1), capped at the max.
    pub fn backoff(&self, attempt: i64) -> Duration {
        let retry = u32::try_from(attempt.saturating_sub(1).max(0)).unwrap_or(u32::MAX);
        self.retry_backoff().delay_for(retry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let mut config = WorkerConfig::for_local("nats://x");
        config.backoff_base = Duration::from_millis(100);
        config.backoff_max = Duration::from_secs(1);
        let ceilings: Vec<u128> =
            (0..6).map(|retry| config.retry_backoff().ceiling(retry).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1_000, 1_000]);
        for (attempt, ceiling) in (1..=6).zip(ceilings) {
            let delay = config.backoff(attempt).as_millis();
            assert!(delay >= ceiling / 2 && delay <= ceiling, "attempt {attempt}: {delay} ms");
        }
        assert!(config.backoff(0) <= Duration::from_millis(100), "no attempt counts as the first");
        assert!(config.backoff(i64::MAX) <= Duration::from_secs(1));
    }

    #[test]
    fn faults_parse() {
        assert_eq!(Fault::parse("delay:250"), Ok(Fault::Delay(Duration::from_millis(250))));
        assert_eq!(Fault::parse("delay:30s"), Ok(Fault::Delay(Duration::from_secs(30))));
        assert_eq!(Fault::parse("exit-after-commit"), Ok(Fault::ExitAfterCommit));
        assert!(Fault::parse("delay:soon").is_err());
    }

    #[test]
    fn durations_take_a_unit_or_the_legacy_bare_milliseconds() {
        let three = Duration::from_secs(3);
        for text in ["3000ms", "3s", "3000"] {
            let config = WorkerConfig::try_parse_from([
                "courier-worker",
                "--mongodb-timeout",
                text,
                "--ack-wait-ms",
                text,
                "--backoff-base-ms",
                text,
                "--backoff-max-ms",
                text,
            ])
            .unwrap_or_else(|err| panic!("{text}: {err}"));
            assert_eq!(
                [config.mongodb_timeout, config.ack_wait, config.backoff_base, config.backoff_max],
                [three; 4],
                "{text}"
            );
        }
        let defaults = WorkerConfig::parse_from(["courier-worker"]);
        assert_eq!(defaults.ack_wait, Duration::from_secs(30));
        assert_eq!(defaults.backoff_max, Duration::from_secs(60));
        assert!(WorkerConfig::try_parse_from(["courier-worker", "--ack-wait-ms", "10ms"]).is_err());
    }

    #[test]
    fn the_worker_id_defaults_to_the_instance_id() {
        let config = WorkerConfig::for_local("nats://x");
        assert_eq!(config.worker_id(), courier_core::config::instance_id());
    }
}
