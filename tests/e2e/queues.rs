//! `GET /api/v1/queues` and the dead letters' retry, against real JetStream: the numbers follow
//! tasks through pending → in flight → redelivered → processed or dead-lettered, per priority;
//! a retried dead letter leaves the DLQ and is processed, at its own priority, another one, or
//! later (scheduled).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream;
use courier_core::{Task, subjects::DLQ_STREAM};
use courier_tests::{RunningWorker, Stack, wait_for, wait_until};
use courier_worker::handlers::{Handlers, TaskError, TaskHandler};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::worker::{send, wait_for_messages, wait_queue_drained, worker_config};

/// `test.gate` tasks: the first attempt of a task whose `doc_id` starts with `retry` fails
/// (retried after the backoff); `fail*` tasks fail permanently while `failing` is set; every
/// other attempt waits for a permit of `gate` (so tests can hold tasks in flight).
struct Gate {
    gate: Arc<Semaphore>,
    failing: Arc<AtomicBool>,
    seen_retry: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    /// When each `*later*` task ran.
    ran_at: Arc<std::sync::Mutex<Vec<(String, std::time::SystemTime)>>>,
}

impl TaskHandler for Gate {
    fn kind(&self) -> &'static str {
        "test.gate"
    }

    fn handle<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<(), TaskError>> {
        Box::pin(async move {
            if task.doc_id.starts_with("fail") && self.failing.load(Ordering::SeqCst) {
                return Err(TaskError::Permanent("refused by the test".into()));
            }
            if task.doc_id.starts_with("retry") && !self.seen_retry.swap(true, Ordering::SeqCst) {
                return Err(TaskError::Transient("first attempt fails".into()));
            }
            if task.doc_id.contains("later") {
                self.ran_at
                    .lock()
                    .unwrap()
                    .push((task.doc_id.clone(), std::time::SystemTime::now()));
            }
            let permit =
                self.gate.acquire().await.map_err(|e| TaskError::Transient(e.to_string()))?;
            permit.forget();
            self.done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

/// Enqueues a task that fails permanently (while `failing`), waits for its dead letter (the
/// `n`th now in the DLQ) and returns the dead letter's id.
async fn enqueue_failing(
    stack: &Stack,
    token: &Option<String>,
    js: &jetstream::Context,
    failing: &AtomicBool,
    doc_id: &str,
    n: u64,
) -> u64 {
    assert!(failing.load(Ordering::SeqCst));
    enqueue(js, doc_id).await;
    wait_for_messages(js, DLQ_STREAM, n).await;
    let (_, dead) =
        send(stack, token, reqwest::Method::GET, "/api/v1/queues/tasks/dead", None).await;
    dead["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["task"]["doc_id"] == doc_id)
        .and_then(|item| item["id"].as_u64())
        .expect("the dead letter is listed")
}

async fn queue(stack: &Stack, token: &Option<String>) -> Value {
    let (status, body) = send(stack, token, reqwest::Method::GET, "/api/v1/queues", None).await;
    assert_eq!(status, 200, "{body}");
    let queues = body["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 1);
    queues[0].clone()
}

async fn wait_for_queue(
    stack: &Stack,
    token: &Option<String>,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(&format!("the queues to show {what}"), Duration::from_secs(10), || async {
        let queue = queue(stack, token).await;
        if check(&queue) { Ok(queue) } else { Err(format!("{queue:#}")) }
    })
    .await
}

async fn enqueue(js: &jetstream::Context, doc_id: &str) -> Task {
    let task = Task::new("test.gate", "things", doc_id, 1, None, format!("trace-{doc_id}"));
    js.publish(task.subject(), serde_json::to_vec(&task).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_numbers_follow_tasks_and_a_dead_letter_can_be_retried() {
    let stack = Stack::start().await;
    // The queue endpoints are for admins (tests/e2e/authz.rs covers the 403 for other users).
    let token = Some(stack.admin_token().await);
    let js = jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());

    // Signed-in admins only.
    for (method, path) in [
        (reqwest::Method::GET, "/api/v1/queues"),
        (reqwest::Method::GET, "/api/v1/queues/tasks/dead"),
        (reqwest::Method::POST, "/api/v1/queues/tasks/dead/1/retry"),
    ] {
        let (status, _) = send(&stack, &None, method, path, None).await;
        assert_eq!(status, 401, "{path} without a token");
    }

    // No worker yet: three tasks wait.
    for n in 0..3 {
        enqueue(&js, &format!("hold{n}")).await;
    }
    let q = wait_for_queue(&stack, &token, "3 pending", |q| q["pending"] == 3).await;
    assert_eq!(q["name"], "tasks");
    assert_eq!(q["by_priority"]["normal"]["pending"], 3);
    assert_eq!(q["by_priority"]["normal"]["consumer"], "workers-normal");
    assert_eq!(q["by_priority"]["high"]["pending"], 0);
    assert_eq!(q["scheduled"], json!({"count": 0, "next_due": null}));
    assert_eq!(q["in_flight"], 0);
    assert_eq!(q["consumers"], 0);
    assert_eq!(q["enqueued_total"], 3);
    assert_eq!(q["processed_total"], 0);
    assert_eq!(q["by_kind"]["test.gate"], json!({"queued": 3, "dead_lettered": 0}));

    // Two workers hold all three tasks in flight; a fourth task fails its first attempt.
    let gate = Arc::new(Semaphore::new(0));
    let failing = Arc::new(AtomicBool::new(true));
    let done = Arc::new(AtomicUsize::new(0));
    let ran_at = Arc::new(std::sync::Mutex::new(Vec::new()));
    let handlers = Handlers::new().with(Arc::new(Gate {
        gate: gate.clone(),
        failing: failing.clone(),
        seen_retry: Arc::new(AtomicBool::new(false)),
        done: done.clone(),
        ran_at: ran_at.clone(),
    }));
    let mut config = worker_config(&stack);
    config.backoff_base = Duration::from_millis(100);
    let workers = [
        RunningWorker::start(config.clone(), handlers.clone()).await,
        RunningWorker::start(config.clone(), handlers.clone()).await,
    ];
    enqueue(&js, "retry0").await;
    let q = wait_for_queue(&stack, &token, "4 in flight, 1 redelivered, 2 consumers", |q| {
        q["in_flight"] == 4 && q["redelivered"] == 1 && q["consumers"] == 2
    })
    .await;
    assert_eq!(q["pending"], 0);
    assert_eq!(q["by_priority"]["normal"]["in_flight"], 4);
    assert_eq!(q["by_priority"]["normal"]["redelivered"], 1);
    assert_eq!(
        q["by_kind"]["test.gate"]["queued"], 4,
        "in-flight tasks stay in the stream until acknowledged"
    );
    assert!(q["deliveries_total"].as_u64().unwrap() >= 5, "{q}");

    // Release them: all four processed.
    gate.add_permits(4);
    wait_until("four tasks done", Duration::from_secs(10), || async {
        done.load(Ordering::SeqCst) == 4
    })
    .await;
    wait_queue_drained(&js).await;
    let q = wait_for_queue(&stack, &token, "4 processed", |q| q["processed_total"] == 4).await;
    assert_eq!(
        (q["pending"].clone(), q["in_flight"].clone(), q["redelivered"].clone()),
        (json!(0), json!(0), json!(0))
    );

    // A permanent failure: dead-lettered, listed, retried once it can succeed.
    let task = enqueue(&js, "fail0").await;
    wait_for_messages(&js, DLQ_STREAM, 1).await;
    let q = wait_for_queue(&stack, &token, "1 dead letter", |q| q["dead_lettered"] == 1).await;
    assert_eq!(q["dead_lettered_total"], 1);
    assert_eq!(q["processed_total"], 4, "a dead letter is not processed");
    assert_eq!(q["by_kind"]["test.gate"], json!({"queued": 0, "dead_lettered": 1}));

    let (status, dead) =
        send(&stack, &token, reqwest::Method::GET, "/api/v1/queues/tasks/dead", None).await;
    assert_eq!(status, 200);
    let items = dead["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{dead}");
    let item = &items[0];
    assert_eq!(item["task_id"], task.id.to_string());
    assert_eq!(item["kind"], "test.gate");
    assert_eq!(item["attempts"], 1);
    assert_eq!(item["reason"], "refused by the test");
    assert_eq!(item["task"]["doc_id"], "fail0");
    assert_eq!(item["priority"], "normal");
    assert_eq!(item["subject"], "dlq.tasks.normal.test.gate");
    let id = item["id"].as_u64().unwrap();

    failing.store(false, Ordering::SeqCst);
    gate.add_permits(1);
    let retry = format!("/api/v1/queues/tasks/dead/{id}/retry");
    let (status, body) = send(&stack, &token, reqwest::Method::POST, &retry, None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["task_id"], task.id.to_string());
    assert_eq!(body["subject"], "tasks.normal.test.gate", "back at its own priority");
    assert_eq!(body["priority"], "normal");
    wait_until("the retried task to be processed", Duration::from_secs(10), || async {
        done.load(Ordering::SeqCst) == 5
    })
    .await;
    wait_queue_drained(&js).await;
    let q =
        wait_for_queue(&stack, &token, "the retry processed", |q| q["processed_total"] == 5).await;
    assert_eq!(q["dead_lettered"], 0, "the retried dead letter left the DLQ");
    assert_eq!(q["enqueued_total"], 6);
    let (_, dead) =
        send(&stack, &token, reqwest::Method::GET, "/api/v1/queues/tasks/dead", None).await;
    assert_eq!(dead["items"], json!([]));

    // Retried at another priority, and later: both leave the DLQ at once.
    failing.store(true, Ordering::SeqCst);
    let high = enqueue_failing(&stack, &token, &js, &failing, "fail1", 1).await;
    let later = enqueue_failing(&stack, &token, &js, &failing, "fail-later", 2).await;
    failing.store(false, Ordering::SeqCst);
    let bad = [
        ("?priority=urgent", "'priority'"),
        ("?not_before=tomorrow", "'not_before'"),
        ("?not_before=2999-01-01T00:00:00Z", "365 days"),
        ("?when=now", "unknown query parameter 'when'"),
    ];
    for (query, names) in bad {
        let path = format!("/api/v1/queues/tasks/dead/{high}/retry{query}");
        let (status, body) = send(&stack, &token, reqwest::Method::POST, &path, None).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(names), "{query}: {body}");
    }
    let (_, dead) =
        send(&stack, &token, reqwest::Method::GET, "/api/v1/queues/tasks/dead", None).await;
    assert_eq!(dead["items"].as_array().unwrap().len(), 2, "a refused retry changes nothing");

    gate.add_permits(2);
    let path = format!("/api/v1/queues/tasks/dead/{high}/retry?priority=high");
    let (status, body) = send(&stack, &token, reqwest::Method::POST, &path, None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        (body["subject"].as_str(), body["priority"].as_str()),
        (Some("tasks.high.test.gate"), Some("high"))
    );
    let due = std::time::SystemTime::now() + Duration::from_secs(2);
    let due_text = mongodb::bson::DateTime::from_system_time(due).try_to_rfc3339_string().unwrap();
    let path = format!("/api/v1/queues/tasks/dead/{later}/retry?not_before={due_text}");
    let (status, body) = send(&stack, &token, reqwest::Method::POST, &path, None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["enqueued_seq"], Value::Null, "scheduled, not enqueued yet");
    assert_eq!(body["scheduled_for"], due_text.as_str());
    let q = wait_for_queue(&stack, &token, "one scheduled task", |q| q["scheduled"]["count"] == 1)
        .await;
    assert_eq!(q["scheduled"]["next_due"], due_text.as_str());
    assert_eq!(q["dead_lettered"], 0, "both left the DLQ");
    wait_until("the high and the scheduled retry to run", Duration::from_secs(15), || async {
        done.load(Ordering::SeqCst) == 7
    })
    .await;
    let (doc_id, ran) = ran_at.lock().unwrap().last().cloned().unwrap();
    assert_eq!(doc_id, "fail-later");
    assert!(ran >= due, "a scheduled retry never runs before its time");
    let q = wait_for_queue(&stack, &token, "the scheduled task gone", |q| {
        q["scheduled"]["count"] == 0 && q["processed_total"] == 7
    })
    .await;
    assert_eq!(q["by_priority"]["high"]["deliveries_total"], 1);

    // Unknown ids and queues.
    for path in [
        retry.as_str(),
        "/api/v1/queues/tasks/dead/99999/retry",
        "/api/v1/queues/tasks/dead/abc/retry",
        "/api/v1/queues/other/dead/1/retry",
    ] {
        let (status, body) = send(&stack, &token, reqwest::Method::POST, path, None).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    for worker in workers {
        worker.stop().await;
    }
}
