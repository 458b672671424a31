//! `/api/v1/queues`: the workers' queue as JetStream sees it, its dead letters, and retrying a
//! dead letter. There is one queue, `tasks`: stream `TASKS` consumed by the durable consumer
//! `workers`, with dead letters in stream `DLQ` (see docs/workers.md for what each number means).
//! Every endpoint needs a signed-in user (`Authorization: Bearer <access token>`).

use std::collections::BTreeMap;

use anyhow::Context;
use async_nats::{
    HeaderMap,
    jetstream::{
        context::ConsumerInfoErrorKind,
        message::{PublishMessage, StreamMessage},
        stream::{RawMessageErrorKind, Stream},
    },
};
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use courier_core::subjects::{
    DLQ_ALL, DLQ_STREAM, TASKS_ALL, TASKS_STREAM, TRACE_HEADER, WORKERS_CONSUMER,
    dead_letter_header,
};
use futures::TryStreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{auth::Authenticated, error::ApiError, state::AppState};

/// The one queue's name in URLs.
pub const TASKS_QUEUE: &str = "tasks";

/// Header on a re-enqueued task: the `DLQ` sequence it was retried from.
pub const RETRIED_FROM_HEADER: &str = "Courier-Retried-From";

/// Most dead letters in one page of `GET /queues/tasks/dead`.
const MAX_PAGE: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/queues", get(list))
        .route("/api/v1/queues/{queue}/dead", get(dead_letters))
        .route("/api/v1/queues/{queue}/dead/{id}/retry", post(retry))
}

fn nats_failed(err: impl std::fmt::Display, what: &str) -> ApiError {
    ApiError::Internal(anyhow::anyhow!("{what}: {err}"))
}

fn known_queue(queue: &str) -> Result<(), ApiError> {
    if queue == TASKS_QUEUE {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("no queue named '{queue}' (there is one: '{TASKS_QUEUE}')")))
    }
}

/// Message counts per subject of `stream`, keyed by the part after `prefix`.
async fn counts_by_kind(
    stream: &mut Stream,
    filter: &str,
    prefix: &str,
) -> Result<BTreeMap<String, u64>, ApiError> {
    let mut by_subject =
        stream.info_with_subjects(filter).await.map_err(|e| nats_failed(e, "stream subjects"))?;
    let mut counts = BTreeMap::new();
    while let Some((subject, count)) =
        by_subject.try_next().await.map_err(|e| nats_failed(e, "stream subjects"))?
    {
        let kind = subject.strip_prefix(prefix).unwrap_or(&subject).to_owned();
        counts.insert(kind, count as u64);
    }
    Ok(counts)
}

