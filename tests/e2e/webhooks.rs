//! Webhook tasks end to end, with real processes: the api, a `courier-worker` process and a
//! receiver in Python that verifies every request with the PyPI `standardwebhooks` library.
//! Outages, 5xx answers, a killed worker, a 4xx dead letter retried from the api, a delete
//! carrying the last state, and a URL outside the allow-list refused at start-up.

use std::{collections::HashMap, time::Duration};

use courier_tests::{
    Stack,
    chaos::{Metrics, worker_process},
    priorities::{stack_with_collections, wait_tasks_drained},
    process::courier_binary,
    services::ServiceProcess,
    wait_for, wait_until,
    webhooks::{Received, TEST_WEBHOOK_SECRET, WebhookReceiver, orders_with_webhook},
};
use serde_json::{Value, json};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// A worker process delivering the webhooks of `collections` to the receiver on loopback, with
/// quick retries.
async fn webhook_worker(
    stack: &Stack,
    collections: &std::path::Path,
    receiver: &WebhookReceiver,
    id: &str,
) -> ServiceProcess {
    worker_process(
        &stack.store,
        &stack.database,
        &stack.nats,
        id,
        &[
            ("COURIER_COLLECTIONS_FILE", collections.display().to_string()),
            ("COURIER_WEBHOOK_ALLOWED_URLS", format!("http://127.0.0.1:{}/", receiver.port)),
            ("COURIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true".into()),
            ("COURIER_WORKER_BACKOFF_BASE_MS", "100ms".into()),
            ("COURIER_WORKER_BACKOFF_MAX_MS", "500ms".into()),
            ("COURIER_WORKER_MAX_DELIVER", "100".into()),
            ("COURIER_WORKER_ACK_WAIT_MS", "2s".into()),
        ],
    )
    .await
}

/// The stack, the receiver and the collections file naming it.
async fn setup() -> (Stack, WebhookReceiver, tempfile::TempPath) {
    let receiver = WebhookReceiver::start(&[TEST_WEBHOOK_SECRET]).await;
    let secret_file = receiver.secret_file(&[TEST_WEBHOOK_SECRET]);
    let collections = orders_with_webhook(&receiver.url(), &secret_file);
    let stack = stack_with_collections(&collections).await;
    (stack, receiver, collections)
}

async fn jetstream(stack: &Stack) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.expect("NATS"))
}

async fn create(stack: &Stack, body: Value) -> String {
    let (status, created) = stack.post("orders", &body).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().expect("an id").to_owned()
}

async fn update(stack: &Stack, id: &str, body: Value) {
    let response = stack
        .http
        .put(format!("{}/api/v1/orders/{id}", stack.api.url()))
        .json(&body)
        .send()
        .await
        .expect("PUT reaches the api");
    assert_eq!(response.status(), 200);
}

/// Waits until every event in `ids` was answered 2xx; returns every answered request.
async fn wait_delivered(receiver: &WebhookReceiver, ids: &[String]) -> Vec<Received> {
    wait_until("every change delivered", DELIVERY_TIMEOUT, || async {
        let received = receiver.received();
        ids.iter().all(|id| received.iter().any(|r| r.id == *id && r.status == 200))
    })
    .await;
    receiver.received()
}

/// The ids of the events of the tasks the api enqueued, from what arrives: every answered
/// request's event ids, in first-arrival order.
fn distinct_ids(received: &[Received]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for r in received {
        if !ids.contains(&r.id) {
            ids.push(r.id.clone());
        }
    }
    ids
}

