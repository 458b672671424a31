//! `courier bench api` and `courier bench worker`: Courier's write path and task pipeline, each
//! beside a raw baseline on the same servers at the same concurrency (a driver insert plus a
//! JetStream publish; a JetStream pull + ack loop), so a run prints what Courier costs over the
//! bare parts as one ratio.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, pull},
    message::PublishMessage,
};
use clap::Args;
use courier_core::{
    Priority, Task,
    config::seconds_or_duration,
    jetstream::{StreamSettings, events_stream_config, tasks_stream_config},
    subjects::{DLQ_STREAM, TASKS_STREAM, workers_consumer},
};
use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use mongodb::bson::{Document, doc, oid::ObjectId};
use tokio::process::{Child, Command};

use crate::probe::Histogram;

/// Where the servers are (shared by both subcommands).
#[derive(Debug, Clone, Args)]
pub struct Servers {
    #[arg(
        long,
        env = "COURIER_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub nats: String,
    #[arg(
        long = "mongodb-uri",
        env = "COURIER_MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017/?directConnection=true",
        hide_env_values = true
    )]
    pub mongodb_uri: String,
    /// Database for the baseline's (or the pets') documents: a fresh one per run by default,
    /// dropped afterwards.
    #[arg(long)]
    pub database: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ApiBenchArgs {
    #[arg(long, env = "COURIER_API_URL", default_value = "http://127.0.0.1:8000")]
    pub api: String,
    /// Requests (and baseline writes) in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// How long each side runs (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = seconds_or_duration)]
    pub duration: Duration,
    /// Keep the documents the api run created (by default they are deleted at the end).
    #[arg(long)]
    pub keep: bool,
    #[command(flatten)]
    pub servers: Servers,
}

#[derive(Debug, Clone, Args)]
pub struct WorkerBenchArgs {
    /// Tasks to enqueue (each side).
    #[arg(long, default_value_t = 2_000)]
    pub tasks: usize,
    /// `courier-worker` processes to start (the binary next to this one); 0 uses workers that
    /// are already running. The baseline runs as many pull loops.
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// Task kind: `system.noop` (the queue machinery alone), `pets.enrich` (+ a read, a
    /// transaction and an event per task) or `webhook` (a signed POST per task to a receiver
    /// this command runs on 127.0.0.1; the baseline is then `system.noop` through the same
    /// workers).
    #[arg(long, default_value = "system.noop", value_parser = ["system.noop", "pets.enrich", "webhook"])]
    pub kind: String,
    /// Tasks each worker (and each baseline loop) holds at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Give up after this long.
    #[arg(long, default_value = "5m", value_parser = seconds_or_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub servers: Servers,
}

/// One side of a comparison.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Side {
    pub operations: u64,
    pub errors: u64,
    pub elapsed_secs: f64,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Side {
    fn new(operations: u64, errors: u64, elapsed: Duration, latency: Option<&Histogram>) -> Self {
        let elapsed_secs = elapsed.as_secs_f64();
        let quantile = |p| latency.map_or(0.0, |h| h.quantile_ms(p));
        Side {
            operations,
            errors,
            elapsed_secs,
            per_sec: operations as f64 / elapsed_secs.max(1e-9),
            p50_ms: quantile(0.5),
            p90_ms: quantile(0.9),
            p99_ms: quantile(0.99),
            max_ms: quantile(1.0),
        }
    }
}

/// `courier bench api`'s result: Courier's create path beside a driver insert + publish.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiBenchReport {
    pub concurrency: usize,
    pub courier: Side,
    pub baseline: Side,
    /// Courier's creates/s over the baseline's writes/s.
    pub ratio: f64,
    pub bench_cpu_share: Option<f64>,
}

/// `courier bench worker`'s result: tasks through the workers beside a bare pull + ack loop.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerBenchReport {
    pub tasks: usize,
    pub workers: usize,
    pub kind: String,
    pub courier: Side,
    pub baseline: Side,
    pub dead_lettered: u64,
    /// Courier's tasks/s over the baseline's.
    pub ratio: f64,
}

