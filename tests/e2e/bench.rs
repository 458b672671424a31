//! `courier bench` itself: each subcommand runs briefly against a test deployment and its JSON
//! report adds up (every published event delivered once to every subscription). Small sizes and
//! no timing assertions: speed is measured by hand (docs/benchmarks.md), not in tests. The
//! `--procs` runs start the built `courier` as their child processes (`cargo build --bins`).

use std::time::Duration;

use courier_cli::{
    fanout::{self, ConnectionsArgs, FanoutArgs, Role, Target},
    throughput::{self, ApiBenchArgs, Servers, WorkerBenchArgs},
};
use courier_tests::{
    RunningBroadcaster, Stack, bench::NatsWithWebSocket, chaos::Metrics, process::courier_binary,
};
use futures::StreamExt;
use serde_json::json;

fn args(target: Target, ws: String, nats: String) -> FanoutArgs {
    FanoutArgs {
        clients: 6,
        rate: 50.0,
        duration: Duration::from_millis(600),
        channels: 2,
        subs_per_client: 1,
        payload: 120,
        target,
        collection: "products".into(),
        filter: None,
        token: None,
        creator: None,
        via: None,
        nats_ws: ws.clone(),
        ws,
        nats,
        api: String::new(),
        server_pids: vec![std::process::id().to_string()],
        procs: 1,
        stalled: 0,
        json: true,
        role: Role::Lead,
        run_id: None,
        client_offset: 0,
        source_ip: None,
        bench_exe: None,
    }
}

