//! The worker with real JetStream and store: pets are enriched (stored with the pet, announced as
//! `pets.enriched`), exactly once even when a worker process dies mid-task or right after its
//! commit; failing tasks retry with growing delays and end in the DLQ; tasks nobody can process,
//! or that cannot be decoded, go straight to the DLQ.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_nats::jetstream;
use courier_core::{
    Priority, Task,
    collection_spec::{TaskTrigger, TriggerOn},
    subjects::{DLQ_STREAM, TASKS_STREAM, task_subject},
};
use courier_tests::{
    NatsServer, RunningWorker, Stack, WsClient,
    chaos::{self, Metrics},
    priorities::{pets_tasks, stack_with_collections, wait_tasks_drained},
    services::ServiceProcess,
    wait_for, wait_until,
};
use courier_worker::{
    WorkerConfig,
    consumer::dead_letter_header,
    handlers::{Handlers, TaskError, TaskHandler},
};
use futures::future::BoxFuture;
use mongodb::bson::{doc, oid::ObjectId};
use serde_json::{Value, json};

use crate::helpers::{assert_no_event, collect_events};

pub async fn wait_for_messages(js: &jetstream::Context, stream: &str, count: u64) {
    wait_for(&format!("{stream} to hold {count} messages"), Duration::from_secs(15), || async {
        let messages = js.get_stream(stream).await.unwrap().info().await.unwrap().state.messages;
        if messages == count { Ok(()) } else { Err(format!("{messages} messages")) }
    })
    .await;
}

/// Waits until the work queue is empty at every priority and nothing is in flight.
pub async fn wait_queue_drained(js: &jetstream::Context) {
    wait_tasks_drained(js, Duration::from_secs(20)).await;
}

/// A worker config against the stack's NATS and database, with quick retries.
pub fn worker_config(stack: &Stack) -> WorkerConfig {
    let mut config = WorkerConfig::for_local(&stack.nats.url());
    config.mongodb_uri = stack.store.uri();
    config.mongodb_database = stack.database.clone();
    config.mongodb_timeout = Duration::from_secs(2);
    config.backoff_base = Duration::from_millis(100);
    config.backoff_max = Duration::from_secs(1);
    config
}

/// The `pets.enrich` handler on its own (worker id `test-worker`), and the store it writes to.
async fn pets_handler(
    stack: &Stack,
    config: &WorkerConfig,
) -> (courier_worker::pets::PetsEnrich, courier_worker::courier_store::Store) {
    let nats = async_nats::connect(stack.nats.url()).await.unwrap();
    let store = courier_worker::courier_store::Store::connect(
        &config.mongodb_uri,
        &config.mongodb_database,
        Duration::from_secs(2),
        "test",
    )
    .await
    .unwrap();
    let outbox = courier_worker::courier_store::Outbox::new(
        store.clone(),
        nats,
        Arc::new(courier_worker::courier_store::OutboxMetrics::default()),
    );
    let pets =
        courier_worker::pets::PetsEnrich::new(store.clone(), outbox, "test-worker".into(), None)
            .unwrap();
    (pets, store)
}

/// An in-process worker with the standard handlers (`pets.enrich`, `system.noop`).
pub async fn standard_worker(config: WorkerConfig) -> RunningWorker {
    let nats = async_nats::connect(config.nats.nats_url.clone()).await.unwrap();
    let handlers = courier_worker::standard_handlers(&config, nats).await.unwrap();
    RunningWorker::start(config, handlers).await
}

/// A signed-in user's bearer token (pets need one for writes, the queue endpoints for all).
pub async fn writer_token(stack: &Stack) -> Option<String> {
    // Unique per call (usernames are at most 32 characters): the random end of a v7 uuid.
    let unique = uuid::Uuid::now_v7().simple().to_string();
    Some(stack.token(&format!("worker-tests-{}", &unique[20..])).await)
}