fn table(
    f: &mut std::fmt::Formatter<'_>,
    unit: &str,
    courier: &Side,
    baseline: &Side,
    ratio: f64,
) -> std::fmt::Result {
    writeln!(
        f,
        "{:<10} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "", unit, "errors", "p50 ms", "p90 ms", "p99 ms", "max ms"
    )?;
    for (name, side) in [("courier", courier), ("baseline", baseline)] {
        writeln!(
            f,
            "{name:<10} {:>10.0} {:>8} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
            side.per_sec, side.errors, side.p50_ms, side.p90_ms, side.p99_ms, side.max_ms
        )?;
    }
    writeln!(f, "ratio (courier / baseline): {ratio:.2}")
}

impl std::fmt::Display for ApiBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "creates: the api (HTTP, schema, transaction with the outbox, publish) vs a driver insert + JetStream publish; concurrency {}",
            self.concurrency
        )?;
        table(f, "ops/s", &self.courier, &self.baseline, self.ratio)
    }
}

impl std::fmt::Display for WorkerBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let against = if self.kind == "webhook" {
            "the same tasks as system.noop through the same workers (the bare pipeline)"
        } else {
            "as many JetStream pull + ack loops"
        };
        writeln!(
            f,
            "{} {} tasks, enqueue to drained: {} worker process(es) vs {against}",
            self.tasks, self.kind, self.workers
        )?;
        for (name, side) in [("courier", &self.courier), ("baseline", &self.baseline)] {
            writeln!(f, "{name:<10} {:>10.0} tasks/s  ({:.2} s)", side.per_sec, side.elapsed_secs)?;
        }
        writeln!(f, "dead-lettered: {}", self.dead_lettered)?;
        writeln!(f, "ratio (courier / baseline): {:.2}", self.ratio)
    }
}

