//! Helpers for the task-priority and scheduled-task tests: a collections file with changed task
//! triggers, a [`Stack`] whose api uses it, tasks published straight into `TASKS`, and waiting for
//! the whole queue (every priority) to drain.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use courier_core::{
    Task,
    collection_spec::{CollectionsFile, TaskTrigger},
    task_queue::{Detail, read_backlog},
};

use crate::{NatsServer, RunningApi, RunningBroadcaster, Stack, StoreServer, wait_until};

/// The shipped `collections.yaml` with `change` applied, written to a temp file (kept until the
/// returned path is dropped).
pub fn collections_with(change: impl FnOnce(&mut CollectionsFile)) -> tempfile::TempPath {
    let shipped = std::fs::read_to_string(crate::workspace_root().join("collections.yaml"))
        .expect("collections.yaml");
    let mut file: CollectionsFile = yaml_serde::from_str(&shipped).expect("a valid file");
    change(&mut file);
    let path =
        tempfile::Builder::new().suffix(".yaml").tempfile().expect("temp file").into_temp_path();
    std::fs::write(&path, yaml_serde::to_string(&file).expect("serializes")).expect("write");
    path
}

/// The shipped collections with the `pets` collection's task triggers replaced by `tasks`.
pub fn pets_tasks(tasks: Vec<TaskTrigger>) -> tempfile::TempPath {
    collections_with(|file| {
        let pets = file
            .collections
            .iter_mut()
            .find(|c| c.name == "pets")
            .expect("the shipped file has pets");
        pets.tasks = tasks;
    })
}

/// A [`Stack`] whose api serves `collections` (and runs its scheduler every 200 ms).
pub async fn stack_with_collections(collections: &std::path::Path) -> Stack {
    crate::init_test_logging();
    let (nats, store) = tokio::join!(NatsServer::start(), StoreServer::start());
    let database = format!("courier_{}", uuid::Uuid::now_v7().simple());
    let mut config = Stack::api_config(&store, &database, &nats);
    config.collections_file = collections.to_path_buf();
    config.scheduler_interval = Duration::from_millis(200);
    let api = RunningApi::start(config).await;
    let broadcaster = RunningBroadcaster::start(Stack::broadcaster_config(&nats)).await;
    Stack { nats, store, api, broadcaster, database, http: reqwest::Client::new() }
}

/// Publishes `tasks` on their subjects (pipelined), each with its id as the message id.
pub async fn publish_tasks(js: &jetstream::Context, tasks: &[Task]) {
    for window in tasks.chunks(500) {
        let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(window.len());
        for task in window {
            let publish = PublishMessage::build()
                .payload(serde_json::to_vec(task).expect("tasks serialize").into())
                .message_id(task.id.to_string());
            acks.push(js.send_publish(task.subject(), publish).await.expect("publish"));
        }
        for ack in acks {
            ack.await.expect("JetStream stores the task");
        }
    }
}

/// Waits until `TASKS` is empty at every priority (nothing pending, nothing in flight).
pub async fn wait_tasks_drained(js: &jetstream::Context, timeout: Duration) {
    wait_until("every priority's tasks to drain", timeout, || async {
        matches!(read_backlog(js, Detail::Counts).await, Ok(Some(backlog)) if backlog.total() == 0 && backlog.messages == 0)
    })
    .await;
}
