//! The worker's reliability machinery with real JetStream: tasks nobody can process, or that
//! cannot be decoded, end in the DLQ stream with the reason and are removed from the queue.

use std::time::Duration;

use async_nats::jetstream;
use courier_core::{Task, subjects::{DLQ_STREAM, TASKS_STREAM, task_subject}};
use courier_tests::{NatsServer, RunningWorker};
use courier_worker::{WorkerConfig, consumer::dead_letter_header, handlers::Handlers};

async fn wait_for_messages(js: &jetstream::Context, stream: &str, count: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let messages = js.get_stream(stream).await.unwrap().info().await.unwrap().state.messages;
        if messages == count {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stream} has {messages} messages, expected {count}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_undecodable_tasks_go_to_the_dead_letter_stream() {
    courier_tests::init_test_logging();
    let nats = NatsServer::start().await;
    let worker = RunningWorker::start(WorkerConfig::for_local(&nats.url()), Handlers::new()).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());

    let task = Task::new("nobody.handles", "pets", "abc", 1, None, "trace-1".into());
    js.publish(task_subject(&task.kind), serde_json::to_vec(&task).unwrap().into()).await.unwrap().await.unwrap();
    js.publish(task_subject("pets.enrich"), "not json".into()).await.unwrap().await.unwrap();

    wait_for_messages(&js, DLQ_STREAM, 2).await;
    wait_for_messages(&js, TASKS_STREAM, 0).await;
    let dlq = js.get_stream(DLQ_STREAM).await.unwrap();
    let first = dlq.get_raw_message(1).await.unwrap();
    let second = dlq.get_raw_message(2).await.unwrap();
    let mut by_subject = [(first.subject.to_string(), first), (second.subject.to_string(), second)];
    by_subject.sort_by(|a, b| a.0.cmp(&b.0));
    let [(s1, unknown), (s2, poison)] = by_subject;
    assert_eq!(s1, "dlq.tasks.nobody.handles");
    assert_eq!(s2, "dlq.tasks.pets.enrich");
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