/// Sends `method path` with a JSON body (and the token, if any); the status and JSON answer.
pub async fn send(
    stack: &Stack,
    token: &Option<String>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (reqwest::StatusCode, Value) {
    let mut request = stack.http.request(method, format!("{}{path}", stack.api.url()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Creates a pet through the api; its id.
pub async fn create_pet(stack: &Stack, token: &Option<String>, body: Value) -> String {
    let (status, created) =
        send(stack, token, reqwest::Method::POST, "/api/v1/pets", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

async fn subscribed(stack: &Stack, channel: &str, since: Option<u64>) -> WsClient {
    let mut ws = stack.ws().await;
    ws.subscribe(channel, since, None).await.unwrap();
    ws
}

async fn task_results(stack: &Stack) -> mongodb::Collection<mongodb::bson::Document> {
    let client = mongodb::Client::with_uri_str(stack.store.uri()).await.unwrap();
    client.database(&stack.database).collection("_task_results")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_pet_is_enriched_stored_and_announced_then_re_enriched_on_update() {
    let stack = Stack::start().await;
    let worker = standard_worker(worker_config(&stack)).await;
    let token = writer_token(&stack).await;
    let mut all = subscribed(&stack, "pets", None).await;

    let id = create_pet(
        &stack,
        &token,
        json!({"name": "Rex", "species": "DOG", "age": 9, "vaccinated": false}),
    )
    .await;
    let events = collect_events(&mut all, 2, Duration::from_secs(10)).await;
    let types: Vec<&str> = events.iter().map(|g| g.event.event_type.as_str()).collect();
    assert_eq!(types, ["pets.created", "pets.enriched"]);
    let enriched = &events[1].event;
    assert_eq!(enriched.doc_id, id);
    assert_eq!(enriched.data["id"], id.as_str());
    let enrichment = &enriched.data["enrichment"];
    assert_eq!(enrichment["species"]["key"], "dog");
    assert_eq!(enrichment["species"]["group"], "mammal");
    assert_eq!(enrichment["statistics"]["age_category"], "senior");
    assert_eq!(enrichment["statistics"]["vaccination_status"], "not_vaccinated");
    assert_eq!(
        enrichment["statistics"]["tip_count"],
        enrichment["health_tips"].as_array().unwrap().len()
    );
    assert_eq!(enrichment["alerts"][0]["code"], "not_vaccinated");
    assert_eq!(enrichment["metadata"]["source_version"], 1);
    assert!(enrichment["metadata"]["processed_at"].as_str().unwrap().ends_with('Z'));
    assert!(enrichment["metadata"]["worker_id"].as_str().is_some_and(|w| !w.is_empty()));

    // The per-document channel replays the same two events, in order.
    let mut one = subscribed(&stack, &format!("pets:{id}"), Some(0)).await;
    let replayed = collect_events(&mut one, 2, Duration::from_secs(5)).await;
    assert_eq!(
        replayed.iter().map(|g| g.event.id).collect::<Vec<_>>(),
        events.iter().map(|g| g.event.id).collect::<Vec<_>>()
    );

    // GET returns the stored enrichment, at version 2.
    let response =
        stack.http.get(format!("{}/api/v1/pets/{id}", stack.api.url())).send().await.unwrap();
    assert_eq!(response.headers()["etag"], "\"2\"");
    let pet: Value = response.json().await.unwrap();
    assert_eq!(pet["enrichment"], *enrichment);

    // An update re-enriches (the client cannot set `enrichment` itself).
    let (status, _) = send(
        &stack,
        &token,
        reqwest::Method::PATCH,
        &format!("/api/v1/pets/{id}"),
        Some(json!({"vaccinated": true, "enrichment": {"forged": true}})),
    )
    .await;
    assert_eq!(status, 200);
    let events = collect_events(&mut all, 2, Duration::from_secs(10)).await;
    let types: Vec<&str> = events.iter().map(|g| g.event.event_type.as_str()).collect();
    assert_eq!(types, ["pets.updated", "pets.enriched"]);
    let enrichment = &events[1].event.data["enrichment"];
    assert_eq!(enrichment["statistics"]["vaccination_status"], "vaccinated");
    assert_eq!(enrichment["alerts"], json!([]));
    assert_eq!(enrichment["metadata"]["source_version"], 3);
    assert!(enrichment.get("forged").is_none());
    assert_no_event(&mut all, Duration::from_millis(500)).await;
    assert_eq!(
        task_results(&stack).await.count_documents(doc! {"doc_id": &id}).await.unwrap(),
        2,
        "one result per task"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pet_deleted_before_its_task_runs_completes_as_a_no_op() {
    let stack = Stack::start().await;
    let token = writer_token(&stack).await;
    let js = jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    let mut all = subscribed(&stack, "pets", None).await;
    let id = create_pet(&stack, &token, json!({"name": "Ghost", "species": "cat", "age": 2})).await;
    wait_for_messages(&js, TASKS_STREAM, 1).await;
    let (status, _) =
        send(&stack, &token, reqwest::Method::DELETE, &format!("/api/v1/pets/{id}"), None).await;
    assert_eq!(status, 204);
    let events = collect_events(&mut all, 2, Duration::from_secs(5)).await;
    assert_eq!(events[1].event.event_type, "pets.deleted");

    let worker = standard_worker(worker_config(&stack)).await;
    wait_queue_drained(&js).await;
    assert_eq!(
        js.get_stream(DLQ_STREAM).await.unwrap().info().await.unwrap().state.messages,
        0,
        "not a dead letter"
    );
    let metrics = Metrics::scrape(&format!("http://{}/metrics", worker.metrics_addr)).await;
    assert_eq!(metrics.sum("courier_tasks_processed_total", "pets.enrich"), 1.0);
    assert_no_event(&mut all, Duration::from_millis(500)).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_applies_at_most_once_even_when_handled_twice_at_the_same_time() {
    let stack = Stack::start().await;
    let token = writer_token(&stack).await;
    let config = worker_config(&stack);
    let (pets, store) = pets_handler(&stack, &config).await;

    let id = create_pet(
        &stack,
        &token,
        json!({"name": "Tom", "species": "Cat", "age": 4, "vaccinated": true}),
    )
    .await;
    let task = Task::new("pets.enrich", "pets", &id, 1, None, "trace-twice".into());
    let (a, b) = tokio::join!(pets.enrich(&task), pets.enrich(&task));
    let mut outcomes = [a.unwrap(), b.unwrap()];
    outcomes.sort_by_key(|o| format!("{o:?}"));
    use courier_worker::pets::Outcome;
    assert!(
        matches!(outcomes[0], Outcome::Applied { version: 2 })
            || matches!(outcomes[1], Outcome::Applied { version: 2 }),
        "{outcomes:?}"
    );
    assert!(
        outcomes.iter().any(|o| matches!(o, Outcome::AlreadyApplied | Outcome::UpToDate)),
        "{outcomes:?}"
    );
    // A later redelivery of the same task: found by its marker.
    assert_eq!(pets.enrich(&task).await.unwrap(), Outcome::AlreadyApplied);
    let stored = store
        .collection("pets")
        .find_one(doc! {"_id": ObjectId::parse_str(&id).unwrap()})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.get_i64("_v").unwrap(), 2, "applied once");
    assert_eq!(
        store.task_results().count_documents(doc! {"_id": task.id.to_string()}).await.unwrap(),
        1
    );

    // The marker alone stops a second commit (the unique `_id`, not just the look-up first).
    let marker = doc! {"_id": task.id.to_string(), "at": mongodb::bson::DateTime::now()};
    let again = store.commit_task_result(marker, &[], &[]).await.unwrap();
    assert_eq!(again, courier_worker::courier_store::TaskCommit::AlreadyApplied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recheck_re_enriches_only_a_pet_not_known_to_be_vaccinated() {
    let stack = Stack::start().await;
    let token = writer_token(&stack).await;
    let config = worker_config(&stack);
    let (pets, _) = pets_handler(&stack, &config).await;
    use courier_worker::pets::Outcome;
    let unvaccinated =
        create_pet(&stack, &token, json!({"name": "Kit", "species": "cat", "age": 1})).await;
    let enrich = Task::new("pets.enrich", "pets", &unvaccinated, 1, None, "t".into());
    assert_eq!(pets.enrich(&enrich).await.unwrap(), Outcome::Applied { version: 2 });
    assert_eq!(pets.enrich(&enrich).await.unwrap(), Outcome::AlreadyApplied);
    // The pet did not change, yet the re-check (scheduled at version 1) computes it again.
    let recheck = Task::new("pets.recheck", "pets", &unvaccinated, 1, None, "t".into());
    assert_eq!(pets.recheck(&recheck).await.unwrap(), Outcome::Applied { version: 3 });
    assert_eq!(pets.recheck(&recheck).await.unwrap(), Outcome::AlreadyApplied, "once per task");
    let (_, pet) = stack.get(&format!("/api/v1/pets/{unvaccinated}")).await;
    assert_eq!(pet["enrichment"]["metadata"]["rechecked"], true);
    assert_eq!(pet["enrichment"]["metadata"]["task_id"], recheck.id.to_string());
    assert_eq!(pet["enrichment"]["alerts"][0]["code"], "vaccination_unknown");

    let vaccinated = create_pet(
        &stack,
        &token,
        json!({"name": "Max", "species": "dog", "age": 4, "vaccinated": true}),
    )
    .await;
    let recheck = Task::new("pets.recheck", "pets", &vaccinated, 1, None, "t".into());
    assert_eq!(pets.recheck(&recheck).await.unwrap(), Outcome::NotNeeded);
    let (_, pet) = stack.get(&format!("/api/v1/pets/{vaccinated}")).await;
    assert!(pet.get("enrichment").is_none(), "nothing written: {pet}");
}

/// A `courier-worker` process for `stack` with a short `ack_wait` (and `fault`, if any).
async fn worker_process(stack: &Stack, id: &str, fault: Option<&str>) -> ServiceProcess {
    let mut envs = vec![
        ("COURIER_WORKER_ACK_WAIT_MS", "1500ms".to_owned()),
        ("COURIER_LOG", "info,courier_worker=debug".to_owned()),
    ];
    if let Some(fault) = fault {
        envs.push(("COURIER_WORKER_FAULT", fault.to_owned()));
    }
    chaos::worker_process(&stack.store, &stack.database, &stack.nats, id, &envs).await
}

/// Kills worker A in the middle of a pet's task (`fault` decides where), starts worker B, and
/// checks that B finishes the task with exactly one stored result and one `pets.enriched`. The
/// pets collection enqueues `pets.enrich` at `priority`.
async fn kill_mid_task_then_check_exactly_once(
    fault: &str,
    a_exits_by_itself: bool,
    priority: Priority,
) {
    let collections = pets_tasks(vec![TaskTrigger {
        kind: "pets.enrich".into(),
        on: vec![TriggerOn::Create, TriggerOn::Update],
        priority,
        delay: None,
        webhook: None,
        external: false,
    }]);
    let stack = stack_with_collections(&collections).await;
    let token = writer_token(&stack).await;
    let js = jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    let mut all = subscribed(&stack, "pets", None).await;
    let mut a = worker_process(&stack, "worker-a", Some(fault)).await;

    let id = create_pet(
        &stack,
        &token,
        json!({"name": "Bun", "species": "rabbit", "age": 1, "vaccinated": true}),
    )
    .await;
    let started = Instant::now();
    if a_exits_by_itself {
        let status =
            a.wait_exit(Duration::from_secs(10)).await.expect("worker A exits after its commit");
        assert_eq!(status.code(), Some(86), "{}", a.log_text());
    } else {
        let metrics = a.http_url("/metrics");
        wait_until("worker A to hold the task", Duration::from_secs(10), || async {
            Metrics::scrape(&metrics).await.sum("courier_tasks_in_flight", "") == 1.0
        })
        .await;
        a.kill9().await;
    }
    let b = worker_process(&stack, "worker-b", None).await;

    let events = collect_events(&mut all, 2, Duration::from_secs(15)).await;
    let types: Vec<&str> = events.iter().map(|g| g.event.event_type.as_str()).collect();
    assert_eq!(types, ["pets.created", "pets.enriched"]);
    wait_queue_drained(&js).await;
    println!("task finished {:?} after worker A was stopped ({fault})", started.elapsed());
    assert_no_event(&mut all, Duration::from_millis(1_500)).await;

    let results = task_results(&stack).await;
    assert_eq!(
        results.count_documents(doc! {"doc_id": &id}).await.unwrap(),
        1,
        "one stored result"
    );
    let (_, pet) = stack.get(&format!("/api/v1/pets/{id}")).await;
    let expected_worker = if a_exits_by_itself { "worker-a" } else { "worker-b" };
    assert_eq!(pet["enrichment"]["metadata"]["worker_id"], expected_worker);
    assert_eq!(events[1].event.data["enrichment"], pet["enrichment"]);
    assert_eq!(js.get_stream(DLQ_STREAM).await.unwrap().info().await.unwrap().state.messages, 0);
    let b_metrics = Metrics::scrape(&b.http_url("/metrics")).await;
    assert_eq!(
        b_metrics.sum("courier_tasks_processed_total", &format!("priority=\"{priority}\"")),
        1.0,
        "B acknowledged the redelivery, at {priority} priority"
    );
    assert_eq!(b_metrics.sum("courier_tasks_processed_total", "pets.enrich"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_task_leaves_it_to_another_which_completes_it_once() {
    // A sleeps 30 s inside the task (heartbeating); kill -9 stops the heartbeats, so the task is
    // redelivered to B after ack_wait (1.5 s).
    kill_mid_task_then_check_exactly_once("delay:30000", false, Priority::Normal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_priority_task_of_a_worker_killed_mid_task_is_completed_once_by_another() {
    kill_mid_task_then_check_exactly_once("delay:30000", false, Priority::High).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_dying_after_its_commit_does_not_apply_the_task_twice() {
    // A commits the result and exits before acknowledging: B gets the redelivery, finds the
    // task's marker and only acknowledges; the api's outbox relay publishes A's event.
    kill_mid_task_then_check_exactly_once("exit-after-commit", true, Priority::Normal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_priority_task_of_a_worker_dying_after_its_commit_applies_once() {
    kill_mid_task_then_check_exactly_once("exit-after-commit", true, Priority::Low).await;
}

/// Fails every attempt transiently and records when each attempt started.
struct AlwaysFails {
    attempts: Arc<Mutex<Vec<Instant>>>,
}

impl TaskHandler for AlwaysFails {
    fn kind(&self) -> &'static str {
        "test.fails"
    }

    fn handle<'a>(&'a self, _task: &'a Task) -> BoxFuture<'a, Result<(), TaskError>> {
        self.attempts.lock().unwrap().push(Instant::now());
        Box::pin(async { Err(TaskError::Transient("the dependency is down".into())) })
    }
}

/// A high-priority task here: the retries, and the dead letter's subject, keep the priority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_always_fails_is_retried_with_growing_delays_then_dead_lettered() {
    courier_tests::init_test_logging();
    let nats = NatsServer::start().await;
    let mut config = WorkerConfig::for_local(&nats.url());
    config.max_deliver = 4;
    config.backoff_base = Duration::from_millis(150);
    config.backoff_max = Duration::from_secs(5);
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let worker = RunningWorker::start(
        config,
        Handlers::new().with(Arc::new(AlwaysFails { attempts: attempts.clone() })),
    )
    .await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());

    let task = Task::new("test.fails", "pets", "abc", 1, None, "trace-fails".into())
        .with_priority(Priority::High);
    js.publish(task.subject(), serde_json::to_vec(&task).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
    wait_for_messages(&js, DLQ_STREAM, 1).await;
    wait_for_messages(&js, TASKS_STREAM, 0).await;

    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 4, "max_deliver attempts, then no more");
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    println!("delays between attempts: {gaps:?}");
    // Each delay is jittered within the upper half of its step: 150, 300, 600 ms.
    for (gap, step) in gaps.iter().zip([150, 300, 600]) {
        assert!(
            *gap >= Duration::from_millis(step / 2),
            "delay {gap:?} shorter than half of its {step} ms step"
        );
    }
    assert!(gaps[2] > gaps[0], "delays grow: {gaps:?}");

    let dead = js.get_stream(DLQ_STREAM).await.unwrap().get_raw_message(1).await.unwrap();
    assert_eq!(dead.subject.as_str(), "dlq.tasks.high.test.fails");
    let header = |name: &str| dead.headers.get(name).map(|v| v.to_string()).unwrap_or_default();
    assert_eq!(header(dead_letter_header::ATTEMPTS), "4");
    assert!(
        header(dead_letter_header::REASON)
            .contains("gave up after 4 attempts: the dependency is down"),
        "{}",
        header(dead_letter_header::REASON)
    );
    assert_eq!(header(dead_letter_header::TASK_ID), task.id.to_string());
    assert_eq!(header(dead_letter_header::ORIGINAL_SUBJECT), "tasks.high.test.fails");
    let metrics = Metrics::scrape(&format!("http://{}/metrics", worker.metrics_addr)).await;
    let high = r#"kind="test.fails",priority="high""#;
    assert_eq!(metrics.sum("courier_tasks_retried_total", high), 3.0);
    assert_eq!(metrics.sum("courier_tasks_dead_lettered_total", high), 1.0);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_undecodable_tasks_go_to_the_dead_letter_stream() {
    courier_tests::init_test_logging();
    let nats = NatsServer::start().await;
    let worker = RunningWorker::start(WorkerConfig::for_local(&nats.url()), Handlers::new()).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());

    let task = Task::new("nobody.handles", "pets", "abc", 1, None, "trace-1".into());
    js.publish(task.subject(), serde_json::to_vec(&task).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
    js.publish(task_subject(Priority::Low, "pets.enrich"), "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();

    wait_for_messages(&js, DLQ_STREAM, 2).await;
    wait_for_messages(&js, TASKS_STREAM, 0).await;
    let dlq = js.get_stream(DLQ_STREAM).await.unwrap();
    let first = dlq.get_raw_message(1).await.unwrap();
    let second = dlq.get_raw_message(2).await.unwrap();
    let mut by_subject = [(first.subject.to_string(), first), (second.subject.to_string(), second)];
    by_subject.sort_by(|a, b| a.0.cmp(&b.0));
    let [(s1, poison), (s2, unknown)] = by_subject;
    assert_eq!(s1, "dlq.tasks.low.pets.enrich");
    assert_eq!(s2, "dlq.tasks.normal.nobody.handles");
    let header = |m: &async_nats::jetstream::message::StreamMessage, name: &str| {
        m.headers.get(name).map(|v| v.to_string()).unwrap_or_default()
    };
    assert!(header(&unknown, dead_letter_header::REASON).contains("no handler"));
    assert_eq!(header(&unknown, dead_letter_header::TASK_ID), task.id.to_string());
    assert!(header(&poison, dead_letter_header::REASON).contains("undecodable"));
    assert_eq!(header(&poison, dead_letter_header::ATTEMPTS), "1");
    assert_eq!(poison.payload.as_ref(), b"not json", "the original payload is kept for inspection");
    worker.stop().await;
}
