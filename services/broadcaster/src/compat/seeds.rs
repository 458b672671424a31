//! `/`: the seeds' WebSocket service on :8765. `connection_established` on connect, `ping` →
//! `pong`, `get_status` → `status`, and every change of every public collection as the seeds'
//! flat message — `<singular>_<action>` with the document under `<singular>`
//! (`product_created {product: {id, nombre, precio, talla}}`, `desk_deleted {desk_id,
//! desk_name, desk}`) — with no subscribe. Underneath it is one hub subscription per public
//! collection; the same loop serves the chat room socket with its own mapping.

use std::{sync::Arc, time::Duration};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use courier_core::{
    channel::Channel,
    event::Event,
    protocol::{ServerFrame, close_code},
};
use futures::{SinkExt, StreamExt, stream::SplitSink};
use serde_json::{Value, json};
use tokio_stream::StreamMap;

use crate::{app::Shared, connection::CloseReason};

/// Longest a close frame may take to go out.
const CLOSE_WINDOW: Duration = Duration::from_secs(1);

/// How hub events become the socket's messages, and what the hello says.
pub struct Flavor {
    /// The flat message for one event, `None` to skip it.
    pub map: fn(&Event) -> Option<Value>,
    /// The extra fields of `connection_established` and `status`.
    pub about: Value,
    /// The user whose removal from a chat room ends the socket (chat only).
    pub member: Option<String>,
    /// When the token that admitted the socket expires (unix seconds): the socket is closed
    /// then with 4001 (chat only).
    pub expires_at: Option<u64>,
}

pub async fn serve(socket: WebSocket, shared: Arc<Shared>) -> CloseReason {
    let channels: Vec<Channel> = shared
        .access
        .public_collections()
        .into_iter()
        .filter_map(|name| Channel::parse(&name).ok())
        .filter(|channel| channel.chat_room().is_none())
        .collect();
    let names: Vec<String> = channels.iter().map(Channel::name).collect();
    let flavor = Flavor {
        map: seed_message,
        about: json!({"collections": names}),
        member: None,
        expires_at: None,
    };
    run(socket, shared, &channels, flavor).await
}

/// The seeds' message for a collection event: `<singular>_<action>`, the document (with its
/// `id`) under `<singular>`, and for deletions also `<singular>_id` / `<singular>_name`.
pub fn seed_message(event: &Event) -> Option<Value> {
    let singular = singular(&event.collection);
    let action = event.event_type.rsplit('.').next()?;
    let mut document = event.data.clone();
    if let Some(object) = document.as_object_mut() {
        object.entry("id").or_insert_with(|| json!(event.doc_id));
    }
    let mut message = json!({
        "type": format!("{singular}_{action}"),
        "timestamp": event.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    if action == "deleted" {
        message[format!("{singular}_id")] = json!(event.doc_id);
        message[format!("{singular}_name")] =
            document.get("name").or_else(|| document.get("nombre")).cloned().unwrap_or(Value::Null);
    }
    message[singular] = document;
    Some(message)
}

/// `products` → `product`, `desks` → `desk`, `categories` → `category`.
fn singular(collection: &str) -> String {
    if let Some(stem) = collection.strip_suffix("ies") {
        format!("{stem}y")
    } else {
        collection.strip_suffix('s').unwrap_or(collection).to_owned()
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The socket loop: hello, then client messages, deliveries and pings until either side ends.
pub async fn run(
    socket: WebSocket,
    shared: Arc<Shared>,
    channels: &[Channel],
    flavor: Flavor,
) -> CloseReason {
    let connection_id = uuid::Uuid::now_v7().simple().to_string();
    let mut rings = StreamMap::new();
    let mut full = false;
    for channel in channels {
        match shared.hub.subscribe(channel) {
            Ok(subscription) => {
                rings.insert(channel.name(), subscription.receiver);
            }
            Err(_) => full = true,
        }
    }
    let (mut sink, mut stream) = socket.split();
    let mut socket = Writer { sink: &mut sink, timeout: shared.config.send_timeout };
    if full {
        // No channel limit is reached in normal running; 1013 ("try again later") says so.
        shared.metrics.refused(crate::metrics::Limit::Channels);
        socket.close(1013, "channel limit reached; retry later").await;
        return CloseReason::Refused;
    }
    let mut hello = json!({"type": "connection_established", "message": "Connected to Courier (seed compatibility)", "connection_id": connection_id, "timestamp": now()});
    merge(&mut hello, &flavor.about);
    if socket.send(&hello).await.is_err() {
        return CloseReason::ClientClosed;
    }
    let ping_interval = shared.config.ping_interval;
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
    let shutdown = shared.shutdown.clone();
    let expiry = flavor.expires_at.map(|exp| {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(exp);
        tokio::time::Instant::now()
            + at.duration_since(std::time::SystemTime::now()).unwrap_or_default()
    });
    let expired = async move {
        match expiry {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    let mut expired = std::pin::pin!(expired);
    loop {
        let written = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                socket.close(1001, "server shutting down").await;
                return CloseReason::Shutdown;
            }
            _ = &mut expired => {
                socket.close(close_code::TOKEN_EXPIRED, "the access token expired; reconnect with a fresh one").await;
                return CloseReason::TokenExpired;
            }
            incoming = stream.next() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return CloseReason::ClientClosed,
                Some(Ok(Message::Text(text))) => {
                    let answer = answer(&text, &shared, &connection_id, &flavor.about);
                    socket.send(&answer).await
                }
                Some(Ok(_)) => Ok(()),
            },
            Some((_, item)) = rings.next(), if !rings.is_empty() => match item {
                Ok(delivery) => {
                    if let Some(revoked) = &delivery.revoke {
                        if flavor.member.as_deref() == Some(&**revoked) {
                            socket.close(4003, "removed from the chat").await;
                            return CloseReason::ClientClosed;
                        }
                        continue;
                    }
                    match flat(&delivery.frame, flavor.map) {
                        Some(message) => socket.send(&message).await,
                        None => Ok(()),
                    }
                }
                Err(crate::ring::Lagged(skipped)) => {
                    shared.metrics.frames_dropped.inc_by(skipped);
                    tracing::warn!(skipped, "seed-compat client fell a whole ring behind; closing it");
                    socket.close(4008, "client fell too far behind").await;
                    return CloseReason::SlowConsumer;
                }
            },
            _ = ping.tick() => socket.raw(Message::Ping(bytes::Bytes::new())).await,
        };
        if written.is_err() {
            return CloseReason::SlowConsumer;
        }
    }
}

/// The event inside a hub frame, through the flavor's mapping.
fn flat(frame: &str, map: fn(&Event) -> Option<Value>) -> Option<Value> {
    match serde_json::from_str::<ServerFrame>(frame) {
        Ok(ServerFrame::Event { event, .. }) => map(&event),
        _ => None,
    }
}

/// The answer to a client message: `ping` → `pong`, `get_status` → `status`, else `error`.
fn answer(text: &str, shared: &Shared, connection_id: &str, about: &Value) -> Value {
    let kind = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned));
    match kind.as_deref() {
        Some("ping") => json!({"type": "pong", "timestamp": now()}),
        Some("get_status") => {
            let mut status = json!({
                "type": "status",
                "connection_id": connection_id,
                "connected_clients": shared.connections.open(),
                "node": shared.node,
                "uptime_secs": shared.started.elapsed().as_secs(),
                "last_seq": shared.hub.last_seq(),
                "timestamp": now(),
            });
            merge(&mut status, about);
            status
        }
        Some(other) => {
            let other: String = other.chars().take(64).collect();
            json!({"type": "error", "message": format!("unknown message type '{other}': send ping or get_status (changes are published through the REST api)"), "timestamp": now()})
        }
        None => {
            json!({"type": "error", "message": "send a JSON object with a \"type\" (ping or get_status)", "timestamp": now()})
        }
    }
}

fn merge(target: &mut Value, extra: &Value) {
    if let (Some(target), Some(extra)) = (target.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            target.insert(key.clone(), value.clone());
        }
    }
}

