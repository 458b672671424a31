//! `courier bench`: load generators whose figures go in docs/benchmarks.md.
//! `latency` measures POST → WebSocket delivery end to end, with percentiles; `fanout` and
//! `connections` (in [`crate::fanout`]) measure the broadcaster's fan-out and its idle cost;
//! `api` and `worker` (in [`crate::throughput`]) the write path and the task pipeline.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use courier_core::protocol::ServerFrame;
use futures::{StreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::WsClient;

// Parsed once from the command line and matched once: its size costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Subcommand)]
pub enum BenchCommand {
    /// POST documents and time each until its `created` event reaches a WebSocket subscriber.
    Latency(LatencyArgs),
    /// N subscribers, events at a set rate: deliveries/s, latency, loss, server CPU and RSS.
    Fanout(crate::fanout::FanoutArgs),
    /// Hold N idle subscribed connections: RSS per connection and ping round trips meanwhile.
    Connections(crate::fanout::ConnectionsArgs),
    /// Creates through the api for a while, then a driver insert + JetStream publish: the ratio.
    Api(crate::throughput::ApiBenchArgs),
    /// N tasks through W courier-worker processes, then through W bare pull + ack loops.
    Worker(crate::throughput::WorkerBenchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct LatencyArgs {
    #[arg(long, env = "COURIER_API_URL", default_value = "http://127.0.0.1:8000")]
    pub api: String,
    #[arg(long = "ws", env = "COURIER_WS_URL", default_value = "ws://127.0.0.1:8765/ws")]
    pub ws: String,
    /// How many documents to POST.
    #[arg(long, default_value_t = 500)]
    pub posts: usize,
    /// POSTs in flight at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Collection to write (its schema must accept the generated product body).
    #[arg(long, default_value = "products")]
    pub collection: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Keep the documents the run created (by default they are deleted at the end).
    #[arg(long)]
    pub keep: bool,
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Latency(args) => {
            let report = latency(&args).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
        BenchCommand::Fanout(args) => {
            // A subscriber process (`--procs`) prints its own result line.
            if let Some(report) = crate::fanout::fanout(&args).await? {
                print_report(&report, args.json)?;
            }
            Ok(())
        }
        BenchCommand::Connections(args) => {
            let report = crate::fanout::connections(&args).await?;
            print_report(&report, args.json)
        }
        BenchCommand::Api(args) => {
            let report = crate::throughput::api(&args).await?;
            print_report(&report, args.servers.json)
        }
        BenchCommand::Worker(args) => {
            let report = crate::throughput::worker(&args).await?;
            print_report(&report, args.servers.json)
        }
    }
}

fn print_report<R: serde::Serialize + std::fmt::Display>(
    report: &R,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

/// Results of a latency run, in milliseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LatencyReport {
    pub posts: usize,
    pub concurrency: usize,
    pub delivered: usize,
    pub elapsed_secs: f64,
    pub posts_per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl std::fmt::Display for LatencyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "POST→WS latency over {} posts (concurrency {}): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {:.0} posts/s; {} delivered",
            self.posts,
            self.concurrency,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.max_ms,
            self.posts_per_sec,
            self.delivered
        )
    }
}

/// Per document: when its POST started and when its event arrived (either may come first).
#[derive(Default)]
struct Timings {
    sent: HashMap<String, Instant>,
    arrived: HashMap<String, Instant>,
    latencies: Vec<Duration>,
    /// Every document the run created (to delete afterwards).
    ids: Vec<String>,
}

/// The body of a bench's `n`th product named `name` (the shipped `products` schema).
pub(crate) fn product(name: &str, n: u64) -> serde_json::Value {
    serde_json::json!({"nombre": name, "precio": (n % 100) as f64 + 0.99, "talla": "M"})
}

/// The `p` quantile (0–1) of sorted `latencies` in ms; 0 when there are none.
fn percentile_ms(latencies: &[Duration], p: f64) -> f64 {
    if latencies.is_empty() {
        return 0.0;
    }
    let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
    latencies[index].as_secs_f64() * 1000.0
}

/// Deletes the run's documents; failures are reported, not fatal (the numbers are measured).
pub(crate) async fn delete_all(
    http: &reqwest::Client,
    collection_url: &str,
    ids: &[String],
    concurrency: usize,
) {
    let failed = stream::iter(ids)
        .map(|id| async move {
            http.delete(format!("{collection_url}/{id}"))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false)
        })
        .buffer_unordered(concurrency.max(4))
        .filter(|deleted| std::future::ready(!deleted))
        .count()
        .await;
    if failed > 0 {
        eprintln!("warning: {failed} of {} bench documents could not be deleted", ids.len());
    }
}

