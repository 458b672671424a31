//! `/api/v1/queues`: the workers' queue as JetStream sees it (per priority, plus the tasks
//! scheduled for later), its dead letters, and retrying a dead letter (at its priority or
//! another, now or later). There is one queue, `tasks`: stream `TASKS` consumed by the durable
//! consumers `workers-high`, `workers-normal` and `workers-low`, with dead letters in stream
//! `DLQ` (see docs/workers.md for what each number means). Every endpoint is for admins (a token
//! with the `admin` role): dead letters hold task payloads and retrying one re-runs work.
//! Anonymous callers get 401, other users 403.

use std::collections::BTreeMap;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use courier_core::{
    Priority,
    subjects::{DLQ_STREAM, TASKS_STREAM, workers_consumer},
    task::MAX_DELAY,
};
use courier_store::queues::{DeadLetter, QueueError, RetryOptions};
use mongodb::bson;
use serde_json::{Value, json};

use crate::{auth::Admin, error::ApiError, state::AppState};

/// The one queue's name in URLs.
pub const TASKS_QUEUE: &str = "tasks";

/// Most dead letters in one page of `GET /queues/tasks/dead`.
pub const MAX_PAGE: usize = 100;

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
        QueueError::NoTaskSubject(_) | QueueError::NotText(_) => {
            ApiError::Conflict(err.to_string())
        }
        QueueError::Store(err) => err.into(),
        QueueError::Nats { .. } => ApiError::Internal(anyhow::Error::new(err)),
    }
}

fn rfc3339(time: bson::DateTime) -> Option<String> {
    time.try_to_rfc3339_string().ok()
}

/// `GET /api/v1/queues`.
async fn list(_admin: Admin, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let overview = state.queues.overview().await.map_err(|e| queue_failed(e, TASKS_QUEUE, ""))?;
    let scheduled = state.store.scheduled_summary().await?;
    let tasks = &overview.tasks;
    let mut by_kind = BTreeMap::new();
    for kind in tasks.queued_by_kind.keys().chain(overview.dead_by_kind.keys()) {
        let count = |counts: &BTreeMap<String, u64>| counts.get(kind).copied().unwrap_or(0);
        by_kind.insert(
            kind.clone(),
            json!({"queued": count(&tasks.queued_by_kind), "dead_lettered": count(&overview.dead_by_kind)}),
        );
    }
    let now = std::time::SystemTime::now();
    let mut by_priority = serde_json::Map::new();
    let (mut redelivered, mut waiting, mut deliveries) = (0, 0, 0);
    for priority in Priority::ALL {
        let lane = tasks.lane(priority);
        let consumer = lane.consumer.unwrap_or_default();
        redelivered += consumer.redelivered;
        waiting = waiting.max(consumer.waiting);
        deliveries += consumer.deliveries;
        // Tasks on legacy subjects wait to be moved to normal.
        let legacy = if priority == Priority::Normal { tasks.legacy_queued } else { 0 };
        by_priority.insert(
            priority.to_string(),
            json!({
                "consumer": workers_consumer(priority),
                "pending": lane.pending() + legacy,
                "in_flight": lane.in_flight(),
                "redelivered": consumer.redelivered,
                "consumers": consumer.waiting,
                "deliveries_total": consumer.deliveries,
                "queued": lane.queued + legacy,
                "oldest_pending_age_seconds": lane.oldest_pending_age(now),
                "dead_lettered": overview.dead_by_priority.get(&priority).copied().unwrap_or(0),
            }),
        );
    }
    let pending: u64 =
        Priority::ALL.iter().map(|p| tasks.lane(*p).pending()).sum::<u64>() + tasks.legacy_queued;
    let in_flight: u64 = Priority::ALL.iter().map(|p| tasks.lane(*p).in_flight()).sum();
    Ok(Json(json!({
        "queues": [{
            "name": TASKS_QUEUE,
            "stream": TASKS_STREAM,
            "dead_letter_stream": DLQ_STREAM,
            "pending": pending,
            "in_flight": in_flight,
            "redelivered": redelivered,
            "dead_lettered": overview.dead.messages,
            "consumers": waiting,
            "enqueued_total": tasks.last_sequence,
            "processed_total": overview.processed_total(),
            "dead_lettered_total": overview.dead.last_sequence,
            "deliveries_total": deliveries,
            "by_priority": by_priority,
            "scheduled": {
                "count": scheduled.count,
                "next_due": scheduled.next_due.and_then(rfc3339),
            },
            "legacy": {
                "queued": tasks.legacy_queued,
                "consumer_present": tasks.legacy_consumer.is_some(),
            },
            "external": {"queued": tasks.external_queued},
            "by_kind": by_kind,
        }]
    })))
}

/// `?after=` (start after this `DLQ` sequence: the previous page's `next`) and `?limit=` (1 to
/// [`MAX_PAGE`]) of a dead-letter page; anything else is a 400 naming the parameter.
fn dead_query(params: &[(String, String)]) -> Result<(u64, usize), ApiError> {
    let (mut after, mut limit) = (0, 50);
    for (key, value) in params {
        match key.as_str() {
            "after" => {
                after = value.parse().map_err(|_| {
                    ApiError::BadRequest(format!(
                        "query parameter 'after': '{value}' is not a dead letter id (a whole number ≥ 0)"
                    ))
                })?;
            }
            "limit" => {
                limit =
                    value.parse().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "query parameter 'limit' must be a whole number from 1 to {MAX_PAGE}"
                        ))
                    })?;
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter '{other}' (a page takes after and limit)"
                )));
            }
        }
    }
    Ok((after, limit))
}

