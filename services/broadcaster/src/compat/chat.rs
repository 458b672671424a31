//! `/ws/chats/{chat_id}?token=<access token>`: the Rxul chat app's room socket. The token is
//! the query parameter `token` (or an `Authorization: Bearer` header); the member is admitted
//! exactly as a protocol-v1 `subscribe chat:<chat_id>` is (token, then room membership through
//! `chat`), and receives the room's messages as `{"type": "message", "chat_id", ...message}`.
//! Removal from the room closes the socket (4003).

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use axum::{
    Json,
    extract::{ConnectInfo, Path, Query, State, WebSocketUpgrade},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use courier_core::{channel::Channel, event::Event};
use serde_json::{Value, json};

use super::{accept, seeds};
use crate::{app::Shared, chat::Refusal};

pub async fn upgrade(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(chat_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let Ok(channel) = Channel::parse(&format!("chat:{chat_id}")) else {
        return refuse(StatusCode::BAD_REQUEST, "bad_request", "not a valid chat id");
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token = query.get("token").map(String::as_str).or(bearer);
    let claims = match shared.access.admit(&channel, token) {
        Ok(Some(claims)) => claims,
        Ok(None) => return refuse(StatusCode::UNAUTHORIZED, "unauthorized", "a token is required"),
        Err(err) => return refuse(StatusCode::UNAUTHORIZED, err.code(), &err.to_string()),
    };
    let (seat, _signals) = match shared.chat.admit(&chat_id, &claims).await {
        Ok(admitted) => admitted,
        Err(Refusal::NotMember) => {
            return refuse(StatusCode::FORBIDDEN, "forbidden", "not a member of this chat");
        }
        Err(Refusal::Unavailable) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "chat membership could not be checked; retry",
            );
        }
    };
    let (user_id, expires_at) = (claims.sub.clone(), claims.exp);
    accept(shared, peer, &headers, ws, move |socket, shared| async move {
        let flavor = seeds::Flavor {
            map: chat_message,
            about: json!({"chat_id": seat.room_id(), "user_id": seat.user_id()}),
            member: Some(user_id),
            expires_at: Some(expires_at),
        };
        let reason = seeds::run(socket, shared, &[channel], flavor).await;
        drop(seat);
        reason
    })
}

/// A room's `chat.message` event as the chat app's message; other room events are skipped.
pub fn chat_message(event: &Event) -> Option<Value> {
    if event.event_type != "chat.message" {
        return None;
    }
    let mut message = json!({"type": "message", "chat_id": event.doc_id});
    if let (Some(target), Some(data)) = (message.as_object_mut(), event.data.as_object()) {
        for (key, value) in data {
            target.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    Some(message)
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_room_messages_reach_the_chat_socket() {
        let event = |kind: &str| -> Event {
            serde_json::from_value(json!({"id": "0192f3a4-7b6c-7d8e-9f00-112233445566", "type": kind, "collection": "chat", "doc_id": "r1", "data": {"id": "m1", "content": "hola", "user_id": "u1", "type": "ignored"}, "actor": "u1", "time": "2026-01-01T00:00:00.000Z", "trace_id": "t"})).unwrap()
        };
        let message = chat_message(&event("chat.message")).unwrap();
        assert_eq!(message["type"], "message");
        assert_eq!(message["chat_id"], "r1");
        assert_eq!(message["content"], "hola");
        assert!(chat_message(&event("chat.member_added")).is_none());
    }
}
