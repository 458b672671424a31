//! Chaos 4: a real api process exits between committing a write and publishing its event (the
//! test-only fault hook `COURIER_API_FAULT=exit-after-commit`); after a restart — two replicas
//! whose outbox relays race — each such write becomes exactly one event.

use std::time::Duration;

use courier_tests::{
    NatsServer, StoreServer,
    chaos::{
        Metrics, StoreView, api_process, broadcaster_process, fresh_database, share_machine,
        stored_events,
    },
    init_test_logging,
    services::product,
    wait_until,
};

use crate::support::{Tail, assert_exactly_once_in_order};

const CRASHES: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_killed_between_commit_and_publish_publishes_exactly_once_after_restart() {
    let _machine = share_machine().await;
    init_test_logging();
    let (nats, store) = tokio::join!(NatsServer::start(), StoreServer::start());
    let database = fresh_database();
    let broadcaster = broadcaster_process(&nats.url(), &[]).await;
    let tail = Tail::start(vec![broadcaster.ws_url()], "products").await;
    let view = StoreView::open(&store, &database).await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    let http = reqwest::Client::new();

    for n in 0..CRASHES {
        let mut faulty = api_process(
            &store,
            &database,
            &nats,
            &[("COURIER_API_FAULT", "exit-after-commit".to_owned())],
        )
        .await;
        let answer = http.post(faulty.http_url("/api/v1/products")).json(&product(n)).send().await;
        assert!(answer.is_err(), "the faulty api must die before answering, got {answer:?}");
        let status = faulty.wait_exit(Duration::from_secs(10)).await.expect("the faulty api exits");
        assert_eq!(status.code(), Some(86), "exit by the fault hook; log:\n{}", faulty.log_text());
    }
    let committed = view.document_ids("products").await;
    let waiting = view.outbox_len().await;
    let published_before = stored_events(&js, "events.products.>").await.len();
    assert_eq!(
        (committed.len(), waiting as usize, published_before),
        (CRASHES, CRASHES, 0),
        "committed, not published"
    );
    assert_eq!(tail.received(), 0);

    // Two fresh replicas: both relays see the same records and race to publish them.
    let (first, second) = tokio::join!(
        api_process(&store, &database, &nats, &[]),
        api_process(&store, &database, &nats, &[])
    );
    wait_until("the outbox to drain", Duration::from_secs(30), || async {
        view.outbox_len().await == 0
    })
    .await;
    let tailed = tail.finish(CRASHES, Duration::from_secs(30)).await;
    let stored = stored_events(&js, "events.products.>").await;
    let mut republished = 0.0;
    for api in [&first, &second] {
        republished += Metrics::scrape(&api.http_url("/metrics"))
            .await
            .sum("courier_outbox_relay_republished_total", "");
    }

    eprintln!(
        "chaos 4 (api exits after commit): {CRASHES} writes committed by dying apis, {waiting} outbox records left, \
         {published_before} events before restart; after restart with 2 replicas: relays published {republished} times, \
         stream holds {} events, client got {}",
        stored.len(),
        tailed.events.len()
    );
    let mut stored_ids: Vec<String> = stored.iter().map(|(_, e)| e.doc_id.clone()).collect();
    stored_ids.sort();
    let mut committed = committed;
    committed.sort();
    assert_eq!(stored_ids, committed, "exactly one event per committed write");
    assert_exactly_once_in_order("subscriber", &tailed.events, &committed);
    assert!(republished >= CRASHES as f64, "the relays did the publishing");
}
