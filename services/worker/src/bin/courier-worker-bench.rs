//! `courier-worker-bench`: worker throughput. Starts `--workers` `courier-worker` processes (the
//! binary next to this one) against a running nats-server and store, enqueues `--tasks` tasks of
//! `--kind` at once and times until the work queue is empty: tasks/s across the workers.
//!
//! ```text
//! courier-worker-bench --tasks 2000 --workers 3 --kind system.noop   # the queue machinery alone
//! courier-worker-bench --tasks 1000 --workers 3 --kind pets.enrich   # + read, transaction, event
//! ```

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use clap::Parser;
use courier_core::{
    Priority, Task,
    jetstream::ensure_streams,
    subjects::{DLQ_STREAM, TASKS_STREAM, workers_consumer},
};
use mongodb::bson::{Document, doc, oid::ObjectId};
use tokio::process::{Child, Command};

#[derive(Debug, Parser)]
#[command(
    name = "courier-worker-bench",
    about = "Times N tasks through M courier-worker processes"
)]
struct Args {
    /// Tasks to enqueue.
    #[arg(long, default_value_t = 2_000)]
    tasks: usize,
    /// `courier-worker` processes to start (0: use workers that are already running).
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Task kind: `system.noop` (the queue alone) or `pets.enrich` (the full enrichment path).
    #[arg(long, default_value = "system.noop")]
    kind: String,
    #[arg(long, env = "COURIER_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    #[arg(
        long,
        env = "COURIER_MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017/?directConnection=true"
    )]
    mongodb_uri: String,
    /// Database for the pets (a fresh one per run by default, dropped afterwards).
    #[arg(long)]
    database: Option<String>,
    /// Concurrency of each started worker.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Give up after this long (s).
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

fn worker_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name("courier-worker");
    if !path.exists() {
        bail!("{} not found: build it (cargo build --bins)", path.display());
    }
    Ok(path)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let database = args
        .database
        .clone()
        .unwrap_or_else(|| format!("courier_bench_{}", uuid::Uuid::now_v7().simple()));
    let nats = async_nats::connect(&args.nats_url).await.context("connecting to NATS")?;
    let js = jetstream::new(nats.clone());
    ensure_streams(&js, courier_core::jetstream::StreamSettings::with_replicas(1))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut tasks_stream = js.get_stream(TASKS_STREAM).await?;
    let backlog = tasks_stream.info().await?.state.messages;
    if backlog > 0 {
        bail!("TASKS already holds {backlog} tasks: the measurement would include them");
    }
    let dead_before = js.get_stream(DLQ_STREAM).await?.info().await?.state.messages;

    let mut children: Vec<Child> = Vec::new();
    if args.workers > 0 {
        let binary = worker_binary()?;
        for n in 0..args.workers {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let child = Command::new(&binary)
                .env("COURIER_NATS_URL", &args.nats_url)
                .env("COURIER_MONGODB_URI", &args.mongodb_uri)
                .env("COURIER_MONGODB_DATABASE", &database)
                .env("COURIER_WORKER_METRICS_LISTEN", format!("127.0.0.1:{port}"))
                .env("COURIER_WORKER_ID", format!("bench-{n}"))
                .env("COURIER_WORKER_CONCURRENCY", args.concurrency.to_string())
                .env("COURIER_LOG", "warn")
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?;
            children.push(child);
        }
    }
    // Ready = every worker watches the (empty) normal-priority line: one pull request each.
    let want = args.workers.max(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tasks_stream.consumer_info(workers_consumer(Priority::Normal)).await {
            Ok(info) if info.num_waiting >= want => break,
            _ if Instant::now() > deadline => bail!("workers did not attach within 30 s"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }

    let store = mongodb::Client::with_uri_str(&args.mongodb_uri).await?.database(&database);
    let mut doc_ids = Vec::with_capacity(args.tasks);
    if args.kind == "pets.enrich" {
        const SPECIES: [&str; 9] =
            ["dog", "Cat", "rabbit", "hamster", "bird", "fish", "turtle", "horse", "axolotl"];
        let pets: Vec<Document> = (0..args.tasks)
            .map(|n| {
                let id = ObjectId::new();
                doc_ids.push(id.to_hex());
                doc! {"_id": id, "_v": 1_i64, "name": format!("pet {n}"), "species": SPECIES[n % SPECIES.len()], "age": (n % 15) as i64, "vaccinated": n % 3 != 0}
            })
            .collect();
        for chunk in pets.chunks(1_000) {
            store
                .collection::<Document>("pets")
                .insert_many(chunk)
                .await
                .context("inserting pets")?;
        }
    } else {
        doc_ids.extend((0..args.tasks).map(|n| format!("bench-{n}")));
    }

    let started = Instant::now();
    // Pipelined, a window at a time (the context caps the acks in flight).
    for window in doc_ids.chunks(1_000) {
        let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(window.len());
        for doc_id in window {
            let task = Task::new(&args.kind, "pets", doc_id, 1, None, "bench".into());
            let publish = PublishMessage::build()
                .payload(serde_json::to_vec(&task)?.into())
                .message_id(task.id.to_string());
            acks.push(js.send_publish(task.subject(), publish).await?);
        }
        for ack in acks {
            ack.await?;
        }
    }
    let enqueued = started.elapsed();
    let deadline = started + Duration::from_secs(args.timeout_secs);
    loop {
        let left = tasks_stream.info().await?.state.messages;
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{left} tasks still queued after {} s", args.timeout_secs);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let dead = js.get_stream(DLQ_STREAM).await?.info().await?.state.messages - dead_before;

    println!(
        "{} {} tasks through {} worker process(es): {:.2} s ({:.2} s to enqueue) → {:.0} tasks/s; dead-lettered: {dead}",
        args.tasks,
        args.kind,
        args.workers,
        elapsed.as_secs_f64(),
        enqueued.as_secs_f64(),
        args.tasks as f64 / elapsed.as_secs_f64()
    );
    if args.kind == "pets.enrich" {
        let enriched = store
            .collection::<Document>("pets")
            .count_documents(doc! {"enrichment": {"$exists": true}})
            .await?;
        let results =
            store.collection::<Document>("_task_results").count_documents(doc! {}).await?;
        println!("pets enriched: {enriched}/{}, task results: {results}", args.tasks);
    }
    for child in &mut children {
        let _ = child.start_kill();
    }
    for mut child in children {
        let _ = child.wait().await;
    }
    if args.database.is_none() {
        let _ = store.drop().await;
    }
    Ok(())
}
