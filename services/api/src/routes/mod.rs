//! The api's HTTP surface: one router per resource, merged here with the ops endpoints.

pub(crate) mod chats;
mod collections;
mod documents;
pub mod queues;
mod telemetry;

use std::sync::Arc;

use axum::Router;
use courier_core::request_telemetry::{self, HttpMetrics};
use prometheus_client::registry::Registry;

use crate::state::AppState;

/// Every route, with per-request telemetry (trace id, span, RED metrics) around all of them and
/// the HTTP limits (`crate::limits`) around all but the ops endpoints; a body left unread by
/// an early answer is drained first (`crate::unread_body`), so the client reads that answer.
pub fn router(
    state: AppState,
    registry: Arc<Registry>,
    http_metrics: Arc<HttpMetrics>,
    readiness: courier_core::ops::Readiness,
    limits: &crate::limits::HttpLimitArgs,
) -> Router {
    let app = Router::new()
        .nest(
            "/api/v1",
            crate::auth::router()
                .merge(chats::router())
                .merge(telemetry::router())
                .merge(documents::router()),
        )
        .merge(queues::router())
        .merge(crate::openapi::router())
        .merge(collections::router())
        .merge(crate::web::router())
        .with_state(state.clone());
    // The seed aliases forward to the modern routes inside the limits (one request, one slot).
    let app = crate::limits::apply(crate::compat::with_aliases(app, &state), limits);
    app.merge(courier_core::ops::router(registry, readiness))
        .layer(axum::middleware::from_fn(crate::error::json_rejections))
        .layer(axum::middleware::from_fn(crate::unread_body::drain_unread_body))
        .layer(axum::middleware::from_fn_with_state(http_metrics, request_telemetry::observe))
}
