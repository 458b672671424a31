//! External workers end to end, with real processes: the example worker in Python
//! (`examples/external_worker.py`, PyPI `nats-py`) logs in to a nats-server that runs the shipped
//! permissions as `courier-external`, takes the tasks of an `external: true` trigger from the
//! consumer the Courier worker created, and makes each task's write through the api exactly
//! once: a delivery abandoned after its write (a worker that died before its ack) is redelivered
//! and settled by a 412; a task whose write keeps failing lands in the same dead letters as the
//! built-in workers', and a retry from the api puts it back on its own subject whatever the dead
//! letter's headers say.

use std::{path::Path, time::Duration};

use async_nats::{
    HeaderMap,
    jetstream::{self, consumer::PullConsumer},
};
use courier_core::subjects::{TASKS_STREAM, external_consumer};
use courier_tests::{
    RunningApi, RunningWorker, Stack, StoreServer, TEST_ADMIN_PASSWORD, TEST_ADMIN_USERNAME,
    nats_auth::AuthNats,
    process::{find_tool, kill9, spawn},
    services::login,
    wait_until,
};
use courier_worker::WorkerConfig;
use futures::TryStreamExt;
use serde_json::{Value, json};
use tokio::process::Child;

const WAIT: Duration = Duration::from_secs(60);
const KIND: &str = "orders.ship";

/// `orders`, anyone may write; every created order is left to an external worker.
fn collections_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("collections.yaml");
    let text = "collections:
  - name: orders
    access: {read: public, write: public}
    schema:
      type: object
      properties:
        n: {type: integer}
        note: {type: string}
    tasks:
      - kind: orders.ship
        on: [create]
        external: true
";
    std::fs::write(&path, text).expect("write the collections file");
    path
}

struct Setup {
    nats: AuthNats,
    api: RunningApi,
    worker: RunningWorker,
    http: reqwest::Client,
    dir: tempfile::TempDir,
    _store: StoreServer,
}

/// NATS with the shipped users, the api and a Courier worker each with its own user; the worker
/// redelivers after 2 s and gives a task 3 deliveries.
async fn setup() -> Setup {
    courier_tests::init_test_logging();
    let (nats, store) = tokio::join!(AuthNats::start(), StoreServer::start());
    let dir = tempfile::tempdir().expect("temp dir");
    let collections = collections_file(dir.path());
    let database = format!("courier_{}", uuid::Uuid::now_v7().simple());
    let mut api_config = Stack::api_config(&store, &database, &nats.server);
    api_config.nats.auth = nats.auth("api");
    api_config.collections_file = collections.clone();
    let api = RunningApi::start(api_config).await;
    let mut config = WorkerConfig::for_local(&nats.url());
    config.nats.auth = nats.auth("worker");
    config.mongodb_uri = store.uri();
    config.mongodb_database = database;
    config.mongodb_timeout = Duration::from_secs(2);
    config.collections_file = Some(collections);
    config.ack_wait = Duration::from_secs(2);
    config.max_deliver = 3;
    let handlers = courier_worker::standard_handlers(&config, nats.client("worker").await)
        .await
        .expect("handlers");
    let worker = RunningWorker::start(config, handlers).await;
    Setup { nats, api, worker, http: reqwest::Client::new(), dir, _store: store }
}

impl Setup {
    async fn create(&self, n: i64) -> String {
        let response = self
            .http
            .post(format!("{}/api/v1/orders", self.api.url()))
            .json(&json!({"n": n}))
            .send()
            .await
            .expect("POST reaches the api");
        assert_eq!(response.status(), 201);
        let created: Value = response.json().await.expect("JSON");
        created["id"].as_str().expect("an id").to_owned()
    }

    /// The order's version (its ETag) and body.
    async fn order(&self, id: &str) -> (String, Value) {
        let response = self
            .http
            .get(format!("{}/api/v1/orders/{id}", self.api.url()))
            .send()
            .await
            .expect("GET reaches the api");
        assert_eq!(response.status(), 200);
        let etag = response.headers()["etag"].to_str().expect("ASCII").to_owned();
        (etag, response.json().await.expect("JSON"))
    }