/// The api form of one dead letter; `id` is its `DLQ` stream sequence.
fn dead_letter_json(dead: &DeadLetter) -> Value {
    let task = serde_json::from_slice::<Value>(&dead.payload).ok();
    let mut item = json!({
        "id": dead.sequence,
        "subject": dead.subject,
        "kind": dead.kind(),
        "priority": dead.priority(),
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
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    known_queue(&queue)?;
    let (after, limit) = dead_query(&params)?;
    let page =
        state.queues.dead_letters(after, limit).await.map_err(|e| queue_failed(e, &queue, ""))?;
    let items: Vec<Value> = page.items.iter().map(dead_letter_json).collect();
    let next = if page.more { page.items.last().map(|d| json!(d.sequence)) } else { None };
    Ok(Json(json!({"items": items, "next": next})))
}

/// `?priority=` and `?not_before=` of a retry.
fn retry_options(params: &[(String, String)]) -> Result<RetryOptions, ApiError> {
    let mut options = RetryOptions::default();
    for (key, value) in params {
        match key.as_str() {
            "priority" => {
                let priority = value.parse::<Priority>().map_err(|err| {
                    ApiError::BadRequest(format!("query parameter 'priority': {err}"))
                })?;
                options.priority = Some(priority);
            }
            "not_before" => {
                let at = bson::DateTime::parse_rfc3339_str(value).map_err(|_| {
                    ApiError::BadRequest(format!(
                        "query parameter 'not_before': '{value}' is not an RFC 3339 time such as 2030-01-31T12:00:00Z"
                    ))
                })?;
                let latest = bson::DateTime::now().timestamp_millis()
                    + i64::try_from(MAX_DELAY.as_millis()).unwrap_or(i64::MAX);
                if at.timestamp_millis() > latest {
                    return Err(ApiError::BadRequest(format!(
                        "query parameter 'not_before': '{value}' is more than {} days ahead",
                        MAX_DELAY.as_secs() / 86_400
                    )));
                }
                options.not_before = Some(at);
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter '{other}' (a retry takes priority and not_before)"
                )));
            }
        }
    }
    Ok(options)
}

/// `POST /api/v1/queues/tasks/dead/<id>/retry[?priority=high&not_before=<RFC 3339>]`: puts the
/// dead letter with `DLQ` sequence `<id>` back on its original subject, or the same kind at
/// `priority` (a new message, so it gets a fresh delivery count), then removes it from `DLQ`.
/// With a future `not_before` it is scheduled instead and enqueued when due. 404 for an id that
/// is not (or no longer) in `DLQ`; 400 for a bad parameter (nothing changes).
async fn retry(
    _admin: Admin,
    State(state): State<AppState>,
    Path((queue, id)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    known_queue(&queue)?;
    let sequence: u64 = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("no dead letter '{id}' in queue '{queue}'")))?;
    let options = retry_options(&params)?;
    let retried = state
        .queues
        .retry_dead_letter(sequence, options, &state.store)
        .await
        .map_err(|e| queue_failed(e, &queue, &id))?;
    tracing::info!(dead_letter = sequence, subject = %retried.subject, task_seq = ?retried.enqueued_seq, scheduled_for = ?retried.scheduled_for, duplicate = retried.duplicate, "dead letter re-enqueued");
    let body = json!({
        "queue": queue,
        "dead_letter": sequence,
        "subject": retried.subject,
        "priority": courier_core::subjects::parse_task_subject(&retried.subject).map(|s| s.priority),
        "task_id": retried.task_id,
        "enqueued_seq": retried.enqueued_seq,
        "scheduled_for": retried.scheduled_for.and_then(rfc3339),
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn message(err: ApiError) -> String {
        assert_eq!(err.status_code(), StatusCode::BAD_REQUEST);
        err.to_string()
    }

    #[test]
    fn dead_letter_pages_refuse_bad_parameters_instead_of_clamping_them() {
        assert_eq!(dead_query(&[]).unwrap(), (0, 50));
        assert_eq!(dead_query(&params(&[("after", "7"), ("limit", "100")])).unwrap(), (7, 100));
        for (key, value) in [("limit", "101"), ("limit", "0"), ("after", "-1"), ("after", "x")] {
            let err = message(dead_query(&params(&[(key, value)])).unwrap_err());
            assert!(err.contains(&format!("'{key}'")), "{err}");
        }
        let err = message(dead_query(&params(&[("page", "2")])).unwrap_err());
        assert!(err.contains("'page'"), "{err}");
    }

    #[test]
    fn retry_options_are_parsed_and_bad_ones_name_the_parameter() {
        assert_eq!(retry_options(&[]).unwrap(), RetryOptions::default());
        let in_a_month =
            bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() + 30 * 86_400_000);
        let text = rfc3339(in_a_month).unwrap();
        let options =
            retry_options(&params(&[("priority", "high"), ("not_before", &text)])).unwrap();
        assert_eq!(options.priority, Some(Priority::High));
        assert_eq!(options.not_before, Some(in_a_month));
        let err = message(retry_options(&params(&[("priority", "urgent")])).unwrap_err());
        assert!(err.contains("'priority'") && err.contains("high, normal or low"), "{err}");
        let err = message(retry_options(&params(&[("not_before", "tomorrow")])).unwrap_err());
        assert!(err.contains("'not_before'") && err.contains("RFC 3339"), "{err}");
        let err =
            message(retry_options(&params(&[("not_before", "2999-01-01T00:00:00Z")])).unwrap_err());
        assert!(err.contains("365 days"), "{err}");
        let err = message(retry_options(&params(&[("prio", "high")])).unwrap_err());
        assert!(err.contains("unknown query parameter 'prio'"), "{err}");
    }
}