#[tokio::test]
async fn an_endpoint_down_then_failing_gets_every_change_in_commit_order_with_stable_ids() {
    let (stack, mut receiver, collections) = setup().await;
    let worker = webhook_worker(&stack, &collections, &receiver, "webhook-1").await;
    receiver.stop().await;
    let docs = [create(&stack, json!({"n": 0})).await, create(&stack, json!({"n": 0})).await];
    for n in 1..=3 {
        for doc in &docs {
            update(&stack, doc, json!({"n": n})).await;
        }
    }
    let metrics = worker.http_url("/metrics");
    wait_until("deliveries failing while the endpoint is down", DELIVERY_TIMEOUT, || async {
        Metrics::scrape(&metrics)
            .await
            .sum("courier_webhook_deliveries_total", "outcome=\"connection_error\"")
            >= 2.0
    })
    .await;
    receiver.restart().await;
    receiver.script(&[500, 500, 500], Duration::ZERO, None).await;
    // 2 documents × (create + 3 updates).
    wait_until("8 distinct events delivered", DELIVERY_TIMEOUT, || async {
        let received = receiver.received();
        let ids = distinct_ids(&received);
        ids.len() == 8
            && ids.iter().all(|id| received.iter().any(|r| r.id == *id && r.status == 200))
    })
    .await;
    let received = receiver.received();
    assert!(received.iter().all(|r| r.verified), "standardwebhooks verified every request");
    assert_eq!(received.iter().filter(|r| r.status == 500).count(), 3);
    let mut by_id: HashMap<&str, &Value> = HashMap::new();
    for r in &received {
        let first = by_id.entry(&r.id).or_insert(&r.event);
        assert_eq!(*first, &r.event, "a retry carries the same webhook-id and body");
        assert_eq!(r.event["id"].as_str(), Some(r.id.as_str()), "webhook-id is the event id");
    }
    for doc in &docs {
        let ns: Vec<i64> = received
            .iter()
            .filter(|r| r.event["doc_id"] == doc.as_str())
            .map(|r| r.event["data"]["n"].as_i64().expect("n"))
            .collect();
        assert!(ns.windows(2).all(|w| w[0] <= w[1]), "{doc}: commit order, got {ns:?}");
        assert_eq!(ns.first(), Some(&0));
        assert_eq!(ns.last(), Some(&3));
    }
    wait_tasks_drained(&jetstream(&stack).await, DELIVERY_TIMEOUT).await;
}

#[tokio::test]
async fn a_delivery_cut_by_kill_9_of_the_worker_is_delivered_by_the_next_worker() {
    let (stack, receiver, collections) = setup().await;
    let mut first = webhook_worker(&stack, &collections, &receiver, "webhook-killed").await;
    receiver.script(&[], Duration::from_secs(5), None).await;
    let doc = create(&stack, json!({"n": 1})).await;
    wait_until("the delivery to arrive", DELIVERY_TIMEOUT, || async {
        !receiver.arrived().is_empty()
    })
    .await;
    first.kill9().await;
    receiver.script(&[], Duration::ZERO, None).await;
    let webhook_id = receiver.arrived()[0].clone();
    let _second = webhook_worker(&stack, &collections, &receiver, "webhook-next").await;
    wait_until("the redelivery answered", DELIVERY_TIMEOUT, || async {
        receiver.arrived().iter().filter(|id| **id == webhook_id).count() >= 2
            && receiver.received().iter().filter(|r| r.id == webhook_id).count() >= 2
    })
    .await;
    let received = receiver.received();
    assert!(received.iter().all(|r| r.verified));
    assert!(received.iter().all(|r| r.event["doc_id"] == doc.as_str()));
    wait_tasks_drained(&jetstream(&stack).await, DELIVERY_TIMEOUT).await;
}