impl Timings {
    fn record(&mut self, doc_id: String, sent: Option<Instant>, arrived: Option<Instant>) {
        if sent.is_some() {
            self.ids.push(doc_id.clone());
        }
        let sent = sent.or_else(|| self.sent.remove(&doc_id));
        let arrived = arrived.or_else(|| self.arrived.remove(&doc_id));
        match (sent, arrived) {
            (Some(s), Some(a)) => self.latencies.push(a.saturating_duration_since(s)),
            (Some(s), None) => {
                self.sent.insert(doc_id, s);
            }
            (None, Some(a)) => {
                self.arrived.insert(doc_id, a);
            }
            (None, None) => {}
        }
    }
}

pub async fn latency(args: &LatencyArgs) -> anyhow::Result<LatencyReport> {
    if args.posts == 0 || args.concurrency == 0 {
        bail!("--posts and --concurrency must be at least 1");
    }
    let mut ws = WsClient::connect(&args.ws).await?;
    ws.subscribe(&args.collection, None, None).await?;
    let timings = Arc::new(Mutex::new(Timings::default()));
    // Names of this run's documents start with this, so other writers' events are not counted.
    let run_prefix = format!("bench-{}-", uuid::Uuid::now_v7().simple());

    let reader = {
        let timings = timings.clone();
        let expected = args.posts;
        let (created_type, prefix) = (format!("{}.created", args.collection), run_prefix.clone());
        tokio::spawn(async move {
            let mut seen = 0;
            while seen < expected {
                match ws.next_frame_within(Duration::from_secs(30)).await {
                    Ok(ServerFrame::Event { event, .. })
                        if event.event_type == created_type
                            && event.data["nombre"]
                                .as_str()
                                .is_some_and(|n| n.starts_with(&prefix)) =>
                    {
                        seen += 1;
                        timings.lock().expect("timings lock").record(
                            event.doc_id,
                            None,
                            Some(Instant::now()),
                        );
                    }
                    Ok(_) => {}
                    Err(err) => {
                        return Err(anyhow::anyhow!(
                            "subscriber stopped after {seen} events: {err}"
                        ));
                    }
                }
            }
            Ok(())
        })
    };

    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/{}", args.api.trim_end_matches('/'), args.collection);
    let progress = ProgressBar::new(args.posts as u64).with_style(
        ProgressStyle::with_template("{spinner} {bar:40} {pos}/{len} posts  {per_sec}  eta {eta}")
            .expect("valid template"),
    );
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = stream::iter(0..args.posts)
        .map(|i| {
            let (http, url, timings, progress) =
                (http.clone(), url.clone(), timings.clone(), progress.clone());
            let name = format!("{run_prefix}{i}");
            async move {
                let body = product(&name, i as u64);
                let sent = Instant::now();
                let response = http.post(&url).json(&body).send().await.context("POST failed")?;
                let status = response.status();
                let created: serde_json::Value =
                    response.json().await.context("POST response is not JSON")?;
                if !status.is_success() {
                    bail!("POST answered {status}: {created}");
                }
                let id = created["id"].as_str().context("POST response has no id")?.to_owned();
                timings.lock().expect("timings lock").record(id, Some(sent), None);
                progress.inc(1);
                Ok(())
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    progress.finish_and_clear();
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .context("events did not all arrive within 60 s")??
        .context("subscriber failed")?;
    let elapsed = started.elapsed();

    let (mut latencies, ids) = {
        let mut timings = timings.lock().expect("timings lock");
        (std::mem::take(&mut timings.latencies), std::mem::take(&mut timings.ids))
    };
    if !args.keep {
        delete_all(&http, &url, &ids, args.concurrency).await;
    }
    latencies.sort_unstable();
    let pct = |p: f64| percentile_ms(&latencies, p);
    Ok(LatencyReport {
        posts: args.posts,
        concurrency: args.concurrency,
        delivered: latencies.len(),
        elapsed_secs: elapsed.as_secs_f64(),
        posts_per_sec: args.posts as f64 / elapsed.as_secs_f64(),
        p50_ms: pct(0.50),
        p90_ms: pct(0.90),
        p99_ms: pct(0.99),
        max_ms: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_measured_whichever_side_comes_first() {
        let mut t = Timings::default();
        let start = Instant::now();
        let later = start + Duration::from_millis(5);
        t.record("a".into(), None, Some(later)); // event before the POST answered
        t.record("a".into(), Some(start), None);
        t.record("b".into(), Some(start), None);
        t.record("b".into(), None, Some(later));
        assert_eq!(t.latencies, [Duration::from_millis(5); 2]);
        assert!(t.sent.is_empty() && t.arrived.is_empty());
        assert_eq!(t.ids, ["a", "b"]);
    }

    #[test]
    fn percentiles_of_nothing_are_zero_and_of_one_value_that_value() {
        assert_eq!(percentile_ms(&[], 0.99), 0.0);
        assert_eq!(percentile_ms(&[Duration::from_millis(7)], 0.5), 7.0);
        let ten: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(
            (percentile_ms(&ten, 0.5), percentile_ms(&ten, 0.9), percentile_ms(&ten, 0.99)),
            (5.0, 9.0, 10.0)
        );
    }
}
