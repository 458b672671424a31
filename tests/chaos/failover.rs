//! Chaos 2: two broadcaster processes; the one a subscriber is on is killed with SIGKILL
//! mid-stream; the subscriber reconnects to the other and resumes with `since`: no gap, no
//! duplicate. A filtered subscriber rides along and resumes with its filter: exactly the
//! matching documents, each once.

use std::{
    sync::{Arc, atomic::AtomicUsize},
    time::Duration,
};

use courier_tests::{
    NatsServer, StoreServer,
    chaos::{api_process, broadcaster_process, fresh_database, post_products, share_machine},
    init_test_logging,
};

use courier_core::protocol::ViewChange;

use crate::support::{Tail, assert_exactly_once_in_order};

/// The ids a REST list answers (one page).
async fn list_ids(url: &str) -> std::collections::HashSet<String> {
    let page: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert!(page["next"].is_null(), "one page holds them all");
    page["items"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect()
}

const WRITES: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_broadcaster_a_client_is_on_loses_and_repeats_nothing() {
    let _machine = share_machine().await;
    init_test_logging();
    let (nats, store) = tokio::join!(NatsServer::start(), StoreServer::start());
    let api = api_process(&store, &fresh_database(), &nats, &[]).await;
    let nats_url = nats.url();
    let (mut first, second) =
        tokio::join!(broadcaster_process(&nats_url, &[]), broadcaster_process(&nats_url, &[]));

    let tail = Tail::start(vec![first.ws_url(), second.ws_url()], "products").await;
    // Products 500 and up (precio = 10 + n): half of them, spread over the whole run.
    let filter = serde_json::json!({"precio": {"gte": 510.0}});
    let filtered =
        Tail::start_filtered(vec![first.ws_url(), second.ws_url()], "products", None, Some(filter))
            .await;
    let writer =
        tokio::spawn(post_products(api.http_url(""), WRITES, 8, Arc::new(AtomicUsize::new(0))));

    tail.wait_for(WRITES / 4, Duration::from_secs(60)).await;
    first.kill9().await;
    let killed_after = tail.received();

    let writes = writer.await.expect("writer");
    assert_eq!(writes.statuses.get(&201), Some(&WRITES), "{:?}", writes.statuses);
    let tailed = tail.finish(WRITES, Duration::from_secs(60)).await;
    let matching = list_ids(&api.http_url("/api/v1/products?precio[gte]=510&limit=1000")).await;
    assert_eq!(matching.len(), WRITES / 2);
    let filtered = filtered.finish(matching.len(), Duration::from_secs(60)).await;
    let in_commit_order: Vec<String> = tailed
        .events
        .iter()
        .map(|r| r.event.doc_id.clone())
        .filter(|id| matching.contains(id))
        .collect();
    assert_exactly_once_in_order("filtered subscriber", &filtered.events, &in_commit_order);
    assert!(filtered.events.iter().all(|r| r.view == Some(ViewChange::Enter)));
    assert_eq!(filtered.duplicates_dropped, 0);

    eprintln!(
        "chaos 2 (broadcaster kill -9): {WRITES} POSTs; first broadcaster killed after the client had {killed_after} events; \
         client connections {}, now on {}",
        tailed.connects,
        tailed.last_url.as_deref().unwrap_or("nothing")
    );
    assert!(killed_after < WRITES, "the kill happened mid-stream");
    assert_exactly_once_in_order("failed-over subscriber", &tailed.events, &writes.created);
    eprintln!("    duplicate frames dropped by the client: {}", tailed.duplicates_dropped);
    assert_eq!(
        tailed.duplicates_dropped, 0,
        "the new broadcaster resumes after the last seq, never before"
    );
    assert_eq!(
        tailed.last_url.as_deref(),
        Some(second.ws_url().as_str()),
        "the client moved to the surviving broadcaster"
    );
    let resumed = tailed
        .notices
        .iter()
        .filter(|n| n.contains("Subscribed") && n.contains("recovered: Some(true)"))
        .count();
    assert_eq!(resumed, 1, "one resume with since, fully recovered: {:#?}", tailed.notices);
}
