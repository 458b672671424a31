//! Least privilege between services on a real nats-server configured with the shipped users and
//! permissions (`charts/courier/files/nats-auth.conf`): each component's user is refused what
//! that component must never do (the broadcaster publishing an event, above all), and the api,
//! broadcaster and worker run end to end with nothing but their own credentials.

use std::time::Duration;

use async_nats::jetstream;
use courier_core::{
    Priority, Task,
    jetstream::{StreamSettings, ensure_streams, events_stream_config},
    subjects::{DLQ_STREAM, EVENTS_STREAM, TASKS_STREAM, workers_consumer},
};
use courier_tests::{
    RunningApi, RunningBroadcaster, RunningWorker, Stack, StoreServer, TEST_ADMIN_PASSWORD,
    TEST_ADMIN_USERNAME, WsClient,
    chaos::Metrics,
    nats_auth::AuthNats,
    server_processed,
    services::{access_token, login},
    wait_until,
};
use courier_worker::WorkerConfig;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::helpers::collect_events;

const WAIT: Duration = Duration::from_secs(10);

/// A raw client logged in as one component that reports the server's errors (a refused publish
/// or subscription is announced with `-ERR 'Permissions Violation …'`, never silently).
struct Probe {
    client: async_nats::Client,
    errors: mpsc::UnboundedReceiver<String>,
}

impl Probe {
    async fn login(nats: &AuthNats, component: &str) -> Self {
        let (tx, errors) = mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::with_user_and_password(
            format!("courier-{component}"),
            nats.password(component),
        )
        .custom_inbox_prefix(format!("_INBOX.courier-{component}"))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(err) = event {
                    let _ = tx.send(err.to_string());
                }
            }
        })
        .connect(nats.url())
        .await
        .unwrap_or_else(|err| panic!("courier-{component} cannot log in: {err}"));
        Probe { client, errors }
    }

    /// Waits for the server's permissions violation naming `subject`.
    async fn refused(&mut self, what: &str, subject: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.errors.recv()).await {
                Ok(Some(error)) => {
                    let error = error.to_lowercase();
                    if error.contains("permissions violation")
                        && error.contains(&format!("\"{}\"", subject.to_lowercase()))
                    {
                        return;
                    }
                }
                Ok(None) => panic!("the connection went away before refusing {what} {subject}"),
                Err(_) => panic!("the server did not refuse {what} {subject} within {WAIT:?}"),
            }
        }
    }

    async fn publish_refused(&mut self, subject: &str) {
        self.client.publish(subject.to_owned(), "{}".into()).await.unwrap();
        self.client.flush().await.unwrap();
        self.refused("publish to", subject).await;
    }

    async fn subscribe_refused(&mut self, subject: &str) {
        let _subscription = self.client.subscribe(subject.to_owned()).await.unwrap();
        self.client.flush().await.unwrap();
        self.refused("subscription to", subject).await;
    }
}

/// A JetStream context of `client` that gives up on an answer after a second (a refused
/// request gets none).
fn js_of(client: async_nats::Client) -> jetstream::Context {
    let mut js = jetstream::new(client);
    js.set_timeout(Duration::from_secs(1));
    js
}