fn spinner(message: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(message);
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("template"));
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Runs `operation` from `concurrency` loops until `duration` has passed: counts and latency.
async fn closed_loop<F, Fut>(
    concurrency: usize,
    duration: Duration,
    label: &str,
    operation: F,
) -> Side
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let progress = spinner(format!("{label}: {concurrency} in flight for {duration:?}"));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let loops = (0..concurrency).map(|_| {
        let (operation, next) = (operation.clone(), next.clone());
        tokio::spawn(async move {
            let (mut latency, mut ok, mut errors) = (Histogram::default(), 0u64, 0u64);
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                if operation(n).await {
                    ok += 1;
                    latency.record(sent.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (latency, ok, errors)
        })
    });
    let (mut latency, mut ok, mut errors) = (Histogram::default(), 0, 0);
    for result in futures::future::join_all(loops).await.into_iter().flatten() {
        latency.merge(&result.0);
        ok += result.1;
        errors += result.2;
    }
    progress.finish_and_clear();
    Side::new(ok, errors, started.elapsed(), Some(&latency))
}

async fn connect(servers: &Servers) -> anyhow::Result<(jetstream::Context, mongodb::Database)> {
    let nats = async_nats::connect(&servers.nats)
        .await
        .with_context(|| format!("cannot reach NATS at {}", servers.nats))?;
    let js = jetstream::new(nats);
    let database = servers
        .database
        .clone()
        .unwrap_or_else(|| format!("courier_bench_{}", uuid::Uuid::now_v7().simple()));
    let store = mongodb::Client::with_uri_str(&servers.mongodb_uri)
        .await
        .context("invalid MongoDB URI")?
        .database(&database);
    Ok((js, store))
}

/// A scratch copy of `config` under another name and subject, for the baseline (deleted after).
fn scratch_stream(
    mut config: jetstream::stream::Config,
    run: &str,
    prefix: &str,
) -> jetstream::stream::Config {
    config.name = format!("BENCH_{prefix}_{run}").to_uppercase();
    config.subjects = vec![format!("bench.{run}.{prefix}.>")];
    config.description = Some("courier bench baseline (deleted at the end of the run)".into());
    config
}

pub async fn api(args: &ApiBenchArgs) -> anyhow::Result<ApiBenchReport> {
    if args.concurrency == 0 || args.duration.is_zero() {
        bail!("--concurrency and --duration must be above 0");
    }
    let run = uuid::Uuid::now_v7().simple().to_string()[..12].to_owned();
    let (js, store) = connect(&args.servers).await?;
    let cpu_before = crate::probe::cpu_secs("self");
    let wall = Instant::now();

    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/products", args.api.trim_end_matches('/'));
    let created = Arc::new(std::sync::Mutex::new(Vec::new()));
    let courier = closed_loop(args.concurrency, args.duration, "api creates", {
        let (http, url, run, created) = (http.clone(), url.clone(), run.clone(), created.clone());
        move |n| {
            let (http, url, body, created) = (
                http.clone(),
                url.clone(),
                crate::bench::product(&format!("bench-{run}-{n}"), n),
                created.clone(),
            );
            async move {
                let Ok(response) = http.post(&url).json(&body).send().await else { return false };
                if response.status() != reqwest::StatusCode::CREATED {
                    return false;
                }
                let Ok(document) = response.json::<serde_json::Value>().await else { return false };
                if let Some(id) = document["id"].as_str() {
                    created.lock().expect("created ids").push(id.to_owned());
                }
                true
            }
        }
    })
    .await;

    let stream = js
        .create_stream(scratch_stream(
            events_stream_config(&StreamSettings::with_replicas(1)),
            &run,
            "events",
        ))
        .await
        .context("creating the baseline's scratch stream")?;
    let collection = store.collection::<Document>("bench_baseline");
    let baseline = closed_loop(args.concurrency, args.duration, "baseline writes", {
        let (js, run) = (js.clone(), run.clone());
        move |n| {
            let (js, collection, run) = (js.clone(), collection.clone(), run.clone());
            async move {
                let body = crate::bench::product(&format!("bench-{run}-{n}"), n);
                let Ok(document) = mongodb::bson::to_document(&body) else { return false };
                let Ok(inserted) = collection.insert_one(document).await else { return false };
                let id =
                    inserted.inserted_id.as_object_id().map(|id| id.to_hex()).unwrap_or_default();
                let subject = format!("bench.{run}.events.{id}.created");
                let payload = serde_json::to_vec(&body).unwrap_or_default();
                let publish = PublishMessage::build().payload(payload.into()).message_id(id);
                match js.send_publish(subject, publish).await {
                    Ok(ack) => ack.await.is_ok(),
                    Err(_) => false,
                }
            }
        }
    })
    .await;
    let bench_cpu_share = crate::probe::warn_if_saturated(cpu_before, wall.elapsed());

    let _ = js.delete_stream(stream.cached_info().config.name.clone()).await;
    if args.servers.database.is_none() {
        let _ = store.drop().await;
    } else {
        let _ = store.collection::<Document>("bench_baseline").drop().await;
    }
    if !args.keep {
        let ids = std::mem::take(&mut *created.lock().expect("created ids"));
        crate::bench::delete_all(&http, &url, &ids, args.concurrency).await;
    }
    let ratio = courier.per_sec / baseline.per_sec.max(1e-9);
    Ok(ApiBenchReport { concurrency: args.concurrency, courier, baseline, ratio, bench_cpu_share })
}

fn worker_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name("courier-worker");
    if !path.exists() {
        bail!("{} not found: build it (cargo build --bins)", path.display());
    }
    Ok(path)
}

