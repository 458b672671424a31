//! Chaos 3: the store is killed with SIGKILL under concurrent writes. The api answers 503
//! `store_unavailable` with a clear message, no write is half done (every stored document has
//! exactly one event and every event a document; a write made while the store is down is never
//! stored; one in flight at the kill may have committed with its answer lost), and once the
//! store is back the same api process serves writes again by itself. The store runs with `--sync-on-commit` (see `StoreServer::start_durable`):
//! without it SecantusDB loses its last acknowledged commits on SIGKILL — whose events were
//! already out — which is a store durability setting, not something the api can repair.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use courier_tests::{
    NatsServer, StoreServer,
    chaos::{
        StoreView, api_process, broadcaster_process, fresh_database, share_machine, stored_events,
    },
    init_test_logging,
    services::product,
    wait_for, wait_until,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::support::{Tail, assert_exactly_once_in_order};

const WRITERS: usize = 8;

/// One answer: status (0 = no HTTP answer), body, when the request started, how long it took.
type Answer = (u16, Value, Instant, Duration);

/// POSTs products in a loop until `stop`, counting 201s and 503s as they come.
async fn write_until(
    url: String,
    stop: CancellationToken,
    created: Arc<AtomicUsize>,
    unavailable: Arc<AtomicUsize>,
) -> Vec<Answer> {
    let http =
        reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client");
    let mut answers = Vec::new();
    let mut n = 0;
    while !stop.is_cancelled() {
        n += 1;
        let started = Instant::now();
        let answer = match http.post(&url).json(&product(n)).send().await {
            Ok(response) => (
                response.status().as_u16(),
                response.json().await.unwrap_or(Value::Null),
                started,
                started.elapsed(),
            ),
            Err(_) => (0, Value::Null, started, started.elapsed()),
        };
        match answer.0 {
            201 => created.fetch_add(1, Ordering::Relaxed),
            503 => unavailable.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        answers.push(answer);
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_means_503_nothing_half_written_and_recovery_without_restart() {
    let _machine = share_machine().await;
    init_test_logging();
    let (nats, mut store) = tokio::join!(NatsServer::start(), StoreServer::start_durable());
    let database = fresh_database();
    // A short store timeout keeps the outage phase short (each 503 costs a few timeouts).
    let mut api =
        api_process(&store, &database, &nats, &[("COURIER_MONGODB_TIMEOUT", "500".to_owned())])
            .await;
    let broadcaster = broadcaster_process(&nats.url(), &[]).await;
    let tail = Tail::start(vec![broadcaster.ws_url()], "products").await;
    let url = api.http_url("/api/v1/products");

    let (stop, created, unavailable) =
        (CancellationToken::new(), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            tokio::spawn(write_until(
                url.clone(),
                stop.clone(),
                created.clone(),
                unavailable.clone(),
            ))
        })
        .collect();
    wait_until("100 writes", Duration::from_secs(60), || async {
        created.load(Ordering::Relaxed) >= 100
    })
    .await;
    store.kill().await;
    let killed = Instant::now();
    let created_before_kill = created.load(Ordering::Relaxed);
    wait_until("16 answers 503", Duration::from_secs(60), || async {
        unavailable.load(Ordering::Relaxed) >= 16
    })
    .await;
    stop.cancel();
    let mut answers = Vec::new();
    for writer in writers {
        answers.extend(writer.await.expect("writer"));
    }
    assert!(api.is_running(), "the api survives the store outage");

    store.restart().await;
    let down_since = Instant::now();
    let http = reqwest::Client::new();
    // Retry one write until the same api process takes it (its driver reconnects by itself).
    let first_id = wait_for("the api to take writes again", Duration::from_secs(60), || async {
        match http.post(&url).json(&product(0)).send().await {
            Ok(response) if response.status() == 201 => {
                let body: Value = response.json().await.map_err(|err| err.to_string())?;
                Ok(body["id"].as_str().expect("a created document has an id").to_owned())
            }
            Ok(response) => Err(format!("status {}", response.status())),
            Err(err) => Err(err.to_string()),
        }
    })
    .await;
    let recovery = down_since.elapsed();
    let mut recovered_ids = vec![first_id];
    for n in 0..50 {
        let response = http.post(&url).json(&product(n)).send().await.expect("api answers");
        assert_eq!(response.status(), 201, "writes work again");
        let body: Value = response.json().await.expect("json");
        recovered_ids.push(body["id"].as_str().expect("id").to_owned());
    }

    let view = StoreView::open(&store, &database).await;
    wait_until("the outbox to drain", Duration::from_secs(30), || async {
        view.outbox_len().await == 0
    })
    .await;
    let mut stored_docs = view.document_ids("products").await;
    stored_docs.sort();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    let events = stored_events(&js, "events.products.>").await;
    let tailed = tail.finish(stored_docs.len(), Duration::from_secs(30)).await;

    let count = |status: u16| answers.iter().filter(|a| a.0 == status).count();
    let mut acknowledged: Vec<String> = answers
        .iter()
        .filter(|a| a.0 == 201)
        .map(|a| a.1["id"].as_str().expect("id").to_owned())
        .chain(recovered_ids.iter().cloned())
        .collect();
    acknowledged.sort();
    let slowest = |after_kill: bool| {
        answers
            .iter()
            .filter(|a| a.0 == 503 && (a.2 >= killed) == after_kill)
            .map(|a| a.3)
            .max()
            .unwrap_or_default()
    };
    let (slowest_in_flight, slowest_503) = (slowest(false), slowest(true));
    let unacknowledged_but_stored =
        stored_docs.iter().filter(|id| acknowledged.binary_search(id).is_err()).count();
    let acknowledged_but_lost =
        acknowledged.iter().filter(|id| stored_docs.binary_search(id).is_err()).count();
    eprintln!(
        "chaos 3 (store kill -9): {} answers during the run: {} × 201 ({created_before_kill} before the kill), {} × 503, \
         {} other ({} of the 503s were in flight at the kill, {} said outcome unknown); slowest 503 {slowest_503:?} for requests made while \
         the store was down, {slowest_in_flight:?} for requests in flight at the kill; api wrote again {recovery:?} after the store restarted (same process); \
         {} more writes after; store holds {} documents ({unacknowledged_but_stored} not acknowledged with 201, {acknowledged_but_lost} acknowledged ones missing), \
         stream {} events",
        answers.len(),
        count(201),
        count(503),
        answers.len() - count(201) - count(503),
        answers.iter().filter(|a| a.0 == 503 && a.2 < killed).count(),
        answers
            .iter()
            .filter(|a| a.0 == 503 && a.1["error"]["code"] == "store_outcome_unknown")
            .count(),
        recovered_ids.len(),
        stored_docs.len(),
        events.len()
    );
    assert_eq!(
        count(201) + count(503),
        answers.len(),
        "only 201 or 503, never a 500 or a dropped connection"
    );
    // A 503 says which kind it is: nothing was written, or the commit's outcome is unknown.
    for (_, body, _, _) in answers.iter().filter(|a| a.0 == 503) {
        let code = body["error"]["code"].as_str().unwrap_or_default();
        assert!(code == "store_unavailable" || code == "store_outcome_unknown", "{body}");
        assert!(
            body["error"]["message"].as_str().is_some_and(|m| m.contains("database")),
            "a clear message: {body}"
        );
    }
    let outcome_unknown = answers
        .iter()
        .filter(|a| a.0 == 503 && a.1["error"]["code"] == "store_outcome_unknown")
        .count();
    // An unreachable store is not retried (the driver already waited its timeout, 500 ms
    // here), so a 503 arrives within a couple of timeouts.
    assert!(
        slowest_503 < Duration::from_secs(3),
        "503 comes quickly, not after retries: {slowest_503:?}"
    );
    assert!(
        slowest_in_flight < Duration::from_secs(3),
        "an interrupted write ends quickly too: {slowest_in_flight:?}"
    );
    // Nothing half done: every stored document has exactly one event, and every event a document.
    let mut event_docs: Vec<String> = events.iter().map(|(_, e)| e.doc_id.clone()).collect();
    event_docs.sort();
    assert_eq!(event_docs, stored_docs, "documents and events match one to one");
    // A write in flight when the store died may have committed with its answer lost; the api
    // cannot know, and says 503. Those are the only writes that may be stored without a 201 —
    // never one made while the store was down — and each still has exactly one event (above).
    let in_flight_503 = answers.iter().filter(|a| a.0 == 503 && a.2 < killed).count();
    assert!(
        unacknowledged_but_stored <= in_flight_503,
        "{unacknowledged_but_stored} stored writes were not acknowledged, but only {in_flight_503} were in flight at the kill"
    );
    // …and only those answered "outcome unknown": "nothing was written" is never a lie.
    assert!(
        unacknowledged_but_stored <= outcome_unknown,
        "{unacknowledged_but_stored} stored writes were not acknowledged, but only {outcome_unknown} were answered store_outcome_unknown"
    );
    assert_eq!(acknowledged_but_lost, 0, "every write answered 201 is stored");
    assert_exactly_once_in_order("subscriber", &tailed.events, &stored_docs);
}
