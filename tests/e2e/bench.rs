//! `courier bench` itself: each subcommand runs briefly against a test deployment and its JSON
//! report adds up (every published event delivered once to every subscriber). Small sizes and
//! no timing assertions: speed is measured by hand (docs/benchmarks.md), not in tests.

use std::time::Duration;

use courier_cli::{
    fanout::{self, ConnectionsArgs, FanoutArgs, Role, Target},
    throughput::{self, ApiBenchArgs, Servers, WorkerBenchArgs},
};
use courier_tests::{Stack, bench::NatsWithWebSocket};
use futures::StreamExt;

fn args(target: Target, ws: String, nats: String) -> FanoutArgs {
    FanoutArgs {
        clients: 6,
        rate: 50.0,
        duration: Duration::from_millis(600),
        channels: 2,
        payload: 120,
        target,
        via: None,
        nats_ws: ws.clone(),
        ws,
        nats,
        api: String::new(),
        server_pids: vec![std::process::id().to_string()],
        procs: 1,
        json: true,
        role: Role::Lead,
        run_id: None,
        client_offset: 0,
        source_ip: None,
    }
}

/// The counts of a fan-out report agree with each other and nothing was lost or repeated.
fn assert_consistent(report: &serde_json::Value, clients: u64, channels: u64) {
    let n = |field: &str| report[field].as_u64().unwrap_or_else(|| panic!("{field} in {report}"));
    assert!(n("published") > 0, "{report}");
    // Subscribers are spread evenly here, so each event reaches clients / channels of them.
    assert_eq!(n("expected_deliveries"), n("published") * (clients / channels), "{report}");
    assert_eq!(n("delivered"), n("expected_deliveries"), "{report}");
    assert_eq!((n("lost"), n("duplicated"), n("failed_clients")), (0, 0, 0), "{report}");
    assert!(report["p99_ms"].as_f64().unwrap() <= report["max_ms"].as_f64().unwrap(), "{report}");
    assert!(report["server_cpu_us_per_delivery"].as_f64().is_some(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_fanout_and_connections_report_consistent_counts_against_courier() {
    let stack = Stack::start().await;
    let fan = args(Target::Courier, stack.broadcaster.ws_url(), stack.nats.url());
    let report = fanout::fanout(&fan).await.expect("fanout runs").expect("a lead's report");
    let report = serde_json::to_value(&report).unwrap();
    assert_consistent(&report, 6, 2);
    assert_eq!(report["reordered"], 0, "each channel in stream order: {report}");

    // Through the api: the whole write path, on the `products` channel (concurrent writes may
    // commit in another order than they were sent, so order is not checked here).
    let via_api = FanoutArgs {
        via: Some("api".into()),
        channels: 1,
        clients: 3,
        rate: 10.0,
        api: stack.api.url(),
        ..fan.clone()
    };
    let report = fanout::fanout(&via_api).await.expect("fanout via api runs").unwrap();
    let report = serde_json::to_value(&report).unwrap();
    assert_consistent(&report, 3, 1);
    assert_eq!(report["via"], "api");

    let held = ConnectionsArgs {
        clients: 20,
        hold: Duration::from_millis(500),
        channels: None,
        ws: stack.broadcaster.ws_url(),
        server_pids: vec![std::process::id().to_string()],
        procs: 2,
        json: true,
    };
    let report = fanout::connections(&held).await.expect("connections runs");
    let report = serde_json::to_value(&report).unwrap();
    assert_eq!(report["connected"], 20, "{report}");
    assert_eq!(report["still_open"], 20, "{report}");
    assert_eq!(report["channels"], 20, "{report}");
    assert!(report["pings"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["ping_failures"], 0, "{report}");
    assert!(report["server_rss_per_connection_bytes"].as_f64().is_some(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_fanout_runs_against_nats_servers_own_websocket() {
    let nats = NatsWithWebSocket::start().await;
    let fan = args(Target::Nats, nats.ws_url(), nats.nats.url());
    let report = fanout::fanout(&fan).await.expect("fanout runs").expect("a lead's report");
    let report = serde_json::to_value(&report).unwrap();
    assert_consistent(&report, 6, 2);
    assert_eq!(report["target"], "nats");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_fanout_refuses_bad_sizes() {
    let mut bad = args(Target::Courier, "ws://127.0.0.1:1/ws".into(), "nats://127.0.0.1:1".into());
    bad.channels = 7; // more channels than clients
    let err = fanout::fanout(&bad).await.expect_err("refused").to_string();
    assert!(err.contains("--channels"), "{err}");
    bad.channels = 1;
    bad.rate = 0.0;
    let err = fanout::fanout(&bad).await.expect_err("refused").to_string();
    assert!(err.contains("--rate"), "{err}");
}

fn servers(stack: &Stack) -> Servers {
    Servers { nats: stack.nats.url(), mongodb_uri: stack.store.uri(), database: None, json: true }
}

/// The names of the streams on the stack's NATS (the benches' scratch streams must be gone).
async fn stream_names(stack: &Stack) -> Vec<String> {
    let js = async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    js.stream_names().map(|name| name.unwrap()).collect().await
}

/// One side of a report: operations done, none failed, latency quantiles in order.
fn assert_side(side: &serde_json::Value, operations: Option<u64>) {
    let done = side["operations"].as_u64().unwrap();
    match operations {
        Some(expected) => assert_eq!(done, expected, "{side}"),
        None => assert!(done > 0, "{side}"),
    }
    assert_eq!(side["errors"], 0, "{side}");
    let per_sec = side["per_sec"].as_f64().unwrap();
    let elapsed = side["elapsed_secs"].as_f64().unwrap();
    assert!((per_sec * elapsed - done as f64).abs() < 1.0, "rate × time = count: {side}");
    let q = |name: &str| side[name].as_f64().unwrap();
    assert!(q("p50_ms") <= q("p90_ms") && q("p90_ms") <= q("p99_ms") && q("p99_ms") <= q("max_ms"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_api_compares_creates_with_a_raw_insert_and_publish_and_cleans_up() {
    let stack = Stack::start().await;
    let args = ApiBenchArgs {
        api: stack.api.url(),
        concurrency: 2,
        duration: Duration::from_millis(700),
        keep: false,
        servers: servers(&stack),
    };
    let report = throughput::api(&args).await.expect("bench api runs");
    let report = serde_json::to_value(&report).unwrap();
    assert_side(&report["courier"], None);
    assert_side(&report["baseline"], None);
    let ratio = report["ratio"].as_f64().unwrap();
    let per_sec = |side: &str| report[side]["per_sec"].as_f64().unwrap();
    assert!((ratio - per_sec("courier") / per_sec("baseline")).abs() < 1e-6, "{report}");
    // Nothing is left behind: no product of the run, no scratch stream.
    let (status, products) = stack.get("/api/v1/products").await;
    assert_eq!(status, 200);
    assert_eq!(products["items"].as_array().unwrap().len(), 0, "{products}");
    assert!(!stream_names(&stack).await.iter().any(|n| n.starts_with("BENCH_")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_worker_runs_every_task_through_the_workers_and_the_baseline() {
    let stack = Stack::start().await;
    let mut config = courier_worker::WorkerConfig::for_local(&stack.nats.url());
    config.mongodb_uri = stack.store.uri();
    let nats = async_nats::connect(stack.nats.url()).await.unwrap();
    let handlers = courier_worker::standard_handlers(&config, nats).await.unwrap();
    let _worker = courier_tests::RunningWorker::start(config, handlers).await;
    let args = WorkerBenchArgs {
        tasks: 60,
        workers: 0, // the one already running
        kind: "system.noop".into(),
        concurrency: 4,
        timeout: Duration::from_secs(60),
        servers: servers(&stack),
    };
    let report = throughput::worker(&args).await.expect("bench worker runs");
    let report = serde_json::to_value(&report).unwrap();
    assert_side(&report["courier"], Some(60));
    assert_side(&report["baseline"], Some(60));
    assert_eq!(report["dead_lettered"], 0, "{report}");
    assert!(report["ratio"].as_f64().unwrap() > 0.0, "{report}");
    assert!(!stream_names(&stack).await.iter().any(|n| n.starts_with("BENCH_")));
}
