//! The pets seed: `POST /api/token/` and `/api/token/refresh/` onto `/api/v1/auth/*`,
//! `/api/pets/` CRUD onto `/api/v1/pets` (the seed's `?species=` / `?vaccinated=` filters are
//! the modern equality filters; create and update answer `{message, pet, task_queued, info}`),
//! and `GET /api/redis/stats/` onto `/api/v1/queues` in the seed's field names.

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, Request, State},
    http::{Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use courier_core::collection_spec::TriggerOn;
use serde_json::{Value, json};

use super::{Compat, as_array, both, json_answer, list_path, unsafe_id};

/// Largest token request body read here (the modern route applies its own limit too).
const MAX_TOKEN_BODY: usize = 16 * 1024;

pub fn router(compat: &Compat) -> Router {
    let router = both(Router::new(), "/api/token/", post(token));
    let router = both(router, "/api/token/refresh/", post(refresh));
    let router = both(router, "/api/pets/", get(list).post(create));
    let router = both(router, "/api/pets/{id}/", get(read).put(update).delete(remove));
    both(router, "/api/redis/stats/", get(stats)).with_state(compat.clone())
}

/// `{access_token, refresh_token, …}` as Simple JWT's `{access, refresh}`.
async fn token_pair(response: Response) -> Response {
    match json_answer(response).await {
        Ok((status, tokens)) => {
            let body =
                json!({"access": tokens["access_token"], "refresh": tokens["refresh_token"]});
            (status, Json(body)).into_response()
        }
        Err(response) => response,
    }
}

async fn token(State(compat): State<Compat>, request: Request) -> Response {
    compat.note("POST /api/token", &request);
    token_pair(compat.forward(request, Method::POST, "/api/v1/auth/login", None).await).await
}

/// `{refresh}` becomes the modern `{refresh_token}`; anything else goes on unchanged, so the
/// modern route reports what is wrong with it.
async fn refresh(State(compat): State<Compat>, request: Request) -> Response {
    compat.note("POST /api/token/refresh", &request);
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_TOKEN_BODY).await else {
        let body = json!({"error": {"code": "payload_too_large", "message": format!("the body is over {MAX_TOKEN_BODY} bytes")}});
        return (StatusCode::PAYLOAD_TOO_LARGE, Json(body)).into_response();
    };
    let renamed = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut object)) if object.contains_key("refresh") => {
            let token = object.remove("refresh").unwrap_or(Value::Null);
            object.insert("refresh_token".into(), token);
            Some(Value::Object(object))
        }
        _ => None,
    };
    let request = Request::from_parts(parts, Body::from(bytes));
    token_pair(compat.forward(request, Method::POST, "/api/v1/auth/refresh", renamed).await).await
}

async fn list(State(compat): State<Compat>, request: Request) -> Response {
    compat.note("/api/pets", &request);
    let path = list_path("pets", request.uri());
    as_array(compat.forward(request, Method::GET, &path, None).await).await
}

async fn read(State(compat): State<Compat>, Path(id): Path<String>, request: Request) -> Response {
    compat.note("/api/pets/{id}", &request);
    if let Some(bad) = unsafe_id(&id) {
        return bad;
    }
    compat.forward(request, Method::GET, &format!("/api/v1/pets/{id}"), None).await
}

/// Whether changing a pet queues work (the collection's `tasks` in collections.yaml).
fn queues_tasks(compat: &Compat, on: TriggerOn) -> bool {
    compat
        .state
        .collections
        .current()
        .get("pets")
        .is_some_and(|def| def.tasks_on(on).next().is_some())
}

/// The seed's answer to a create or update: `{message, pet, task_queued, info}`.
async fn with_message(compat: &Compat, response: Response, verb: &str, on: TriggerOn) -> Response {
    match json_answer(response).await {
        Ok((status, pet)) => {
            let queued = queues_tasks(compat, on);
            let info = if queued {
                "Task sent to workers for processing. Enriched data will be generated."
            } else {
                "No task is configured for this change."
            };
            let body = json!({"message": format!("Pet {verb} successfully"), "pet": pet, "task_queued": queued, "info": info});
            (status, Json(body)).into_response()
        }
        Err(response) => response,
    }
}

async fn create(State(compat): State<Compat>, request: Request) -> Response {
    compat.note("POST /api/pets", &request);
    let response = compat.forward(request, Method::POST, "/api/v1/pets", None).await;
    with_message(&compat, response, "created", TriggerOn::Create).await
}

async fn update(
    State(compat): State<Compat>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    compat.note("PUT /api/pets/{id}", &request);
    if let Some(bad) = unsafe_id(&id) {
        return bad;
    }
    let response = compat.forward(request, Method::PUT, &format!("/api/v1/pets/{id}"), None).await;
    with_message(&compat, response, "updated", TriggerOn::Update).await
}

async fn remove(
    State(compat): State<Compat>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    compat.note("DELETE /api/pets/{id}", &request);
    if let Some(bad) = unsafe_id(&id) {
        return bad;
    }
    let response =
        compat.forward(request, Method::DELETE, &format!("/api/v1/pets/{id}"), None).await;
    match json_answer(response).await {
        Ok(_) => Json(json!({"message": "Pet deleted successfully"})).into_response(),
        Err(response) => response,
    }
}

/// The queue overview in the seed's Redis field names: `pending_tasks` is what the workers
/// have not finished (queued plus in flight is JetStream's `pending` + `in_flight`),
/// `connected_clients` the workers waiting for tasks, `total_commands_processed` deliveries.
async fn stats(State(compat): State<Compat>, request: Request) -> Response {
    compat.note("/api/redis/stats", &request);
    match json_answer(compat.forward(request, Method::GET, "/api/v1/queues", None).await).await {
        Ok((status, overview)) => {
            let queue = &overview["queues"][0];
            (status, Json(seed_stats(queue))).into_response()
        }
        Err(response) => response,
    }
}

fn seed_stats(queue: &Value) -> Value {
    let count = |field: &str| queue[field].as_u64().unwrap_or(0);
    json!({
        "queue_name": queue["name"],
        "pending_tasks": count("pending") + count("in_flight"),
        "redis_host": Value::Null,
        "redis_port": Value::Null,
        "connected_clients": count("consumers"),
        "total_commands_processed": count("deliveries_total"),
        "backend": "nats-jetstream",
        "stream": queue["stream"],
        "processed_total": count("processed_total"),
        "dead_lettered": count("dead_lettered"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_numbers_land_in_the_seed_fields() {
        let queue = json!({"name": "tasks", "stream": "TASKS", "pending": 2, "in_flight": 1, "consumers": 3, "deliveries_total": 40, "processed_total": 37, "dead_lettered": 0});
        let stats = seed_stats(&queue);
        assert_eq!(stats["queue_name"], "tasks");
        assert_eq!(stats["pending_tasks"], 3);
        assert_eq!(stats["connected_clients"], 3);
        assert_eq!(stats["total_commands_processed"], 40);
    }
}
