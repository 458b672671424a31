//! The desks seed: `POST /api/desk/`, `PATCH|PUT|DELETE /api/desk/<id>`, onto
//! `/api/v1/desks` (the same documents: `id`, `name`, `width`, `height`).

use axum::{
    Router,
    extract::{Path, Request, State},
    http::Method,
    response::Response,
    routing::{patch, post},
};

use super::{Compat, both, unsafe_id};

pub fn router(compat: &Compat) -> Router {
    let router = both(Router::new(), "/api/desk/", post(create));
    let one = patch(change).put(change).delete(change);
    both(router, "/api/desk/{id}/", one).with_state(compat.clone())
}

async fn create(State(compat): State<Compat>, request: Request) -> Response {
    compat.note("POST /api/desk", &request);
    compat.forward(request, Method::POST, "/api/v1/desks", None).await
}

/// PATCH, PUT and DELETE keep their method: the modern route does the same thing.
async fn change(
    State(compat): State<Compat>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let method = request.method().clone();
    let alias = match method.as_str() {
        "PATCH" => "PATCH /api/desk/{id}",
        "PUT" => "PUT /api/desk/{id}",
        _ => "DELETE /api/desk/{id}",
    };
    compat.note(alias, &request);
    if let Some(bad) = unsafe_id(&id) {
        return bad;
    }
    compat.forward(request, method, &format!("/api/v1/desks/{id}"), None).await
}
