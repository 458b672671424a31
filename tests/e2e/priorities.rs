//! Task priorities and scheduled tasks with real JetStream and store: high tasks overtake a low
//! backlog while low tasks keep moving (the pull rule's 1-in-10 turns), a collection rule's
//! delayed task runs at its time and priority, and an upgrade from the single `workers`
//! consumer loses no task left on the legacy `tasks.<kind>` subjects.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::{self, consumer::pull};
use courier_core::{
    Priority, Task,
    collection_spec::{TaskTrigger, TriggerOn},
    jetstream::ensure_streams,
    subjects::{LEGACY_WORKERS_CONSUMER, TASKS_ALL, TASKS_STREAM},
    task_queue::{Detail, read_backlog},
};
use courier_tests::{
    NatsServer, RunningWorker, Stack,
    chaos::Metrics,
    priorities::{pets_tasks, publish_tasks, stack_with_collections, wait_tasks_drained},
    wait_until,
};
use courier_worker::{
    WorkerConfig,
    dispatch::CYCLE,
    handlers::{Handlers, TaskError, TaskHandler},
};
use futures::{StreamExt, future::BoxFuture};
use mongodb::bson;
use serde_json::{Value, json};

use crate::worker::{create_pet, send, standard_worker, worker_config};

/// Every task start, in order: the task's priority and doc id.
type Starts = Arc<Mutex<Vec<(Priority, String)>>>;

/// `test.record`: notes every start in [`Starts`], then takes `pause`.
struct Recorder {
    starts: Starts,
    pause: Duration,
}

impl TaskHandler for Recorder {
    fn kind(&self) -> &'static str {
        "test.record"
    }

    fn handle<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<(), TaskError>> {
        self.starts.lock().unwrap().push((task.priority, task.doc_id.clone()));
        Box::pin(async move {
            tokio::time::sleep(self.pause).await;
            Ok(())
        })
    }
}

fn recorder(pause: Duration) -> (Handlers, Starts) {
    let starts = Arc::new(Mutex::new(Vec::new()));
    (Handlers::new().with(Arc::new(Recorder { starts: starts.clone(), pause })), starts)
}

fn tasks(priority: Priority, prefix: &str, n: usize) -> Vec<Task> {
    (0..n)
        .map(|i| {
            Task::new("test.record", "things", &format!("{prefix}-{i}"), 1, None, "t".into())
                .with_priority(priority)
        })
        .collect()
}