#[tokio::test]
async fn a_4xx_is_dead_lettered_with_its_status_and_a_retry_from_the_api_delivers_it() {
    let (stack, receiver, collections) = setup().await;
    let _worker = webhook_worker(&stack, &collections, &receiver, "webhook-4xx").await;
    receiver.script(&[422], Duration::ZERO, None).await;
    create(&stack, json!({"n": 1})).await;
    let admin = stack.admin_token().await;
    let dead_url = format!("{}/api/v1/queues/tasks/dead", stack.api.url());
    let dead = wait_for("the dead letter", DELIVERY_TIMEOUT, || async {
        let list: Value = stack
            .http
            .get(&dead_url)
            .bearer_auth(&admin)
            .send()
            .await
            .expect("the api answers")
            .json()
            .await
            .expect("JSON");
        list["items"].get(0).cloned().ok_or_else(|| format!("no dead letter yet: {list}"))
    })
    .await;
    let reason = dead["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("webhook answered 422 Unprocessable Entity: answer 422"), "{dead}");
    assert!(!reason.contains(TEST_WEBHOOK_SECRET.trim_start_matches("whsec_")));
    assert_eq!(dead["attempts"], 1, "{dead}");
    assert_eq!(receiver.received().len(), 1, "a 4xx is not retried");
    let retried = stack
        .http
        .post(format!("{dead_url}/{}/retry", dead["id"]))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("the api answers");
    assert!(retried.status().is_success(), "{}", retried.status());
    let id = receiver.received()[0].id.clone();
    wait_delivered(&receiver, &[id]).await;
}

#[tokio::test]
async fn a_delete_delivers_the_document_s_last_state() {
    let (stack, receiver, collections) = setup().await;
    let _worker = webhook_worker(&stack, &collections, &receiver, "webhook-delete").await;
    let doc = create(&stack, json!({"n": 1})).await;
    update(&stack, &doc, json!({"n": 2, "note": "last words"})).await;
    let deleted = stack
        .http
        .delete(format!("{}/api/v1/orders/{doc}", stack.api.url()))
        .send()
        .await
        .expect("DELETE reaches the api");
    assert!(deleted.status().is_success(), "{}", deleted.status());
    wait_until("the delete delivered", DELIVERY_TIMEOUT, || async {
        receiver.received().iter().any(|r| r.event["type"] == "orders.deleted")
    })
    .await;
    let received = receiver.received();
    let delete = received.iter().find(|r| r.event["type"] == "orders.deleted").unwrap();
    assert!(delete.verified);
    assert_eq!(delete.event["doc_id"], doc.as_str());
    assert_eq!(delete.event["data"]["note"], "last words", "{}", delete.event);
    assert_eq!(delete.event["data"]["n"], 2);
}

#[tokio::test]
async fn a_url_outside_the_allow_list_is_refused_at_start_naming_the_collection_and_task() {
    let (stack, receiver, collections) = setup().await;
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(courier_binary("courier-worker"))
            .env("COURIER_NATS_URL", stack.nats.url())
            .env("COURIER_MONGODB_URI", stack.store.uri())
            .env("COURIER_WORKER_METRICS_LISTEN", "127.0.0.1:0")
            .env("COURIER_COLLECTIONS_FILE", &collections)
            .env("COURIER_WEBHOOK_ALLOWED_URLS", "https://hooks.example.com/")
            .output(),
    )
    .await
    .expect("the worker exits at once")
    .expect("the worker runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "collection 'orders': task 'orders.notify': webhook url '{}' is not allowed by COURIER_WEBHOOK_ALLOWED_URLS",
        receiver.url()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[tokio::test]
async fn a_name_resolving_to_a_private_address_is_never_connected_to() {
    let receiver = WebhookReceiver::start(&[TEST_WEBHOOK_SECRET]).await;
    let secret_file = receiver.secret_file(&[TEST_WEBHOOK_SECRET]);
    // Allowed by name, but `localhost` resolves to loopback, which stays refused by default.
    let url = format!("http://localhost:{}/hook", receiver.port);
    let collections = orders_with_webhook(&url, &secret_file);
    let stack = stack_with_collections(&collections).await;
    let worker = worker_process(
        &stack.store,
        &stack.database,
        &stack.nats,
        "webhook-private",
        &[
            ("COURIER_COLLECTIONS_FILE", collections.display().to_string()),
            ("COURIER_WEBHOOK_ALLOWED_URLS", "localhost".into()),
            ("COURIER_WORKER_BACKOFF_BASE_MS", "100ms".into()),
            ("COURIER_WORKER_BACKOFF_MAX_MS", "200ms".into()),
        ],
    )
    .await;
    create(&stack, json!({"n": 1})).await;
    let metrics = worker.http_url("/metrics");
    wait_until("the delivery refused on its resolved address", DELIVERY_TIMEOUT, || async {
        Metrics::scrape(&metrics)
            .await
            .sum("courier_webhook_deliveries_total", "outcome=\"refused_address\"")
            >= 2.0
    })
    .await;
    assert!(receiver.arrived().is_empty(), "nothing reached the loopback receiver");
}

#[tokio::test]
async fn a_429_is_retried_no_sooner_than_its_retry_after() {
    let (stack, receiver, collections) = setup().await;
    let _worker = webhook_worker(&stack, &collections, &receiver, "webhook-429").await;
    receiver.script(&[429], Duration::ZERO, Some(2)).await;
    let started = std::time::Instant::now();
    create(&stack, json!({"n": 1})).await;
    let received = wait_for("the delivery after the 429", DELIVERY_TIMEOUT, || async {
        let received = receiver.received();
        if received.iter().any(|r| r.status == 200) {
            Ok(received)
        } else {
            Err(format!("{received:?}"))
        }
    })
    .await;
    assert_eq!(received.iter().map(|r| r.status).collect::<Vec<_>>(), [429, 200]);
    assert_eq!(received[0].id, received[1].id);
    // The backoff alone is at most 500 ms here: the wait is Retry-After's 2 s.
    assert!(started.elapsed() >= Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_stopping_worker_hands_back_a_delivery_waiting_to_retry_and_exits_promptly() {
    let (stack, mut receiver, collections) = setup().await;
    let mut worker = worker_process(
        &stack.store,
        &stack.database,
        &stack.nats,
        "webhook-stopping",
        &[
            ("COURIER_COLLECTIONS_FILE", collections.display().to_string()),
            ("COURIER_WEBHOOK_ALLOWED_URLS", format!("http://127.0.0.1:{}/", receiver.port)),
            ("COURIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true".into()),
            // Retries a minute apart: only a hand-back lets the worker stop quickly.
            ("COURIER_WORKER_BACKOFF_BASE_MS", "60s".into()),
            ("COURIER_WORKER_BACKOFF_MAX_MS", "60s".into()),
        ],
    )
    .await;
    receiver.stop().await;
    create(&stack, json!({"n": 1})).await;
    let metrics = worker.http_url("/metrics");
    wait_until("the first attempt to fail", DELIVERY_TIMEOUT, || async {
        Metrics::scrape(&metrics)
            .await
            .sum("courier_webhook_deliveries_total", "outcome=\"connection_error\"")
            >= 1.0
    })
    .await;
    let exited = worker.terminate(Duration::from_secs(15)).await;
    assert!(exited.is_some_and(|status| status.success()), "{exited:?}");
    receiver.restart().await;
    let _next = webhook_worker(&stack, &collections, &receiver, "webhook-after-stop").await;
    wait_until("the handed-back task delivered", DELIVERY_TIMEOUT, || async {
        receiver.received().iter().any(|r| r.status == 200)
    })
    .await;
}

#[tokio::test]
async fn during_a_rotation_both_secrets_sign_and_a_receiver_knowing_either_verifies() {
    const NEW_SECRET: &str = "whsec_bmV3LXNlY3JldC1mb3ItdGhlLXJvdGF0aW9uLXRlc3Q=";
    // The receiver has moved to the new secret; the workers still hold both.
    let receiver = WebhookReceiver::start(&[NEW_SECRET]).await;
    let secret_file = receiver.secret_file(&[TEST_WEBHOOK_SECRET, NEW_SECRET]);
    let collections = orders_with_webhook(&receiver.url(), &secret_file);
    let stack = stack_with_collections(&collections).await;
    let _worker = webhook_worker(&stack, &collections, &receiver, "webhook-rotation").await;
    create(&stack, json!({"n": 1})).await;
    wait_until("the delivery", DELIVERY_TIMEOUT, || async { !receiver.received().is_empty() })
        .await;
    let received = receiver.received();
    assert!(received[0].verified && received[0].status == 200, "{received:?}");
}
