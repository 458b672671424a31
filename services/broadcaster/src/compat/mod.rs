//! The seed systems' WebSocket endpoints (`COURIER_SEED_COMPAT`): `/` speaks the seeds'
//! flat messages (`seeds`), `/ws/chats/{chat_id}` is the Rxul chat room socket (`chat`). Both
//! are thin mappings onto the hub's channel subscriptions; protocol v1 on `/ws` is untouched.

mod chat;
mod seeds;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::{ConnectInfo, State, WebSocketUpgrade, ws::WebSocket},
    http::HeaderMap,
    response::Response,
    routing::get,
};

use crate::{app::Shared, connection::CloseReason};

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

async fn seeds_upgrade(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    accept(shared, peer, &headers, ws, seeds::serve)
}

/// The admission checks `/ws` makes (attached, not shutting down, under the connection limits
/// for the process and the client address), then `serve` in a tracked task so shutdown waits
/// for it.
fn accept<F, Fut>(
    shared: Arc<Shared>,
    peer: SocketAddr,
    headers: &HeaderMap,
    ws: WebSocketUpgrade,
    serve: F,
) -> Response
where
    F: FnOnce(WebSocket, Arc<Shared>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = CloseReason> + Send + 'static,
{
    let permit = match crate::app::admit_connection(&shared, peer, headers) {
        Ok(permit) => permit,
        Err(refusal) => return *refusal,
    };
    let limit = shared.config.max_message_bytes;
    let token = shared.tracker.token();
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_failed_upgrade(move |err| {
            tracing::debug!(%err, "websocket upgrade failed");
        })
        .on_upgrade(move |socket| async move {
            shared.metrics.connection_opened();
            let reason = serve(socket, shared.clone()).await;
            shared.metrics.connection_closed(reason, &[]);
            drop(permit);
            drop(token);
        })
}
