//! The Chapter-CI products seed: `GET /api/`, `GET /api/products/`, `GET /api/product/<id>/`,
//! `POST /api/product/`, onto `/api/v1/products` (the answers are the same documents: `id`,
//! `nombre`, `precio`, `talla`; the list is a plain array).

use axum::{
    Router,
    extract::{Path, Request, State},
    http::Method,
    response::Response,
    routing::{get, post},
};

use super::{Compat, as_array, both, list_path, unsafe_id};

pub fn router(compat: &Compat) -> Router {
    let router = both(Router::new(), "/api/", get(super::home));
    let router = both(router, "/api/products/", get(list));
    let router = both(router, "/api/product/{id}/", get(read));
    let router = both(router, "/api/product/", post(create));
    router.with_state(compat.clone())
}

async fn list(State(compat): State<Compat>, request: Request) -> Response {
    compat.note("/api/products", &request);
    let path = list_path("products", request.uri());
    as_array(compat.forward(request, Method::GET, &path, None).await).await
}

async fn read(State(compat): State<Compat>, Path(id): Path<String>, request: Request) -> Response {
    compat.note("/api/product/{id}", &request);
    if let Some(bad) = unsafe_id(&id) {
        return bad;
    }
    compat.forward(request, Method::GET, &format!("/api/v1/products/{id}"), None).await
}

async fn create(State(compat): State<Compat>, request: Request) -> Response {
    compat.note("POST /api/product", &request);
    compat.forward(request, Method::POST, "/api/v1/products", None).await
}
