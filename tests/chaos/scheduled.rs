//! Scheduled tasks through a restart of everything: pets whose collection rule delays their
//! `pets.enrich` (high priority) are created, then the api, the worker, nats-server and the store
//! are all killed (-9) and started again before the tasks are due, with a second api replica
//! whose scheduler races the first. Each task still runs once, at its time (within the
//! documented tolerance), at high priority.

use std::time::Duration;

use courier_core::{
    Priority,
    collection_spec::{TaskTrigger, TriggerOn},
    subjects::TASKS_STREAM,
};
use courier_tests::{
    NatsServer, StoreServer,
    chaos::{Metrics, api_process, fresh_database, share_machine, worker_process},
    init_test_logging,
    priorities::pets_tasks,
    services::access_token,
    wait_until,
};
use mongodb::bson::{self, Document, doc};
use serde_json::{Value, json};

const PETS: usize = 5;
/// Long enough for the whole restart to finish before the tasks are due.
const DELAY_SECS: i64 = 15;
const SCHEDULER_INTERVAL_MS: i64 = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_tasks_survive_a_restart_of_every_process_and_run_once_at_their_time() {
    let _machine = share_machine().await;
    init_test_logging();
    let collections = pets_tasks(vec![TaskTrigger {
        kind: "pets.enrich".into(),
        on: vec![TriggerOn::Create],
        priority: Priority::High,
        delay: Some(format!("{DELAY_SECS}s")),
        webhook: None,
        external: false,
    }]);
    let (mut nats, mut store) = tokio::join!(NatsServer::start(), StoreServer::start_durable());
    let database = fresh_database();
    let envs = [
        ("COURIER_COLLECTIONS_FILE", collections.display().to_string()),
        ("COURIER_SCHEDULER_INTERVAL", SCHEDULER_INTERVAL_MS.to_string()),
    ];
    let mut api = api_process(&store, &database, &nats, &envs).await;
    let mut worker = worker_process(&store, &database, &nats, "worker-0", &[]).await;
    let http = reqwest::Client::new();
    let token = access_token(&http, &api.http_url(""), "scheduled-chaos").await;

    let mut ids = Vec::new();
    for n in 0..PETS {
        let created: Value = http
            .post(api.http_url("/api/v1/pets"))
            .bearer_auth(&token)
            .json(&json!({"name": format!("Pet {n}"), "species": "cat", "age": 2}))
            .send()
            .await
            .expect("POST reaches the api")
            .json()
            .await
            .expect("JSON");
        ids.push(created["id"].as_str().expect("created").to_owned());
    }
    let db = mongodb::Client::with_uri_str(store.uri()).await.expect("client").database(&database);
    let scheduled: Vec<Document> = {
        let mut cursor = db.collection::<Document>("_scheduled_tasks").find(doc! {}).await.unwrap();
        let mut all = Vec::new();
        while cursor.advance().await.unwrap() {
            all.push(cursor.deserialize_current().unwrap());
        }
        all
    };
    assert_eq!(scheduled.len(), PETS, "one scheduled task per pet, stored with the pet");
    let first_due = scheduled.iter().map(|d| d.get_datetime("due").unwrap()).min().unwrap();

    // Everything dies and comes back before the tasks are due; a second api joins.
    api.kill9().await;
    worker.kill9().await;
    nats.kill().await;
    store.kill().await;
    store.restart().await;
    nats.restart().await;
    api.restart().await;
    worker.restart().await;
    let second = api_process(&store, &database, &nats, &envs).await;
    let restarted = bson::DateTime::now();
    assert!(
        restarted < *first_due,
        "the restart took too long to prove anything (raise DELAY_SECS): done at {restarted}, first task due {first_due}"
    );

    let results = db.collection::<Document>("_task_results");
    wait_until(
        "every scheduled enrichment to run",
        Duration::from_secs(DELAY_SECS as u64 + 30),
        || async { results.count_documents(doc! {}).await.unwrap_or(0) >= PETS as u64 },
    )
    .await;
    let mut lateness = Vec::new();
    for id in &ids {
        let pet: Value = http
            .get(api.http_url(&format!("/api/v1/pets/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let processed = pet["enrichment"]["metadata"]["processed_at"].as_str().expect("enriched");
        let processed = bson::DateTime::parse_rfc3339_str(processed).unwrap();
        let task_id = pet["enrichment"]["metadata"]["task_id"].as_str().unwrap();
        let due = scheduled
            .iter()
            .find(|d| d.get_str("_id").unwrap() == task_id)
            .expect("the task that ran is the one scheduled")
            .get_datetime("due")
            .unwrap();
        lateness.push(processed.timestamp_millis() - due.timestamp_millis());
    }
    let tasks = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap())
        .get_stream(TASKS_STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .clone();
    let waiting =
        db.collection::<Document>("_scheduled_tasks").count_documents(doc! {}).await.unwrap();
    let mut released = 0.0;
    for replica in [&api, &second] {
        released += Metrics::scrape(&replica.http_url("/metrics"))
            .await
            .sum("courier_scheduled_tasks_released_total", "");
    }
    let worker_metrics = Metrics::scrape(&worker.http_url("/metrics")).await;
    eprintln!(
        "scheduled chaos: {PETS} tasks due {DELAY_SECS}s after creation, every process killed and restarted in between; \
         ran late by {lateness:?} ms (scheduler interval {SCHEDULER_INTERVAL_MS} ms); TASKS got {} messages; \
         the two schedulers released {released}",
        tasks.last_sequence
    );
    assert!(lateness.iter().all(|late| *late >= 0), "a task ran before its time: {lateness:?}");
    assert!(
        lateness.iter().all(|late| *late < SCHEDULER_INTERVAL_MS + 3_000),
        "a task ran later than the tolerance: {lateness:?}"
    );
    assert_eq!(tasks.last_sequence, PETS as u64, "each scheduled task enqueued exactly once");
    assert_eq!(released, PETS as f64, "released once between the two racing schedulers");
    assert_eq!(waiting, 0);
    assert_eq!(results.count_documents(doc! {}).await.unwrap(), PETS as u64, "applied once each");
    assert_eq!(
        worker_metrics
            .sum("courier_tasks_processed_total", r#"kind="pets.enrich",priority="high""#),
        PETS as f64
    );
}