fn count(starts: &[(Priority, String)], priority: Priority) -> usize {
    starts.iter().filter(|(p, _)| *p == priority).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_tasks_overtake_a_low_backlog_and_low_tasks_keep_moving() {
    courier_tests::init_test_logging();
    let nats = NatsServer::start().await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    ensure_streams(&js, courier_core::jetstream::StreamSettings::with_replicas(1)).await.unwrap();
    publish_tasks(&js, &tasks(Priority::Low, "low", 2_000)).await;

    // One task at a time, so the start order is exactly the order the worker picked them in.
    let mut config = WorkerConfig::for_local(&nats.url());
    config.concurrency = 1;
    let (handlers, starts) = recorder(Duration::from_millis(2));
    let worker = RunningWorker::start(config, handlers).await;
    wait_until("the low backlog to be moving", Duration::from_secs(20), || async {
        starts.lock().unwrap().len() >= 30
    })
    .await;
    publish_tasks(&js, &tasks(Priority::High, "high", 20)).await;
    let published_at = starts.lock().unwrap().len();

    wait_until("all 20 high tasks to start", Duration::from_secs(20), || async {
        count(&starts.lock().unwrap(), Priority::High) == 20
    })
    .await;
    let backlog = read_backlog(&js, Detail::Counts).await.unwrap().unwrap();
    let low_left = backlog.lane(Priority::Low).pending();
    wait_tasks_drained(&js, Duration::from_secs(60)).await;
    worker.stop().await;

    let starts = starts.lock().unwrap().clone();
    let first_high = starts.iter().position(|(p, _)| *p == Priority::High).unwrap();
    let last_high = starts.iter().rposition(|(p, _)| *p == Priority::High).unwrap();
    let window = &starts[first_high..=last_high];
    let lows_among_highs = count(window, Priority::Low);
    println!(
        "2,000 low then 20 high: highs published after {published_at} starts, started from #{first_high} to #{last_high} \
         with {lows_among_highs} low starts among them; {low_left} low tasks still waiting when the last high started"
    );
    let ids: HashSet<&String> = starts.iter().map(|(_, id)| id).collect();
    assert_eq!((starts.len(), ids.len()), (2_020, 2_020), "every task ran once");
    assert!(low_left > 1_000, "the highs finished long before the low backlog drained");
    assert!(
        first_high <= published_at + 2,
        "a high task starts at the next pull once it is queued (published after {published_at}, first at {first_high})"
    );
    // The rule's effect: low keeps at least one start in every ten while high has work, and
    // high gets the rest but normal's turn (empty here, so low's too): 2 lows in 10.
    for (i, ten) in window.windows(CYCLE).enumerate() {
        assert!(count(ten, Priority::Low) >= 1, "low starved in starts {i}..{}", i + CYCLE);
    }
    assert!(
        (2..=7).contains(&lows_among_highs),
        "20 high starts take 24 to 26 starts, 2 in 10 of them low: got {lows_among_highs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_rule_schedules_a_delayed_task_that_runs_at_its_time_and_priority() {
    let collections = pets_tasks(vec![TaskTrigger {
        kind: "pets.enrich".into(),
        on: vec![TriggerOn::Create],
        priority: Priority::High,
        delay: Some("2s".into()),
        webhook: None,
        external: false,
    }]);
    let stack = stack_with_collections(&collections).await;
    let worker = standard_worker(worker_config(&stack)).await;
    let token = Some(stack.admin_token().await); // the queue endpoints are for admins
    let id = create_pet(&stack, &token, json!({"name": "Rex", "species": "dog", "age": 3})).await;

    let (status, queues) = send(&stack, &token, reqwest::Method::GET, "/api/v1/queues", None).await;
    assert_eq!(status, 200, "{queues}");
    let queue = &queues["queues"][0];
    assert_eq!(queue["scheduled"]["count"], 1, "{queue}");
    assert_eq!(queue["enqueued_total"], 0, "nothing in TASKS before its time");
    let due = bson::DateTime::parse_rfc3339_str(queue["scheduled"]["next_due"].as_str().unwrap())
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let pet = loop {
        let (_, pet) = stack.get(&format!("/api/v1/pets/{id}")).await;
        if pet.get("enrichment").is_some() {
            break pet;
        }
        assert!(tokio::time::Instant::now() < deadline, "the scheduled enrichment never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let processed = pet["enrichment"]["metadata"]["processed_at"].as_str().unwrap();
    let processed = bson::DateTime::parse_rfc3339_str(processed).unwrap();
    let late_ms = processed.timestamp_millis() - due.timestamp_millis();
    println!("scheduled task ran {late_ms} ms after its time (scheduler interval 200 ms)");
    assert!(late_ms >= 0, "ran {}ms early", -late_ms);
    assert!(late_ms < 3_000, "ran {late_ms} ms late");
    let metrics = Metrics::scrape(&format!("http://{}/metrics", worker.metrics_addr)).await;
    assert_eq!(
        metrics.sum("courier_tasks_processed_total", r#"kind="pets.enrich",priority="high""#),
        1.0
    );
    let (_, queues) = send(&stack, &token, reqwest::Method::GET, "/api/v1/queues", None).await;
    assert_eq!(queues["queues"][0]["scheduled"], json!({"count": 0, "next_due": null}));
    assert_eq!(queues["queues"][0]["enqueued_total"], 1, "enqueued exactly once");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_from_the_single_workers_consumer_loses_no_task() {
    let stack = Stack::start().await;
    let token = Some(stack.admin_token().await); // the queue endpoints are for admins
    let js = jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    ensure_streams(&js, courier_core::jetstream::StreamSettings::with_replicas(1)).await.unwrap();
    let tasks_stream = js.get_stream(TASKS_STREAM).await.unwrap();
    // Before the upgrade: the old workers' one consumer, tasks on `tasks.<kind>`, and an old
    // worker holding three of them unacknowledged.
    let legacy = tasks_stream
        .create_consumer(pull::Config {
            durable_name: Some(LEGACY_WORKERS_CONSUMER.to_owned()),
            filter_subject: TASKS_ALL.to_owned(),
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .unwrap();
    let old: Vec<Task> = (0..30)
        .map(|i| Task::new("test.record", "things", &format!("old-{i}"), 1, None, "t".into()))
        .collect();
    for task in &old {
        let legacy_subject = format!("tasks.{}", task.kind);
        js.publish(legacy_subject, serde_json::to_vec(task).unwrap().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut held = legacy.fetch().max_messages(3).messages().await.unwrap();
    let mut holding = Vec::new();
    while let Some(message) = held.next().await {
        holding.push(message.unwrap());
    }
    assert_eq!(holding.len(), 3);
    // New tasks from an upgraded api, while the old consumer still exists.
    let new = tasks(Priority::High, "new", 5);
    publish_tasks(&js, &new).await;
    let (_, queues) = send(&stack, &token, reqwest::Method::GET, "/api/v1/queues", None).await;
    let queue: &Value = &queues["queues"][0];
    assert_eq!(queue["legacy"], json!({"queued": 30, "consumer_present": true}), "{queue}");
    assert_eq!(queue["by_priority"]["normal"]["pending"], 30, "legacy tasks count as normal");

    // The upgraded worker replaces the consumer; the api moves the legacy tasks.
    let (handlers, starts) = recorder(Duration::ZERO);
    let worker = RunningWorker::start(worker_config(&stack), handlers).await;
    wait_until("every task, old and new, to run", Duration::from_secs(30), || async {
        let seen: HashSet<String> =
            starts.lock().unwrap().iter().map(|(_, id)| id.clone()).collect();
        old.iter().chain(&new).all(|task| seen.contains(&task.doc_id))
    })
    .await;
    wait_tasks_drained(&js, Duration::from_secs(20)).await;
    let backlog = read_backlog(&js, Detail::Counts).await.unwrap().unwrap();
    assert_eq!((backlog.legacy_queued, backlog.legacy_consumer), (0, None));
    let (_, queues) = send(&stack, &token, reqwest::Method::GET, "/api/v1/queues", None).await;
    assert_eq!(queues["queues"][0]["legacy"], json!({"queued": 0, "consumer_present": false}));
    let runs = starts.lock().unwrap().len();
    println!("upgrade: 30 legacy + 5 new tasks, {runs} runs (held tasks may run twice)");
    assert!(runs <= 35 + holding.len(), "{runs} runs");
    worker.stop().await;
}