/// `GET /api/v1/queues`.
async fn list(
    _user: Authenticated,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let js = state.outbox.jetstream();
    let mut tasks =
        js.get_stream(TASKS_STREAM).await.map_err(|e| nats_failed(e, "TASKS stream"))?;
    let mut dlq = js.get_stream(DLQ_STREAM).await.map_err(|e| nats_failed(e, "DLQ stream"))?;
    let tasks_state = tasks.info().await.map_err(|e| nats_failed(e, "TASKS info"))?.state.clone();
    let dlq_state = dlq.info().await.map_err(|e| nats_failed(e, "DLQ info"))?.state.clone();
    // The consumer exists once a worker has attached; before that nothing is delivered.
    let consumer = match tasks.consumer_info(WORKERS_CONSUMER).await {
        Ok(info) => Some(info),
        Err(err) if err.kind() == ConsumerInfoErrorKind::NotFound => None,
        Err(err) => return Err(nats_failed(err, "consumer info")),
    };
    let queued = counts_by_kind(&mut tasks, TASKS_ALL, "tasks.").await?;
    let dead = counts_by_kind(&mut dlq, DLQ_ALL, "dlq.tasks.").await?;
    let mut by_kind = BTreeMap::new();
    for kind in queued.keys().chain(dead.keys()) {
        by_kind.insert(
            kind.clone(),
            json!({"queued": queued.get(kind).copied().unwrap_or(0), "dead_lettered": dead.get(kind).copied().unwrap_or(0)}),
        );
    }

    let (pending, in_flight, redelivered, consumers, deliveries) = match &consumer {
        Some(c) => (
            c.num_pending,
            c.num_ack_pending as u64,
            c.num_redelivered as u64,
            c.num_waiting as u64,
            c.delivered.consumer_sequence,
        ),
        None => (tasks_state.messages, 0, 0, 0, 0),
    };
    // Every message that left TASKS was either acknowledged (processed) or terminated after
    // its dead letter was written; dead letters are counted by DLQ's last sequence.
    let processed = tasks_state
        .last_sequence
        .saturating_sub(tasks_state.messages)
        .saturating_sub(dlq_state.last_sequence);
    Ok(Json(json!({
        "queues": [{
            "name": TASKS_QUEUE,
            "stream": TASKS_STREAM,
            "consumer": WORKERS_CONSUMER,
            "dead_letter_stream": DLQ_STREAM,
            "pending": pending,
            "in_flight": in_flight,
            "redelivered": redelivered,
            "dead_lettered": dlq_state.messages,
            "consumers": consumers,
            "enqueued_total": tasks_state.last_sequence,
            "processed_total": processed,
            "dead_lettered_total": dlq_state.last_sequence,
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

fn header(message: &StreamMessage, name: &str) -> Option<String> {
    message.headers.get(name).map(|v| v.as_str().to_owned())
}

/// The api form of one dead letter; `id` is its `DLQ` stream sequence.
fn dead_letter_json(message: &StreamMessage) -> Value {
    let task = serde_json::from_slice::<Value>(&message.payload).ok();
    let mut item = json!({
        "id": message.sequence,
        "subject": message.subject.as_str(),
        "kind": message.subject.as_str().strip_prefix("dlq.tasks.").unwrap_or(""),
        "task_id": header(message, dead_letter_header::TASK_ID),
        "reason": header(message, dead_letter_header::REASON),
        "attempts": header(message, dead_letter_header::ATTEMPTS).and_then(|a| a.parse::<u64>().ok()),
        "worker": header(message, dead_letter_header::WORKER),
        "time": message.time.to_string(),
        "task": task,
    });
    if item["task"].is_null() {
        item["payload"] = json!(String::from_utf8_lossy(&message.payload));
    }
    item
}

/// `GET /api/v1/queues/tasks/dead?after=<id>&limit=N`: dead letters, oldest first.
async fn dead_letters(
    _user: Authenticated,
    State(state): State<AppState>,
    Path(queue): Path<String>,
    Query(query): Query<DeadQuery>,
) -> Result<Json<Value>, ApiError> {
    known_queue(&queue)?;
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let dlq = state
        .outbox
        .jetstream()
        .get_stream(DLQ_STREAM)
        .await
        .map_err(|e| nats_failed(e, "DLQ stream"))?;
    let mut items = Vec::with_capacity(limit);
    let mut from = query.after.unwrap_or(0).saturating_add(1);
    let mut more = false;
    loop {
        let next = dlq.raw_message_builder().sequence(from).next_by_subject(DLQ_ALL).send().await;
        match next {
            Ok(message) => {
                if items.len() == limit {
                    more = true;
                    break;
                }
                from = message.sequence + 1;
                items.push(dead_letter_json(&message));
            }
            Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => break,
            Err(err) => return Err(nats_failed(err, "reading DLQ")),
        }
    }
    let next = if more { items.last().map(|i| i["id"].clone()) } else { None };
    Ok(Json(json!({"items": items, "next": next})))
}

/// `POST /api/v1/queues/tasks/dead/<id>/retry`: puts the dead letter with `DLQ` sequence `<id>`
/// back on its original subject (a new message, so it gets a fresh delivery count), then removes
/// it from `DLQ`. 404 for an id that is not (or no longer) in `DLQ`.
async fn retry(
    _user: Authenticated,
    State(state): State<AppState>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    known_queue(&queue)?;
    let not_found = || ApiError::NotFound(format!("no dead letter '{id}' in queue '{queue}'"));
    let sequence: u64 = id.parse().map_err(|_| not_found())?;
    let js = state.outbox.jetstream();
    let dlq = js.get_stream(DLQ_STREAM).await.map_err(|e| nats_failed(e, "DLQ stream"))?;
    let message = match dlq.get_raw_message(sequence).await {
        Ok(message) => message,
        Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => return Err(not_found()),
        Err(err) => return Err(nats_failed(err, "reading DLQ")),
    };
    let subject = header(&message, dead_letter_header::ORIGINAL_SUBJECT)
        .or_else(|| message.subject.as_str().strip_prefix("dlq.").map(str::to_owned))
        .filter(|s| s.starts_with("tasks.") && !s.contains(['*', '>', ' ']))
        .ok_or_else(|| {
            ApiError::Conflict(format!("dead letter {sequence} names no task subject to retry on"))
        })?;

    let mut headers = HeaderMap::new();
    headers.insert(RETRIED_FROM_HEADER, format!("{DLQ_STREAM}:{sequence}").as_str());
    if let Some(trace) = header(&message, TRACE_HEADER) {
        headers.insert(TRACE_HEADER, trace.as_str());
    }
    // A message id per dead letter: retrying twice (a lost response, two clicks) enqueues once.
    let publish = PublishMessage::build()
        .payload(message.payload.clone())
        .headers(headers)
        .message_id(format!("retry-dlq-{sequence}"));
    let ack = js
        .send_publish(subject.clone(), publish)
        .await
        .map_err(|e| nats_failed(e, "re-enqueueing"))?
        .await
        .context("re-enqueued task not acknowledged")?;
    match dlq.delete_message(sequence).await {
        Ok(_) => {}
        // Removed meanwhile by a concurrent retry of the same dead letter.
        Err(err) if err.to_string().contains("no message found") => {}
        Err(err) => return Err(nats_failed(err, "removing the dead letter")),
    }
    tracing::info!(dead_letter = sequence, %subject, task_seq = ack.sequence, duplicate = ack.duplicate, "dead letter re-enqueued");
    let body = json!({
        "queue": queue,
        "dead_letter": sequence,
        "subject": subject,
        "task_id": header(&message, dead_letter_header::TASK_ID),
        "enqueued_seq": ack.sequence,
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}
