//! `/api/v1/queues`: the workers' queue as JetStream sees it, its dead letters, and retrying a
//! dead letter. There is one queue, `tasks`: stream `TASKS` consumed by the durable consumer
//! `workers`, with dead letters in stream `DLQ` (see docs/workers.md for what each number means).
//! Every endpoint is for admins (a token with the `admin` role): dead letters hold task payloads
//! and retrying one re-runs work. Anonymous callers get 401, other users 403.

use std::collections::BTreeMap;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use courier_core::subjects::{DLQ_STREAM, TASKS_STREAM, WORKERS_CONSUMER};
use courier_store::queues::{DeadLetter, QueueError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{auth::Admin, error::ApiError, state::AppState};

/// The one queue's name in URLs.
pub const TASKS_QUEUE: &str = "tasks";

/// Most dead letters in one page of `GET /queues/tasks/dead`.
const MAX_PAGE: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/queues", get(list))
        .route("/api/v1/queues/{queue}/dead", get(dead_letters))
        .route("/api/v1/queues/{queue}/dead/{id}/retry", post(retry))
}

fn known_queue(queue: &str) -> Result<(), ApiError> {
    if queue == TASKS_QUEUE {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("no queue named '{queue}' (there is one: '{TASKS_QUEUE}')")))
    }
}

/// JetStream failures are the api's own (500, logged); the rest name what the request got wrong.
fn queue_failed(err: QueueError, queue: &str, id: &str) -> ApiError {
    match err {
        QueueError::DeadLetterNotFound(_) => {
            ApiError::NotFound(format!("no dead letter '{id}' in queue '{queue}'"))
        }
        QueueError::NoTaskSubject(_) => ApiError::Conflict(err.to_string()),
        QueueError::Nats { .. } => ApiError::Internal(anyhow::Error::new(err)),
    }
}

/// `GET /api/v1/queues`.
async fn list(_admin: Admin, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let overview = state.queues.overview().await.map_err(|e| queue_failed(e, TASKS_QUEUE, ""))?;
    let mut by_kind = BTreeMap::new();
    for kind in overview.queued_by_kind.keys().chain(overview.dead_by_kind.keys()) {
        let count = |counts: &BTreeMap<String, u64>| counts.get(kind).copied().unwrap_or(0);
        by_kind.insert(
            kind.clone(),
            json!({"queued": count(&overview.queued_by_kind), "dead_lettered": count(&overview.dead_by_kind)}),
        );
    }
    let (pending, in_flight, redelivered, consumers, deliveries) = match &overview.consumer {
        Some(c) => (c.pending, c.in_flight, c.redelivered, c.waiting, c.deliveries),
        None => (overview.tasks.messages, 0, 0, 0, 0),
    };
    Ok(Json(json!({
        "queues": [{
            "name": TASKS_QUEUE,
            "stream": TASKS_STREAM,
            "consumer": WORKERS_CONSUMER,
            "dead_letter_stream": DLQ_STREAM,
            "pending": pending,
            "in_flight": in_flight,
            "redelivered": redelivered,
            "dead_lettered": overview.dead.messages,
            "consumers": consumers,
            "enqueued_total": overview.tasks.last_sequence,
            "processed_total": overview.processed_total(),
            "dead_lettered_total": overview.dead.last_sequence,
            "deliveries_total": deliveries,
            "by_kind": by_kind,
        }]
    })))
}

#[derive(Debug, Deserialize)]
struct DeadQuery {
    /// Start after this `DLQ` sequence (the previous page's `next`).
    after: Option<u64>,
    limit: Option<usize>,
}

/// The api form of one dead letter; `id` is its `DLQ` stream sequence.
fn dead_letter_json(dead: &DeadLetter) -> Value {
    let task = serde_json::from_slice::<Value>(&dead.payload).ok();
    let mut item = json!({
        "id": dead.sequence,
        "subject": dead.subject,
        "kind": dead.kind(),
        "task_id": dead.task_id,
        "reason": dead.reason,
        "attempts": dead.attempts,
        "worker": dead.worker,
        "time": dead.time,
        "task": task,
    });
    if item["task"].is_null() {
        item["payload"] = json!(String::from_utf8_lossy(&dead.payload));
    }
    item
}

/// `GET /api/v1/queues/tasks/dead?after=<id>&limit=N`: dead letters, oldest first.
async fn dead_letters(
    _admin: Admin,
    State(state): State<AppState>,
    Path(queue): Path<String>,
    Query(query): Query<DeadQuery>,
) -> Result<Json<Value>, ApiError> {
    known_queue(&queue)?;
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let page = state
        .queues
        .dead_letters(query.after.unwrap_or(0), limit)
        .await
        .map_err(|e| queue_failed(e, &queue, ""))?;
    let items: Vec<Value> = page.items.iter().map(dead_letter_json).collect();
    let next = if page.more { page.items.last().map(|d| json!(d.sequence)) } else { None };
    Ok(Json(json!({"items": items, "next": next})))
}

/// `POST /api/v1/queues/tasks/dead/<id>/retry`: puts the dead letter with `DLQ` sequence `<id>`
/// back on its original subject (a new message, so it gets a fresh delivery count), then removes
/// it from `DLQ`. 404 for an id that is not (or no longer) in `DLQ`.
async fn retry(
    _admin: Admin,
    State(state): State<AppState>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    known_queue(&queue)?;
    let sequence: u64 = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("no dead letter '{id}' in queue '{queue}'")))?;
    let retried =
        state.queues.retry_dead_letter(sequence).await.map_err(|e| queue_failed(e, &queue, &id))?;
    tracing::info!(dead_letter = sequence, subject = %retried.subject, task_seq = retried.enqueued_seq, duplicate = retried.duplicate, "dead letter re-enqueued");
    let body = json!({
        "queue": queue,
        "dead_letter": sequence,
        "subject": retried.subject,
        "task_id": retried.task_id,
        "enqueued_seq": retried.enqueued_seq,
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}