/// Writes under the send timeout: a client that stops reading is cut off, never waited on.
struct Writer<'a> {
    sink: &'a mut SplitSink<WebSocket, Message>,
    timeout: Duration,
}

impl Writer<'_> {
    async fn send(&mut self, message: &Value) -> Result<(), ()> {
        self.raw(Message::Text(Utf8Bytes::from(message.to_string()))).await
    }

    async fn raw(&mut self, message: Message) -> Result<(), ()> {
        match tokio::time::timeout(self.timeout, self.sink.send(message)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame =
            Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }));
        let _ = tokio::time::timeout(CLOSE_WINDOW, self.sink.send(frame)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, data: Value) -> Event {
        serde_json::from_value(json!({"id": "0192f3a4-7b6c-7d8e-9f00-112233445566", "type": kind, "collection": kind.split('.').next().unwrap(), "doc_id": "d1", "data": data, "actor": null, "time": "2026-01-01T00:00:00.000Z", "trace_id": "t"})).unwrap()
    }

    #[test]
    fn events_become_the_seeds_flat_messages() {
        let created = seed_message(&event(
            "products.created",
            json!({"id": "d1", "nombre": "Camiseta", "precio": 25.99, "talla": "M"}),
        ))
        .unwrap();
        assert_eq!(created["type"], "product_created");
        assert_eq!(
            created["product"],
            json!({"id": "d1", "nombre": "Camiseta", "precio": 25.99, "talla": "M"})
        );
        let updated = seed_message(&event(
            "desks.updated",
            json!({"name": "Mesa", "width": 200, "height": 90}),
        ))
        .unwrap();
        assert_eq!(updated["type"], "desk_updated");
        assert_eq!(updated["desk"]["id"], "d1", "the id is filled in from the event");
        let deleted = seed_message(&event(
            "desks.deleted",
            json!({"id": "d1", "name": "Mesa", "width": 200, "height": 90}),
        ))
        .unwrap();
        assert_eq!(
            (deleted["type"].as_str(), deleted["desk_id"].as_str(), deleted["desk_name"].as_str()),
            (Some("desk_deleted"), Some("d1"), Some("Mesa"))
        );
        assert_eq!(singular("categories"), "category");
    }
}