/// The counts of a fan-out report agree with each other and nothing was lost or repeated.
fn assert_consistent(report: &serde_json::Value, subscriptions: u64, channels: u64) {
    let n = |field: &str| report[field].as_u64().unwrap_or_else(|| panic!("{field} in {report}"));
    assert!(n("published") > 0, "{report}");
    assert_eq!(n("subscriptions"), subscriptions, "{report}");
    // Subscriptions are spread evenly here, so each event reaches subscriptions / channels.
    assert_eq!(n("expected_deliveries"), n("published") * (subscriptions / channels), "{report}");
    assert_eq!(n("delivered"), n("expected_deliveries"), "{report}");
    assert_eq!((n("lost"), n("duplicated"), n("failed_clients")), (0, 0, 0), "{report}");
    assert_eq!(n("still_open"), n("clients"), "{report}");
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

    // Filtered subscriptions, and a per-document read rule (`notes`: the token's user is the
    // events' creator): every event matches, so the same counts hold.
    let filtered = FanoutArgs { filter: Some(r#"{"nombre":{"gte":"~"}}"#.into()), ..fan.clone() };
    let report = fanout::fanout(&filtered).await.expect("filtered fanout runs").unwrap();
    assert_consistent(&serde_json::to_value(&report).unwrap(), 6, 2);
    let token = stack.token("bench-reader").await;
    let rule_checked = FanoutArgs {
        collection: "notes".into(),
        creator: Some(stack.user_id(&token).await),
        token: Some(token),
        ..fan.clone()
    };
    let report = fanout::fanout(&rule_checked).await.expect("rule-checked fanout runs").unwrap();
    assert_consistent(&serde_json::to_value(&report).unwrap(), 6, 2);
    let other_creator = FanoutArgs { creator: Some("someone-else".into()), ..rule_checked };
    let report = fanout::fanout(&other_creator).await.expect("runs").unwrap();
    let report = serde_json::to_value(&report).unwrap();
    assert_eq!(report["delivered"], 0, "another user's notes reach nobody: {report}");

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

    // In this process (`--procs 1`); the child processes' path is the next test's.
    let held = ConnectionsArgs {
        clients: 20,
        hold: Duration::from_millis(500),
        channels: None,
        ws: stack.broadcaster.ws_url(),
        server_pids: vec![std::process::id().to_string()],
        procs: 1,
        json: true,
        bench_exe: None,
    };
    let report = fanout::connections(&held).await.expect("connections runs");
    let report = serde_json::to_value(&report).unwrap();
    assert_eq!(report["connected"], 20, "{report}");
    assert_eq!(report["still_open"], 20, "{report}");
    assert_eq!(report["channels"], 20, "{report}");
    assert_eq!(report["connected_by_ws"], json!([20]), "{report}");
    assert!(report["pings"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["ping_failures"], 0, "{report}");
    assert!(report["server_rss_per_connection_bytes"].as_f64().is_some(), "{report}");
}

/// How many WebSocket connections a broadcaster has accepted so far.
async fn connects(broadcaster: &RunningBroadcaster) -> f64 {
    Metrics::scrape(&format!("http://{}/metrics", broadcaster.addr))
        .await
        .sum("courier_ws_connects_total", "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_spreads_over_two_broadcasters_and_child_processes_with_many_subscriptions() {
    let stack = Stack::start().await;
    let second = RunningBroadcaster::start(Stack::broadcaster_config(&stack.nats)).await;
    let both = format!("{},{}", stack.broadcaster.ws_url(), second.ws_url());
    let courier = courier_binary("courier");

    // 6 subscribers × 3 subscriptions over 9 channels (2 subscribers each), in 2 child
    // processes, connections alternating between the broadcasters.
    let fan = FanoutArgs {
        clients: 6,
        channels: 9,
        subs_per_client: 3,
        procs: 2,
        ws: both.clone(),
        bench_exe: Some(courier.clone()),
        ..args(Target::Courier, String::new(), stack.nats.url())
    };
    let report = fanout::fanout(&fan).await.expect("fanout runs").expect("a lead's report");
    let report = serde_json::to_value(&report).unwrap();
    assert_consistent(&report, 18, 9);
    assert_eq!(report["reordered"], 0, "each channel in stream order: {report}");
    assert_eq!(report["connected_by_ws"], json!([3, 3]), "{report}");
    // The servers agree: 3 connections each.
    assert_eq!((connects(&stack.broadcaster).await, connects(&second).await), (3.0, 3.0));

    // Held by 2 child processes, pinging both broadcasters.
    let held = ConnectionsArgs {
        clients: 20,
        hold: Duration::from_millis(1500),
        channels: Some(5),
        ws: both,
        server_pids: vec![std::process::id().to_string()],
        procs: 2,
        json: true,
        bench_exe: Some(courier),
    };
    let report = fanout::connections(&held).await.expect("connections runs");
    let report = serde_json::to_value(&report).unwrap();
    assert_eq!((report["connected"].as_u64(), report["still_open"].as_u64()), (Some(20), Some(20)));
    assert_eq!((report["procs"].as_u64(), report["channels"].as_u64()), (Some(2), Some(5)));
    assert_eq!(report["connected_by_ws"], json!([10, 10]), "{report}");
    assert_eq!(report["ping_failures"], 0, "{report}");
    let per_ws = report["ping_p99_ms_by_ws"].as_array().unwrap();
    assert!(per_ws.len() == 2 && per_ws.iter().all(|p| p.as_f64() > Some(0.0)), "{report}");
    // Each broadcaster: its 3 fan-out connections, 10 held and the probe.
    assert_eq!((connects(&stack.broadcaster).await, connects(&second).await), (14.0, 14.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_fanout_reports_a_stalled_client_cut_off_while_the_others_get_everything() {
    let stack = Stack::start().await;
    // A broadcaster that gives up on a client soon: sends may block 500 ms, small socket buffers.
    let mut config = Stack::broadcaster_config(&stack.nats);
    config.send_timeout = Duration::from_millis(500);
    config.send_buffer_bytes = 4096;
    let quick = RunningBroadcaster::start(config).await;
    let fan = FanoutArgs {
        clients: 4,
        stalled: 1,
        rate: 200.0,
        duration: Duration::from_secs(2),
        payload: 2000,
        ..args(Target::Courier, quick.ws_url(), stack.nats.url())
    };
    let report = fanout::fanout(&fan).await.expect("fanout runs").expect("a lead's report");
    let report = serde_json::to_value(&report).unwrap();
    assert_consistent(&report, 4, 2);
    assert_eq!(
        (report["stalled"].as_u64(), report["stalled_cut_off"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(report["stalled_still_open"], 0, "{report}");
    let metrics = Metrics::scrape(&format!("http://{}/metrics", quick.addr)).await;
    assert_eq!(metrics.sum("courier_ws_slow_consumer_disconnects_total", ""), 1.0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_fanout_runs_against_nats_servers_own_websocket() {
    let nats = NatsWithWebSocket::start().await;
    // 6 subscribers × 2 subjects over 4 (3 subscribers each).
    let fan = FanoutArgs {
        channels: 4,
        subs_per_client: 2,
        ..args(Target::Nats, nats.ws_url(), nats.nats.url())
    };
    let report = fanout::fanout(&fan).await.expect("fanout runs").expect("a lead's report");
    let report = serde_json::to_value(&report).unwrap();
    assert_consistent(&report, 12, 4);
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
    bad.rate = 10.0;
    bad.subs_per_client = 101;
    bad.channels = 200;
    let err = fanout::fanout(&bad).await.expect_err("refused").to_string();
    assert!(err.contains("--subs-per-client must be 1 to 100"), "{err}");
    bad.subs_per_client = 3;
    bad.channels = 2;
    let err = fanout::fanout(&bad).await.expect_err("refused").to_string();
    assert!(err.contains("at most --channels"), "{err}");
    bad.subs_per_client = 2;
    bad.channels = 13; // 6 clients × 2
    let err = fanout::fanout(&bad).await.expect_err("refused").to_string();
    assert!(err.contains("--channels must be 1 to --clients × --subs-per-client (12)"), "{err}");
    bad.channels = 2;
    bad.ws = "ws://127.0.0.1:1/ws,not a url".into();
    let err = fanout::fanout(&bad).await.expect_err("refused").to_string();
    assert!(err.contains("--ws"), "{err}");
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
