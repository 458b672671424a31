//! External workers end to end, with real processes: the example worker in Python
//! (`examples/external_worker.py`, PyPI `nats-py`) logs in to a nats-server that runs the shipped
//! permissions as `courier-external`, takes the tasks of an `external: true` trigger from the
//! consumer the Courier worker created, and makes each task's write through the api exactly
//! once: a delivery abandoned after its write, and a `kill -9` of the example after its write
//! reached the api but before its ack (a proxy holds the api's answer), are redelivered and
//! settled by a 412; a task whose write keeps failing lands in the same dead letters as the
//! built-in workers', and a retry from the api puts it back on its own subject whatever the dead
//! letter's headers say.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

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
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    process::Child,
};

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

/// A TCP proxy in front of the api that, while `hold` is set, passes requests on but keeps the
/// api's answers from the client: the write is made, and the client waits. HTTP/1.1 with
/// `Connection: close` (what `urllib` sends), so an answer is everything the api sends back.
struct HoldingProxy {
    port: u16,
    hold: Arc<AtomicBool>,
    /// Answers held so far.
    held: Arc<AtomicUsize>,
}

impl HoldingProxy {
    async fn start(api_url: &str) -> Self {
        let upstream = api_url.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (hold, held) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let (hold2, held2) = (hold.clone(), held.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, hold, held) = (upstream.clone(), hold2.clone(), held2.clone());
                tokio::spawn(async move {
                    let Ok(api) = TcpStream::connect(&upstream).await else { return };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_api, mut to_api) = api.into_split();
                    let request = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_client, &mut to_api).await;
                    });
                    let mut answer = Vec::new();
                    let _ = from_api.read_to_end(&mut answer).await;
                    if hold.load(Ordering::SeqCst) {
                        held.fetch_add(1, Ordering::SeqCst);
                        // Until the client goes away.
                        let _ = request.await;
                    } else {
                        let _ = to_client.write_all(&answer).await;
                        let _ = to_client.shutdown().await;
                    }
                });
            }
        });
        HoldingProxy { port, hold, held }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
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

    /// The example worker, as a process logged in as `courier-external`, writing through `api`.
    fn start_example(&self, api: &str) -> Child {
        let python = find_tool("python", "COURIER_PYTHON_BIN");
        let script = courier_tests::workspace_root().join("examples/external_worker.py");
        let password_file = self.nats.auth("external").nats_password_file.expect("a file");
        let envs = [
            ("COURIER_NATS_URL", self.nats.url()),
            ("COURIER_NATS_PASSWORD_FILE", password_file.display().to_string()),
            ("COURIER_API_URL", api.to_owned()),
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
    // Waiting for an external worker: counted apart from the built-in workers' backlog.
    let queues: Value = setup
        .http
        .get(format!("{}/api/v1/queues", setup.api.url()))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("GET queues")
        .json()
        .await
        .expect("JSON");
    let tasks_queue = &queues["queues"][0];
    assert_eq!(tasks_queue["external"]["queued"], 2, "{queues}");
    assert_eq!((&tasks_queue["pending"], &tasks_queue["in_flight"]), (&json!(0), &json!(0)));
    assert_eq!(tasks_queue["by_kind"][KIND]["queued"], 2, "{queues}");
    let proxy = HoldingProxy::start(&setup.api.url()).await;
    let mut example = setup.start_example(&proxy.url());
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
    // kill -9 between the write and the ack: the api made the write, its answer is held, the
    // example is killed waiting for it; the restarted example gets the task again after
    // ack_wait, and its write is refused with 412: done, acknowledged.
    let deliveries = setup.consumer().await.info().await.expect("info").delivered.consumer_sequence;
    proxy.hold.store(true, Ordering::SeqCst);
    let later = setup.create(5).await;
    wait_until("the example's write made, its answer held", WAIT, || async {
        proxy.held.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(setup.order(&later).await.0, "\"2\"", "the write was made before the kill");
    kill9(&mut example).await;
    proxy.hold.store(false, Ordering::SeqCst);
    let mut example = setup.start_example(&proxy.url());
    setup.wait_settled().await;
    let info = setup.consumer().await.info().await.expect("info").clone();
    assert!(info.delivered.consumer_sequence >= deliveries + 2, "delivered again: {info:?}");

    for id in orders.iter().chain([&abandoned, &later]) {
        let (etag, order) = setup.order(id).await;
        assert_eq!(order["note"], "shipped", "{id}: {order}\n{}", setup.example_log());
        assert_eq!(etag, "\"2\"", "{id}: created, then written exactly once");
    }
    // 1 + 1 (the abandoned task), 3 (the doomed one), 2, 1 + 1 (the killed example's).
    assert!(info.delivered.consumer_sequence >= 9, "{info:?}");

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
