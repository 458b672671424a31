//! The seed systems' WebSocket endpoints (`COURIER_SEED_COMPAT`): `/` speaks the seeds'
//! flat messages (`seeds`), `/ws/chats/{chat_id}` is the Rxul chat room socket (`chat`). Both
//! are thin mappings onto the hub's channel subscriptions; protocol v1 on `/ws` is untouched.

mod chat;
mod seeds;

use std::sync::{Arc, atomic::Ordering};

use axum::{
    Router,
    extract::{State, WebSocketUpgrade, ws::WebSocket},
    response::Response,
    routing::get,
};

use crate::{
    app::{Shared, unavailable},
    connection::CloseReason,
};

/// The compat routes, or none when the layer is off.
pub fn router(shared: &Arc<Shared>) -> Router {
    if !shared.config.seed_compat {
        return Router::new();
    }
    Router::new()
        .route("/", get(seeds_upgrade))
        .route("/ws/chats/{chat_id}", get(chat::upgrade))
        .with_state(shared.clone())
}

async fn seeds_upgrade(State(shared): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    accept(shared, ws, seeds::serve)
}

/// The admission checks `/ws` makes (attached, not shutting down, under the connection limit),
/// then `serve` in a tracked task so shutdown waits for it.
fn accept<F, Fut>(shared: Arc<Shared>, ws: WebSocketUpgrade, serve: F) -> Response
where
    F: FnOnce(WebSocket, Arc<Shared>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = CloseReason> + Send + 'static,
{
    if let Err(reason) = crate::app::admit_connection(&shared) {
        return unavailable(reason);
    }
    let limit = shared.config.max_message_bytes;
    let token = shared.tracker.token();
    let failed = shared.clone();
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_failed_upgrade(move |err| {
            failed.connections.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(%err, "websocket upgrade failed");
        })
        .on_upgrade(move |socket| async move {
            shared.metrics.connection_opened();
            let reason = serve(socket, shared.clone()).await;
            shared.metrics.connection_closed(reason, &[]);
            shared.connections.fetch_sub(1, Ordering::Relaxed);
            drop(token);
        })
}
