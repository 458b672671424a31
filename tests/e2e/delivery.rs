//! The write path end to end: POST → outbox → JetStream → broadcaster(s) → WebSocket clients,
//! including NATS being down while writes happen.

use std::{collections::HashSet, time::Duration};

use courier_broadcaster::BroadcasterConfig;
use courier_tests::{RunningBroadcaster, Stack, WsClient, services::product};
use reqwest::StatusCode;

use crate::helpers::{assert_in_order_without_duplicates, assert_no_event, collect_events};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_product_reaches_subscribers_of_the_collection_and_the_document() {
    let stack = Stack::start().await;
    let mut ws = stack.ws().await;
    let (seq, _) = ws.subscribe("products", None, None).await.unwrap();

    let (status, created) = stack.post("products", &serde_json::json!({"nombre": "Camiseta", "precio": 25.99, "talla": "M"})).await;
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
    let second = RunningBroadcaster::start(BroadcasterConfig::for_local(&stack.nats.url())).await;
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
        assert_eq!(status, StatusCode::CREATED, "writes are accepted while NATS is down: {created}");
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
    eprintln!("nats outage: 20 writes accepted while down, 20 events delivered after restart, 0 duplicates");
}