/// Starts `n` `courier-worker` processes on `database` with `envs` added (killed when dropped).
fn start_workers(
    args: &WorkerBenchArgs,
    database: &str,
    envs: &[(String, String)],
) -> anyhow::Result<Vec<Child>> {
    if args.workers == 0 {
        return Ok(Vec::new());
    }
    let binary = worker_binary()?;
    (0..args.workers)
        .map(|n| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            Command::new(&binary)
                .env("COURIER_NATS_URL", &args.servers.nats)
                .env("COURIER_MONGODB_URI", &args.servers.mongodb_uri)
                .env("COURIER_MONGODB_DATABASE", database)
                .env("COURIER_WORKER_METRICS_LISTEN", format!("127.0.0.1:{port}"))
                .env("COURIER_WORKER_ID", format!("bench-{n}"))
                .env("COURIER_WORKER_CONCURRENCY", args.concurrency.to_string())
                .env("COURIER_LOG", "warn")
                .envs(envs.iter().cloned())
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))
        })
        .collect()
}

/// Publishes one task of `kind` per `doc_id` on `subject_of(task)`, pipelined a window at a time.
async fn enqueue(
    js: &jetstream::Context,
    subject_of: impl Fn(&Task) -> String,
    kind: &str,
    doc_ids: &[String],
) -> anyhow::Result<()> {
    for window in doc_ids.chunks(1_000) {
        let mut acks = Vec::with_capacity(window.len());
        for doc_id in window {
            let event = courier_core::Event::new(
                "pets",
                doc_id,
                courier_core::EventAction::Created,
                serde_json::json!({"id": doc_id, "name": "bench"}),
                None,
                "bench".into(),
            );
            let task = Task::new(kind, "pets", doc_id, 1, None, "bench".into()).with_event(event);
            let publish = PublishMessage::build()
                .payload(serde_json::to_vec(&task)?.into())
                .message_id(task.id.to_string());
            acks.push(js.send_publish(subject_of(&task), publish).await?);
        }
        for ack in acks {
            ack.await?;
        }
    }
    Ok(())
}

/// Waits until `stream` holds no message (a work queue drops a task once it is acked).
async fn drained(
    stream: &mut jetstream::stream::Stream,
    total: usize,
    deadline: Instant,
    progress: &ProgressBar,
) -> anyhow::Result<()> {
    loop {
        let left = stream.info().await?.state.messages;
        progress.set_position(total as u64 - left.min(total as u64));
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{left} tasks still queued at the timeout");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn task_bar(total: usize, label: &str) -> ProgressBar {
    ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template(&format!("{label} {{bar:40}} {{pos}}/{{len}} {{per_sec}}"))
            .expect("template"),
    )
}

