//! `GET /api/v1/queues` and the dead letters' retry, against real JetStream: the numbers follow
//! tasks through pending → in flight → redelivered → processed or dead-lettered, and a retried
//! dead letter leaves the DLQ and is processed.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream;
use courier_core::{
    Task,
    subjects::{DLQ_STREAM, task_subject},
};
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
            let permit =
                self.gate.acquire().await.map_err(|e| TaskError::Transient(e.to_string()))?;
            permit.forget();
            self.done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
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
    js.publish(task_subject(&task.kind), serde_json::to_vec(&task).unwrap().into())
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
    assert_eq!(q["in_flight"], 0);
    assert_eq!(q["consumers"], 0);
    assert_eq!(q["enqueued_total"], 3);
    assert_eq!(q["processed_total"], 0);
    assert_eq!(q["by_kind"]["test.gate"], json!({"queued": 3, "dead_lettered": 0}));

    // Two workers hold all three tasks in flight; a fourth task fails its first attempt.
    let gate = Arc::new(Semaphore::new(0));
    let failing = Arc::new(AtomicBool::new(true));
    let done = Arc::new(AtomicUsize::new(0));
    let handlers = Handlers::new().with(Arc::new(Gate {
        gate: gate.clone(),
        failing: failing.clone(),
        seen_retry: Arc::new(AtomicBool::new(false)),
        done: done.clone(),
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
    let id = item["id"].as_u64().unwrap();

    failing.store(false, Ordering::SeqCst);
    gate.add_permits(1);
    let retry = format!("/api/v1/queues/tasks/dead/{id}/retry");
    let (status, body) = send(&stack, &token, reqwest::Method::POST, &retry, None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["task_id"], task.id.to_string());
    assert_eq!(body["subject"], "tasks.test.gate");
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
