//! The api's HTTP surface: one router per resource, merged here with the ops endpoints.

mod documents;
mod queues;

use std::sync::Arc;

use axum::{Router, http::HeaderValue};
use prometheus_client::registry::Registry;
use tower_http::trace::TraceLayer;

use crate::state::AppState;

/// Header carrying the request's trace id (taken from the client when well-formed).
pub const TRACE_ID_HEADER: &str = "x-trace-id";

pub fn router(state: AppState, registry: Arc<Registry>, readiness: courier_core::ops::Readiness) -> Router {
    Router::new()
        .nest("/api/v1", crate::auth::router().merge(documents::router()))
        .merge(queues::router())
        .merge(crate::openapi::router())
        .with_state(state)
        .merge(courier_core::ops::router(registry, readiness))
        .layer(TraceLayer::new_for_http())
}

/// The trace id of a request: the client's `x-trace-id` when it is a sane token, else a new one.
pub fn trace_id(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(TRACE_ID_HEADER)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string())
}