async fn stream_messages(js: &jetstream::Context, stream: &str) -> u64 {
    js.get_stream(stream).await.unwrap().info().await.unwrap().state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_component_is_refused_what_it_must_never_do() {
    courier_tests::init_test_logging();
    let nats = AuthNats::start().await;
    let api = js_of(nats.client("api").await);
    ensure_streams(&api, StreamSettings::with_replicas(1))
        .await
        .expect("the api creates and updates the streams");

    // The broadcaster: no event, task or dead letter, no stream changes, no other's replies.
    let mut broadcaster = Probe::login(&nats, "broadcaster").await;
    for subject in [
        "events.x.y.created",
        "events.pets.abc.enriched",
        "tasks.normal.pets.enrich",
        "dlq.tasks.normal.pets.enrich",
        "$JS.API.STREAM.UPDATE.EVENTS",
        "$JS.API.STREAM.DELETE.EVENTS",
        "$JS.API.STREAM.PURGE.EVENTS",
        "$JS.API.CONSUMER.MSG.NEXT.TASKS.workers-normal",
        // Consumers only in the named, filtered form: not the bare create (whose body may name
        // any durable), not a named one without a filter, not a durable, not on TASKS.
        "$JS.API.CONSUMER.CREATE.EVENTS",
        "$JS.API.CONSUMER.CREATE.EVENTS.mine",
        "$JS.API.CONSUMER.DURABLE.CREATE.EVENTS.mine",
        "$JS.API.CONSUMER.CREATE.TASKS.mine.tasks.>",
    ] {
        broadcaster.publish_refused(subject).await;
    }
    broadcaster.subscribe_refused("_INBOX.courier-api.>").await;
    broadcaster.subscribe_refused("events.>").await;
    // Through JetStream, as the service itself connects: no ack, and nothing stored.
    let as_broadcaster = js_of(nats.client("broadcaster").await);
    let publish = as_broadcaster.publish("events.x.y.created", "{}".into()).await;
    let acked = match publish {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    assert!(!acked, "JetStream acknowledged an event published with the broadcaster's credentials");
    let mut shorter = events_stream_config(&StreamSettings::with_replicas(1));
    shorter.max_age = Duration::from_secs(1);
    assert!(as_broadcaster.update_stream(shorter).await.is_err(), "the broadcaster changed EVENTS");
    assert_eq!(stream_messages(&api, EVENTS_STREAM).await, 0, "EVENTS must hold nothing");
    let mut events = api.get_stream(EVENTS_STREAM).await.unwrap();
    let max_age = events.info().await.unwrap().config.max_age;
    assert_eq!(
        max_age,
        events_stream_config(&StreamSettings::with_replicas(1)).max_age,
        "EVENTS unchanged"
    );

    // The worker: only `enriched` events and dead letters; no task, no created/updated/deleted.
    let mut worker = Probe::login(&nats, "worker").await;
    for subject in [
        "tasks.normal.pets.enrich",
        "events.pets.abc.created",
        "events.pets.abc.updated",
        "events.pets.abc.deleted",
        // Chat and per-user channels have no tasks: no `enriched` event there either (a forged
        // chat message would speak for a person).
        "events.chat.r1.enriched",
        "events.user.u1.enriched",
        "ephemeral.chat.r1.typing",
        "rpc.chat.membership",
        "$JS.API.STREAM.PURGE.TASKS",
        "$JS.API.STREAM.MSG.DELETE.DLQ",
        "$JS.API.CONSUMER.DELETE.TASKS.workers-normal",
        "$JS.API.CONSUMER.CREATE.TASKS.other.tasks.>",
    ] {
        worker.publish_refused(subject).await;
    }
    worker.subscribe_refused("rpc.chat.membership").await;
    let as_worker = js_of(nats.client("worker").await);
    as_worker
        .publish("events.pets.abc.enriched", "{}".into())
        .await
        .unwrap()
        .await
        .expect("the worker announces its results");
    as_worker
        .publish("dlq.tasks.normal.pets.enrich", "{}".into())
        .await
        .unwrap()
        .await
        .expect("the worker writes dead letters");
    assert_eq!(stream_messages(&api, EVENTS_STREAM).await, 1);
    assert_eq!(stream_messages(&api, DLQ_STREAM).await, 1);

    // An external worker: pulls from and acknowledges on the external-<kind> consumers, writes
    // their dead letters; never an event or a task, nor the built-in workers' tasks.
    let mut external = Probe::login(&nats, "external").await;
    for subject in [
        "events.orders.abc.created",
        "events.orders.abc.enriched",
        "tasks.external.orders.ship",
        "tasks.normal.pets.enrich",
        "dlq.tasks.normal.pets.enrich",
        "$JS.API.CONSUMER.MSG.NEXT.TASKS.workers-high",
        "$JS.API.CONSUMER.MSG.NEXT.TASKS.workers-normal",
        "$JS.API.CONSUMER.MSG.NEXT.TASKS.workers-low",
        "$JS.API.CONSUMER.MSG.NEXT.TASKS.workers",
        "$JS.ACK.TASKS.workers-normal.1.1.1.1.1.1",
        "$JS.API.CONSUMER.MSG.NEXT.EVENTS.x",
        "$JS.API.CONSUMER.CREATE.TASKS.mine.tasks.external.orders.ship",
        "$JS.API.CONSUMER.DURABLE.CREATE.TASKS.mine",
        "$JS.API.CONSUMER.DELETE.TASKS.external-orders-ship",
        "$JS.API.STREAM.INFO.TASKS",
        "$JS.API.STREAM.PURGE.TASKS",
        "$JS.API.STREAM.MSG.DELETE.TASKS",
        "rpc.chat.membership",
    ] {
        external.publish_refused(subject).await;
    }
    external.subscribe_refused("events.>").await;
    external.subscribe_refused("_INBOX.courier-worker.>").await;
    let as_external = js_of(nats.client("external").await);
    as_external
        .publish("dlq.tasks.external.orders.ship", "{}".into())
        .await
        .unwrap()
        .await
        .expect("an external worker writes its dead letters");
    assert_eq!(stream_messages(&api, DLQ_STREAM).await, 2);

    // The operator: reads the backlog, nothing else.
    let mut operator = Probe::login(&nats, "operator").await;
    for subject in ["events.x.y.created", "tasks.normal.pets.enrich", "$JS.API.STREAM.INFO.EVENTS"]
    {
        operator.publish_refused(subject).await;
    }

    // The api may not read the broadcasters' typing and presence.
    let mut as_api = Probe::login(&nats, "api").await;
    as_api.subscribe_refused("ephemeral.chat.>").await;

    // Nobody gets in without a user, or with another component's password.
    assert!(async_nats::connect(nats.url()).await.is_err(), "anonymous login accepted");
    let wrong = async_nats::ConnectOptions::with_user_and_password(
        "courier-broadcaster".into(),
        nats.password("api"),
    )
    .connect(nats.url())
    .await;
    assert!(wrong.is_err(), "the broadcaster logged in with the api's password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_signals_and_membership_questions_flow_between_broadcasters_and_the_api() {
    courier_tests::init_test_logging();
    let nats = AuthNats::start().await;
    let api = nats.client("api").await;
    let one = nats.client("broadcaster").await;
    let other = nats.client("broadcaster").await;

    // Typing and presence: core NATS between broadcasters.
    let mut signals = other.subscribe("ephemeral.chat.r1.*").await.unwrap();
    server_processed(&other).await;
    one.publish("ephemeral.chat.r1.typing", "{\"user\":\"ana\"}".into()).await.unwrap();
    let signal = tokio::time::timeout(WAIT, signals.next()).await.expect("signal in time");
    assert_eq!(signal.unwrap().subject.as_str(), "ephemeral.chat.r1.typing");

    // Membership: a broadcaster asks, an api (queue group) answers on the asker's own inbox.
    let mut questions = api.queue_subscribe("rpc.chat.membership", "api".into()).await.unwrap();
    server_processed(&api).await;
    let answering = {
        let api = api.clone();
        tokio::spawn(async move {
            let question = tokio::time::timeout(WAIT, questions.next())
                .await
                .expect("a question in time")
                .expect("subscription open");
            let reply = question.reply.expect("a request has a reply subject");
            assert!(reply.starts_with("_INBOX.courier-broadcaster."), "{reply}");
            api.publish(reply, "{\"member\":true}".into()).await.unwrap();
            api.flush().await.unwrap();
        })
    };
    let answer = tokio::time::timeout(
        WAIT,
        one.request("rpc.chat.membership", "{\"room\":\"r1\",\"user\":\"u1\"}".into()),
    )
    .await
    .expect("an answer in time")
    .expect("the api answers the broadcaster");
    assert_eq!(&answer.payload[..], b"{\"member\":true}");
    answering.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_broadcaster_and_worker_run_end_to_end_with_only_their_own_credentials() {
    courier_tests::init_test_logging();
    let (nats, store) = tokio::join!(AuthNats::start(), StoreServer::start());
    let database = format!("courier_{}", uuid::Uuid::now_v7().simple());

    // The broadcaster starts first: it creates EVENTS if missing, then reads it.
    let mut broadcaster_config = Stack::broadcaster_config(&nats.server);
    broadcaster_config.nats.auth = nats.auth("broadcaster");
    let broadcaster = RunningBroadcaster::start(broadcaster_config).await;

    let mut api_config = Stack::api_config(&store, &database, &nats.server);
    api_config.nats.auth = nats.auth("api");
    // Only the fast paths publish here: the relay never takes over a record, so every event
    // below was published by the component that wrote it, with its own credentials.
    api_config.relay_grace = Duration::from_secs(3600);
    api_config.jetstream_metrics_interval = Duration::from_millis(200);
    let api = RunningApi::start(api_config).await;

    let mut worker_config = WorkerConfig::for_local(&nats.url());
    worker_config.nats.auth = nats.auth("worker");
    worker_config.mongodb_uri = store.uri();
    worker_config.mongodb_database = database.clone();
    worker_config.mongodb_timeout = Duration::from_secs(2);
    let handlers =
        courier_worker::standard_handlers(&worker_config, nats.client("worker").await).await;
    let worker = RunningWorker::start(worker_config, handlers.unwrap()).await;

    let http = reqwest::Client::new();
    let token = access_token(&http, &api.url(), "least-privilege").await;
    let mut live = WsClient::connect(&broadcaster.ws_url()).await.unwrap();
    live.subscribe("pets", None, None).await.unwrap();

    // POST a pet: the api publishes pets.created and enqueues pets.enrich; the worker enriches
    // it and announces pets.enriched; the broadcaster delivers both.
    let created: Value = http
        .post(format!("{}/api/v1/pets", api.url()))
        .bearer_auth(&token)
        .json(&json!({"name": "Rex", "species": "dog", "age": 3, "vaccinated": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap_or_else(|| panic!("no id in {created}")).to_owned();
    let got = collect_events(&mut live, 2, Duration::from_secs(20)).await;
    let types: Vec<&str> = got.iter().map(|g| g.event.event_type.as_str()).collect();
    assert_eq!(types, ["pets.created", "pets.enriched"]);
    assert!(got.iter().all(|g| g.event.doc_id == id));

    // A replay (`since`) reads EVENTS through a filtered consumer of its own.
    let mut replay = WsClient::connect(&broadcaster.ws_url()).await.unwrap();
    replay.subscribe(&format!("pets:{id}"), Some(0), None).await.unwrap();
    let replayed = collect_events(&mut replay, 2, Duration::from_secs(10)).await;
    assert_eq!(replayed.iter().map(|g| g.seq).collect::<Vec<_>>(), [got[0].seq, got[1].seq]);

    // A task nobody handles: the worker dead-letters it; the api reads queue state and the DLQ.
    let as_api = jetstream::new(nats.client("api").await);
    let task = Task::new("nobody.handles", "pets", &id, 1, None, "least-privilege".into());
    as_api
        .publish(task.subject(), serde_json::to_vec(&task).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
    // The queue endpoints are the admin's (docs/security.md).
    let admin = login(&http, &api.url(), TEST_ADMIN_USERNAME, TEST_ADMIN_PASSWORD).await;
    let dead_url = format!("{}/api/v1/queues/tasks/dead", api.url());
    wait_until("the dead letter to show in the api", WAIT, || async {
        let dead: Value =
            http.get(&dead_url).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
        dead["items"].as_array().is_some_and(|items| {
            items.iter().any(|item| item["task_id"] == task.id.to_string().as_str())
        })
    })
    .await;
    let queues =
        http.get(format!("{}/api/v1/queues", api.url())).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(queues.status(), 200);
    let queues: Value = queues.json().await.unwrap();
    assert!(queues.to_string().contains(&workers_consumer(Priority::Normal)), "{queues}");
    let metrics_url = format!("{}/metrics", api.url());
    wait_until("the api's JetStream gauges", WAIT, || async {
        let metrics = Metrics::scrape(&metrics_url).await;
        metrics.sum("courier_jetstream_stream_messages", &format!("stream=\"{DLQ_STREAM}\"")) == 1.0
    })
    .await;

    // The operator's backlog read (autoscale.rs: consumer info, then stream info), which also
    // shows the worker's acks landed: a work queue drops a message only once it is acked.
    let as_operator = jetstream::new(nats.client("operator").await);
    let tasks = as_operator.get_stream_no_info(TASKS_STREAM).await.unwrap();
    wait_until("every task acknowledged", WAIT, || async {
        let info = tasks
            .consumer_info(workers_consumer(Priority::Normal))
            .await
            .expect("the operator reads it");
        let left = tasks.get_info().await.expect("the operator reads TASKS").state.messages;
        info.num_pending == 0 && info.num_ack_pending == 0 && left == 0
    })
    .await;

    worker.stop().await;
    broadcaster.stop().await;
    api.stop().await;
}