pub async fn worker(args: &WorkerBenchArgs) -> anyhow::Result<WorkerBenchReport> {
    if args.tasks == 0 || args.concurrency == 0 {
        bail!("--tasks and --concurrency must be at least 1");
    }
    let (js, store) = connect(&args.servers).await?;
    let receiver =
        if args.kind == "webhook" { Some(WebhookReceiver::start().await?) } else { None };
    let envs = receiver.as_ref().map(|r| r.worker_envs(args.concurrency)).unwrap_or_default();
    let kind = if receiver.is_some() { WEBHOOK_BENCH_KIND } else { args.kind.as_str() };
    // The streams are the deployment's (the api or a worker creates them): never changed here.
    let workers = start_workers(args, store.name(), &envs)?;
    // Ready = every worker watches the (empty) normal line: one pull request each.
    let want = args.workers.max(1);
    let ready_by = Instant::now() + Duration::from_secs(30);
    let mut tasks_stream = loop {
        if let Ok(stream) = js.get_stream(TASKS_STREAM).await
            && let Ok(info) = stream.consumer_info(workers_consumer(Priority::Normal)).await
            && info.num_waiting >= want
        {
            break stream;
        }
        if Instant::now() > ready_by {
            bail!("no {want} worker(s) attached to {TASKS_STREAM} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let backlog = tasks_stream.info().await?.state.messages;
    if backlog > 0 {
        bail!("TASKS already holds {backlog} tasks: the measurement would include them");
    }
    let dead_before = js.get_stream(DLQ_STREAM).await?.info().await?.state.messages;
    let mut doc_ids = Vec::with_capacity(args.tasks);
    if args.kind == "pets.enrich" {
        const SPECIES: [&str; 5] = ["dog", "Cat", "rabbit", "hamster", "bird"];
        let pets: Vec<Document> = (0..args.tasks)
            .map(|n| {
                let id = ObjectId::new();
                doc_ids.push(id.to_hex());
                doc! {"_id": id, "_v": 1_i64, "name": format!("pet {n}"), "species": SPECIES[n % SPECIES.len()], "age": (n % 15) as i64, "vaccinated": n % 3 != 0}
            })
            .collect();
        for chunk in pets.chunks(1_000) {
            store.collection::<Document>("pets").insert_many(chunk).await.context("pets")?;
        }
    } else {
        doc_ids.extend((0..args.tasks).map(|n| format!("bench-{n}")));
    }

    let progress = task_bar(args.tasks, "workers ");
    let started = Instant::now();
    enqueue(&js, Task::subject, kind, &doc_ids).await?;
    drained(&mut tasks_stream, args.tasks, started + args.timeout, &progress).await?;
    let courier = Side::new(args.tasks as u64, 0, started.elapsed(), None);
    progress.finish_and_clear();
    let baseline = if let Some(receiver) = &receiver {
        let delivered = receiver.requests.load(Ordering::Acquire);
        if delivered < args.tasks as u64 {
            bail!("the receiver got {delivered} of {} webhooks", args.tasks);
        }
        // The bare pipeline: the same tasks through the same workers, doing nothing.
        let progress = task_bar(args.tasks, "noop    ");
        let started = Instant::now();
        enqueue(&js, Task::subject, NOOP_KIND, &doc_ids).await?;
        drained(&mut tasks_stream, args.tasks, started + args.timeout, &progress).await?;
        progress.finish_and_clear();
        Side::new(args.tasks as u64, 0, started.elapsed(), None)
    } else {
        Side::default()
    };
    drop(workers);
    let dead_lettered = js.get_stream(DLQ_STREAM).await?.info().await?.state.messages - dead_before;

    let baseline = match receiver {
        Some(receiver) => {
            receiver.stop();
            baseline
        }
        None => baseline_pull_loops(&js, args, &doc_ids).await?,
    };
    if args.servers.database.is_none() {
        let _ = store.drop().await;
    }
    let ratio = courier.per_sec / baseline.per_sec.max(1e-9);
    Ok(WorkerBenchReport {
        tasks: args.tasks,
        workers: args.workers,
        kind: args.kind.clone(),
        courier,
        baseline,
        dead_lettered,
        ratio,
    })
}

/// The same tasks through a scratch work-queue stream drained by `workers` pull loops of
/// `concurrency` messages each, every message double-acked as the worker does: the floor of
/// what any worker on JetStream can do here.
async fn baseline_pull_loops(
    js: &jetstream::Context,
    args: &WorkerBenchArgs,
    doc_ids: &[String],
) -> anyhow::Result<Side> {
    let run = uuid::Uuid::now_v7().simple().to_string()[..12].to_owned();
    let config =
        scratch_stream(tasks_stream_config(&StreamSettings::with_replicas(1)), &run, "tasks");
    let subject_prefix = format!("bench.{run}.tasks");
    let mut stream = js.create_stream(config).await.context("creating the scratch stream")?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: AckPolicy::Explicit,
            max_ack_pending: (args.workers.max(1) * args.concurrency) as i64,
            ..Default::default()
        })
        .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = (0..args.workers.max(1))
        .map(|_| {
            let (consumer, stop, batch) = (consumer.clone(), stop.clone(), args.concurrency);
            tokio::spawn(async move {
                while !stop.load(Ordering::Acquire) {
                    let Ok(messages) = consumer
                        .fetch()
                        .max_messages(batch)
                        .expires(Duration::from_millis(200))
                        .messages()
                        .await
                    else {
                        continue;
                    };
                    let _ = messages
                        .try_for_each_concurrent(batch, |message| async move {
                            let _ = message.double_ack().await;
                            Ok(())
                        })
                        .await;
                }
            })
        })
        .collect();
    let progress = task_bar(doc_ids.len(), "baseline");
    let started = Instant::now();
    let enqueued =
        enqueue(js, |task| format!("{subject_prefix}.{}", task.kind), &args.kind, doc_ids).await;
    let result = match enqueued {
        Ok(()) => drained(&mut stream, doc_ids.len(), started + args.timeout, &progress).await,
        Err(err) => Err(err),
    };
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    stop.store(true, Ordering::Release);
    for pull_loop in loops {
        let _ = pull_loop.await;
    }
    let _ = js.delete_stream(stream.cached_info().config.name.clone()).await;
    result?;
    Ok(Side::new(doc_ids.len() as u64, 0, elapsed, None))
}

/// The task kind `courier bench worker --kind webhook` declares as a webhook.
const WEBHOOK_BENCH_KIND: &str = "bench.webhook";
/// The built-in handler that does nothing (the webhook bench's baseline).
const NOOP_KIND: &str = "system.noop";

/// A receiver answering 204 to every POST, on 127.0.0.1, plus the collections and secret files
/// that point the workers' `bench.webhook` task at it (removed by [`WebhookReceiver::stop`]).
struct WebhookReceiver {
    requests: Arc<AtomicU64>,
    server: tokio::task::JoinHandle<()>,
    collections: PathBuf,
    secret: PathBuf,
}

impl WebhookReceiver {
    async fn start() -> anyhow::Result<Self> {
        use axum::{Router, http::StatusCode, routing::post};
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        let app = Router::new().route(
            "/hook",
            post(move || {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::AcqRel);
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let run = uuid::Uuid::now_v7().simple().to_string();
        let dir = std::env::temp_dir();
        let secret = dir.join(format!("courier-bench-{run}.secret"));
        std::fs::write(&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
        let collections = dir.join(format!("courier-bench-{run}.yaml"));
        let file = format!(
            "collections:\n  - name: pets\n    schema: {{type: object}}\n    tasks:\n      - kind: {WEBHOOK_BENCH_KIND}\n        on: [create]\n        webhook: {{url: 'http://127.0.0.1:{port}/hook', secret_file: '{}'}}\n",
            secret.display()
        );
        std::fs::write(&collections, file)?;
        Ok(WebhookReceiver { requests, server, collections, secret })
    }

    fn worker_envs(&self, concurrency: usize) -> Vec<(String, String)> {
        vec![
            ("COURIER_WEBHOOK_CONCURRENCY".into(), concurrency.to_string()),
            ("COURIER_COLLECTIONS_FILE".into(), self.collections.display().to_string()),
            ("COURIER_WEBHOOK_ALLOWED_URLS".into(), "127.0.0.1".into()),
            ("COURIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS".into(), "true".into()),
        ]
    }

    fn stop(self) {
        self.server.abort();
        let _ = std::fs::remove_file(&self.collections);
        let _ = std::fs::remove_file(&self.secret);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_side_of_no_time_does_not_divide_by_zero() {
        let side = Side::new(10, 1, Duration::ZERO, None);
        assert!(side.per_sec.is_finite() && side.per_sec > 0.0);
        assert_eq!((side.operations, side.errors, side.p99_ms), (10, 1, 0.0));
    }

    #[test]
    fn scratch_streams_never_overlap_courier_subjects() {
        let config = scratch_stream(
            tasks_stream_config(&StreamSettings::with_replicas(1)),
            "abc123",
            "tasks",
        );
        assert_eq!(config.name, "BENCH_TASKS_ABC123");
        assert_eq!(config.subjects, ["bench.abc123.tasks.>"]);
        assert_eq!(config.retention, jetstream::stream::RetentionPolicy::WorkQueue);
    }
}
