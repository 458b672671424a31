//! The write path end to end: POST → outbox → JetStream → broadcaster(s) → WebSocket clients,
//! including NATS being down while writes happen.

use std::{collections::HashSet, time::Duration};

use courier_tests::{RunningBroadcaster, Stack, WsClient, services::product};
use reqwest::StatusCode;

use crate::helpers::{assert_in_order_without_duplicates, assert_no_event, collect_events};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_product_reaches_subscribers_of_the_collection_and_the_document() {
    let stack = Stack::start().await;
    let mut ws = stack.ws().await;
    let (seq, _) = ws.subscribe("products", None, None).await.unwrap();

    let (status, created) = stack
        .post("products", &serde_json::json!({"nombre": "Camiseta", "precio": 25.99, "talla": "M"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    let got = collect_events(&mut ws, 1, Duration::from_secs(10)).await;
    let event = &got[0].event;
    assert_eq!(got[0].channel, "products");
    assert!(got[0].seq > seq, "event #{} is after the subscription point #{seq}", got[0].seq);
    assert_eq!(event.event_type, "products.created");
    assert_eq!(event.collection, "products");
    assert_eq!(event.doc_id, id);
    assert_eq!(event.data, created, "the event carries the stored document");
    assert_eq!(event.actor, None);
    assert!(!event.trace_id.is_empty());

    // The stored document is readable, with its version as ETag.
    let (status, read) = stack.get(&format!("/api/v1/products/{id}")).await;
    assert_eq!((status, read), (StatusCode::OK, created.clone()));

    // A document channel only sees its own document.
    let mut doc_ws = stack.ws().await;
    doc_ws.subscribe(&format!("products:{id}"), Some(0), None).await.unwrap();
    let replayed = collect_events(&mut doc_ws, 1, Duration::from_secs(10)).await;
    assert_eq!(replayed[0].event.id, event.id);
    stack.post("products", &product(2)).await;
    collect_events(&mut ws, 1, Duration::from_secs(10)).await;
    assert_no_event(&mut doc_ws, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_broadcasters_both_deliver_every_event() {
    let stack = Stack::start().await;
    let second = RunningBroadcaster::start(Stack::broadcaster_config(&stack.nats)).await;
    let mut first_ws = stack.ws().await;
    let mut second_ws = WsClient::connect(&second.ws_url()).await.unwrap();
    first_ws.subscribe("products", None, None).await.unwrap();
    second_ws.subscribe("products", None, None).await.unwrap();

    let mut ids = HashSet::new();
    for n in 0..10 {
        let (status, created) = stack.post("products", &product(n)).await;
        assert_eq!(status, StatusCode::CREATED);
        ids.insert(created["id"].as_str().unwrap().to_owned());
    }
    for ws in [&mut first_ws, &mut second_ws] {
        let got = collect_events(ws, 10, Duration::from_secs(10)).await;
        assert_in_order_without_duplicates(&got);
        let seen: HashSet<_> = got.iter().map(|g| g.event.doc_id.clone()).collect();
        assert_eq!(seen, ids);
    }
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_while_nats_is_down_are_delivered_exactly_once_when_it_returns() {
    let mut stack = Stack::start().await;
    let mut ws = stack.ws().await;
    ws.subscribe("products", None, None).await.unwrap();

    stack.nats.kill().await;
    let mut ids = Vec::new();
    for n in 0..20 {
        let (status, created) = stack.post("products", &product(n)).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "writes are accepted while NATS is down: {created}"
        );
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let (status, ready) = stack.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "not ready without NATS: {ready}");

    stack.nats.restart().await;
    let got = collect_events(&mut ws, 20, Duration::from_secs(30)).await;
    assert_in_order_without_duplicates(&got);
    let delivered: Vec<_> = got.iter().map(|g| g.event.doc_id.clone()).collect();
    assert_eq!(delivered, ids, "every write, once, in commit order");
    assert_no_event(&mut ws, Duration::from_secs(1)).await;
    eprintln!(
        "nats outage: 20 writes accepted while down, 20 events delivered after restart, 0 duplicates"
    );
}

/// `courier bench latency` (what the chart's `helm test` runs): counts only its own documents'
/// events while someone else writes to the same collection, and deletes what it created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_latency_measures_its_own_posts_amid_other_writers_and_cleans_up() {
    let stack = Stack::start().await;
    let others = {
        let (http, url) = (stack.http.clone(), format!("{}/api/v1/products", stack.api.url()));
        tokio::spawn(async move {
            for n in 0..30 {
                let answer = http.post(&url).json(&product(n)).send().await.unwrap();
                assert_eq!(answer.status(), StatusCode::CREATED);
            }
        })
    };
    let args = courier_cli::bench::LatencyArgs {
        api: stack.api.url(),
        ws: stack.broadcaster.ws_url(),
        posts: 20,
        concurrency: 4,
        collection: "products".into(),
        json: true,
        keep: false,
    };
    let report = courier_cli::bench::latency(&args).await.expect("bench runs");
    others.await.unwrap();
    assert_eq!((report.posts, report.delivered), (20, 20), "{report}");
    assert!(
        report.p50_ms > 0.0 && report.p50_ms <= report.p99_ms && report.p99_ms <= report.max_ms,
        "{report}"
    );
    let (status, page) = stack.get("/api/v1/products?limit=100").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> =
        page["items"].as_array().unwrap().iter().filter_map(|d| d["nombre"].as_str()).collect();
    assert_eq!(names.len(), 30, "only the other writer's products remain: {names:?}");
    assert!(names.iter().all(|n| !n.starts_with("bench-")), "{names:?}");
}