    /// The example worker, as a process logged in as `courier-external`.
    fn start_example(&self) -> Child {
        let python = find_tool("python", "COURIER_PYTHON_BIN");
        let script = courier_tests::workspace_root().join("examples/external_worker.py");
        let password_file = self.nats.auth("external").nats_password_file.expect("a file");
        let envs = [
            ("COURIER_NATS_URL", self.nats.url()),
            ("COURIER_NATS_PASSWORD_FILE", password_file.display().to_string()),
            ("COURIER_API_URL", self.api.url()),
            ("COURIER_TASK_KIND", KIND.to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v));
        spawn(&python, &[script.display().to_string()], &envs, &self.dir.path().join("worker.log"))
    }

    fn example_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("worker.log")).unwrap_or_default()
    }

    /// The external consumer, read as the api (which may read every consumer's state).
    async fn consumer(&self) -> PullConsumer {
        self.tasks_stream().await.get_consumer(&external_consumer(KIND)).await.expect("consumer")
    }

    async fn tasks_stream(&self) -> jetstream::stream::Stream {
        let js = jetstream::new(self.nats.client("api").await);
        js.get_stream(TASKS_STREAM).await.expect("TASKS")
    }

    /// Waits until the external consumer has nothing pending or unacknowledged.
    async fn wait_settled(&self) {
        let stream = self.tasks_stream().await;
        let name = external_consumer(KIND);
        wait_until("every external task settled", WAIT, || {
            let (stream, name) = (&stream, &name);
            async move {
                let info = stream.consumer_info(name).await.expect("consumer info");
                info.num_pending == 0 && info.num_ack_pending == 0
            }
        })
        .await;
    }

    /// Waits until the example's write shows on order `id`.
    async fn wait_shipped(&self, id: &str) {
        wait_until(&format!("order {id} shipped"), WAIT, || async {
            self.order(id).await.1["note"] == "shipped"
        })
        .await;
    }

    async fn dead_letters(&self, admin: &str) -> Vec<Value> {
        let url = format!("{}/api/v1/queues/tasks/dead", self.api.url());
        let dead: Value = self
            .http
            .get(url)
            .bearer_auth(admin)
            .send()
            .await
            .expect("GET dead letters")
            .json()
            .await
            .expect("JSON");
        dead["items"].as_array().cloned().unwrap_or_default()
    }

    async fn retry(&self, admin: &str, id: &Value) -> Value {
        let url = format!("{}/api/v1/queues/tasks/dead/{id}/retry", self.api.url());
        let response = self.http.post(url).bearer_auth(admin).send().await.expect("POST retry");
        assert_eq!(response.status(), 202);
        response.json().await.expect("JSON")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_makes_each_write_once_and_dead_letters_what_keeps_failing() {
    let setup = setup().await;
    // The Courier worker created the consumer at start; tasks wait in TASKS until pulled.
    let consumer = setup.consumer().await;
    assert_eq!(consumer.cached_info().config.filter_subject, "tasks.external.orders.ship");
    assert!(setup.worker.metrics_addr.port() > 0, "the worker runs");

    // A worker that died after its write, before its ack: the test takes the first task as
    // courier-external, makes the task's write through the api and never acknowledges it.
    let abandoned = setup.create(1).await;
    let as_external = jetstream::new(setup.nats.client("external").await);
    let tasks: PullConsumer = as_external
        .get_consumer_from_stream(external_consumer(KIND), TASKS_STREAM)
        .await
        .expect("courier-external reads its consumer");
    let mut batch = tasks
        .batch()
        .max_messages(1)
        .expires(Duration::from_secs(10))
        .messages()
        .await
        .expect("pull");
    let first = batch.try_next().await.expect("a delivery").expect("the first task");
    let task: Value = serde_json::from_slice(&first.payload).expect("a task");
    assert_eq!((task["kind"].as_str(), task["doc_id"].as_str()), (Some(KIND), Some(&*abandoned)));
    assert_eq!(task["event"]["data"]["n"], 1, "the task carries its change's event");
    let written = setup
        .http
        .patch(format!("{}/api/v1/orders/{abandoned}", setup.api.url()))
        .header("If-Match", format!("\"{}\"", task["doc_version"]))
        .json(&json!({"note": "shipped"}))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(written.status(), 200, "the abandoned delivery's write");
    drop(batch);

    // An order deleted before any worker got to it: its write fails (404) on every delivery.
    let doomed = setup.create(2).await;
    let deleted = setup
        .http
        .delete(format!("{}/api/v1/orders/{doomed}", setup.api.url()))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), 204);

    let admin =
        login(&setup.http, &setup.api.url(), TEST_ADMIN_USERNAME, TEST_ADMIN_PASSWORD).await;
    let mut example = setup.start_example();
    let orders = [setup.create(3).await, setup.create(4).await];
    for id in &orders {
        setup.wait_shipped(id).await;
    }
    wait_until("the doomed task dead-lettered", WAIT, || async {
        !setup.dead_letters(&admin).await.is_empty()
    })
    .await;
    // The abandoned task's redelivery too (its write is there already: 412, then its ack).
    setup.wait_settled().await;
    // kill -9 and a restart: a task enqueued meanwhile waits and is taken after it.
    kill9(&mut example).await;
    let later = setup.create(5).await;
    let mut example = setup.start_example();
    setup.wait_shipped(&later).await;
    setup.wait_settled().await;

    for id in orders.iter().chain([&abandoned, &later]) {
        let (etag, order) = setup.order(id).await;
        assert_eq!(order["note"], "shipped", "{id}: {order}\n{}", setup.example_log());
        assert_eq!(etag, "\"2\"", "{id}: created, then written exactly once");
    }
    let info = setup.consumer().await.info().await.expect("info").clone();
    // 1 + 1 (the abandoned task), 3 (the doomed one), 2 + 1.
    assert!(info.delivered.consumer_sequence >= 8, "{info:?}");

    // The doomed task went where the built-in workers' dead letters go, after 3 deliveries.
    let dead = setup.dead_letters(&admin).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let letter = &dead[0];
    assert_eq!(letter["subject"], "dlq.tasks.external.orders.ship");
    assert_eq!(letter["kind"], KIND);
    assert_eq!(letter["attempts"], 3, "{letter}");
    assert_eq!(letter["task"]["doc_id"], doomed.as_str());
    assert_eq!(letter["task_id"], letter["task"]["id"]);
    assert!(letter["reason"].as_str().unwrap_or("").contains("404"), "{letter}");

    // A retry puts it back on its own subject: the example takes it and gives up again.
    let retried = setup.retry(&admin, &letter["id"]).await;
    assert_eq!(retried["subject"], "tasks.external.orders.ship");
    wait_until("the retried task dead-lettered again", WAIT, || async {
        let dead = setup.dead_letters(&admin).await;
        dead.len() == 1 && dead[0]["id"] != letter["id"] && dead[0]["task"] == letter["task"]
    })
    .await;

    // courier-external may write dead letters, on dlq.tasks.external.> only; a header naming
    // another subject does not send a retried task there.
    let mut headers = HeaderMap::new();
    headers.insert("Courier-Original-Subject", "tasks.high.pets.enrich");
    headers.insert("Courier-Dead-Reason", "forged");
    as_external
        .publish_with_headers("dlq.tasks.external.orders.ship", headers, "{}".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let forged = setup.dead_letters(&admin).await.into_iter().find(|d| d["reason"] == "forged");
    let retried = setup.retry(&admin, &forged.expect("the forged dead letter")["id"]).await;
    assert_eq!(retried["subject"], "tasks.external.orders.ship");
    kill9(&mut example).await;
}
