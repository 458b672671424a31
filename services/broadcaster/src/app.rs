//! Building and running the broadcaster: the live feed, the hub, the `/ws` endpoint and the ops
//! endpoints; graceful shutdown closes every client with 1001 and waits for them to go.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use async_nats::jetstream;
use axum::{
    Json, Router,
    extract::{ConnectInfo, State, WebSocketUpgrade},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use courier_core::{
    auth::{JwtKeys, KeyConfigError},
    config::connect_nats,
    jetstream::{StreamUse, ensure_streams_for_with_retry},
    ops::Readiness,
    request_telemetry::{self, HttpMetrics},
};
use serde_json::json;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    access::{Access, ReadRules},
    admission::{Connections, Permit, Refused, client_address},
    chat::ChatLive,
    config::BroadcasterConfig,
    connection,
    feed::LiveFeed,
    hub::Hub,
    metrics::{BroadcasterMetrics, Limit},
};

/// Everything connections share.
pub struct Shared {
    pub hub: Arc<Hub>,
    pub js: jetstream::Context,
    pub config: BroadcasterConfig,
    pub node: String,
    pub started: Instant,
    /// Open connections, in total and per client address.
    pub connections: Arc<Connections>,
    /// `since` replays running in this process (`COURIER_WS_MAX_REPLAYS`).
    pub replays: Arc<tokio::sync::Semaphore>,
    pub metrics: Arc<BroadcasterMetrics>,
    /// Cancelled at shutdown: connections send 1001 and end.
    pub shutdown: CancellationToken,
    pub feed_attached: Arc<AtomicBool>,
    pub access: Access,
    /// Chat membership, typing and presence.
    pub chat: Arc<ChatLive>,
    pub(crate) tracker: TaskTracker,
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    shared: Arc<Shared>,
    nats: async_nats::Client,
}

impl Application {
    pub async fn build(config: BroadcasterConfig) -> anyhow::Result<Self> {
        let nats = connect_nats(&config.nats.nats_url, &config.nats.auth, "courier-broadcaster")
            .await
            .context("NATS configuration")?;
        let mut registry = courier_core::ops::component_registry("broadcaster");
        let metrics = BroadcasterMetrics::register(&mut registry);
        let http_metrics = HttpMetrics::register(&mut registry);
        let chat = ChatLive::new(nats.clone(), &config.node(), config.chat.clone(), &mut registry)
            .map_err(|err| anyhow::anyhow!("chat configuration: {err}"))?;
        let feed_attached = Arc::new(AtomicBool::new(false));
        let read_rules = match config.channel_rules().map_err(anyhow::Error::msg)? {
            Some(path) => ReadRules::Declared(Access::read_rules(path)?),
            None => {
                tracing::warn!(
                    "COURIER_PUBLIC_CHANNELS: no collections file, every channel is public"
                );
                ReadRules::AllPublic
            }
        };
        let keys = match JwtKeys::from_args(&config.jwt) {
            Ok(keys) => Some(keys),
            Err(KeyConfigError::Missing) => {
                tracing::warn!(
                    "no JWT keys configured: channels that need a token cannot be joined"
                );
                None
            }
            Err(err) => return Err(err).context("JWT configuration"),
        };
        let shared = Arc::new(Shared {
            access: Access::new(read_rules, keys),
            chat: chat.clone(),
            hub: Arc::new(Hub::with_limits(
                config.channel_buffer,
                config.channel_buffer_bytes,
                config.max_channels,
            )),
            js: jetstream::new(nats.clone()),
            node: config.node(),
            started: Instant::now(),
            connections: Connections::new(
                config.max_connections,
                config.max_connections_per_address,
            ),
            replays: Arc::new(tokio::sync::Semaphore::new(config.max_replays)),
            metrics,
            shutdown: CancellationToken::new(),
            feed_attached: feed_attached.clone(),
            tracker: TaskTracker::new(),
            config,
        });
        let readiness =
            Readiness::new().with_nats(nats.clone()).with_check("live_feed", move || {
                let attached = feed_attached.load(Ordering::Acquire);
                async move {
                    if attached {
                        Ok(())
                    } else {
                        Err("not attached to the EVENTS stream".to_owned())
                    }
                }
            });
        let router = Router::new()
            .route("/ws", get(upgrade))
            .with_state(shared.clone())
            .merge(crate::compat::router(&shared))
            .route("/chat/top-rooms", get(crate::chat::top_rooms).with_state(chat))
            .merge(courier_core::ops::router(Arc::new(registry), readiness))
            .layer(axum::middleware::from_fn_with_state(http_metrics, request_telemetry::observe));
        let listener = bind(shared.config.listen, shared.config.send_buffer_bytes)
            .with_context(|| format!("cannot listen on {}", shared.config.listen))?;
        Ok(Application { listener, router, shared, nats })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown`: then stops accepting, sends 1001 to every client and waits (up
    /// to the grace period) for the connections to end.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application { listener, router, shared, nats } = self;
        tracing::info!(addr = %listener.local_addr()?, node = %shared.node, "broadcaster listening");

        let feed = LiveFeed {
            js: shared.js.clone(),
            hub: shared.hub.clone(),
            metrics: shared.metrics.clone(),
            attached: shared.feed_attached.clone(),
            chat: shared.chat.clone(),
        };
        let background = CancellationToken::new();
        let setup = {
            let (js, replicas, token) =
                (shared.js.clone(), shared.config.nats.streams(), background.clone());
            tokio::spawn(async move {
                ensure_streams_for_with_retry(&js, replicas, StreamUse::Events, &token).await
            })
        };
        let feed_task = tokio::spawn(feed.run(background.clone()));
        let chat_task = tokio::spawn(shared.chat.clone().run(background.clone()));
        let rules_watcher = shared.config.collections_file.clone().map(|path| {
            let interval =
                shared.config.collections_reload_interval.max(Duration::from_millis(100));
            let shared = shared.clone();
            let watch = courier_core::file_watch::on_file_change(
                path.clone(),
                interval,
                background.clone(),
                move || {
                    shared.access.reload_rules(&path);
                    async {}
                },
            );
            tokio::spawn(watch)
        });
        let pruner = {
            let (hub, token) = (shared.hub.clone(), background.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(30)) => { hub.prune(); }
                    }
                }
            })
        };

        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .context("broadcaster server failed")?;

        // Stop accepting happened above; now close clients and drain.
        shared.shutdown.cancel();
        shared.chat.announce_shutdown().await;
        shared.tracker.close();
        let grace = shared.config.shutdown_grace;
        if tokio::time::timeout(grace, shared.tracker.wait()).await.is_err() {
            tracing::warn!(
                remaining = shared.tracker.len(),
                "connections still open after the grace period"
            );
        }
        background.cancel();
        let _ = tokio::join!(feed_task, pruner, chat_task);
        if let Some(watcher) = rules_watcher {
            let _ = watcher.await;
        }
        setup.abort();
        drop(nats);
        tracing::info!("broadcaster stopped");
        Ok(())
    }
}

/// The checks every WebSocket upgrade makes before it is accepted: attached to the event
/// stream, not shutting down, under the connection limits (process-wide and per client
/// address, [`client_address`]). The permit counts the connection until it is dropped (when
/// the socket ends or the upgrade fails). A refusal is the response to answer.
pub(crate) fn admit_connection(
    shared: &Shared,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<Permit, Box<Response>> {
    if !shared.hub.started() {
        return Err(Box::new(unavailable("not yet attached to the event stream; retry shortly")));
    }
    if shared.shutdown.is_cancelled() {
        return Err(Box::new(unavailable("shutting down")));
    }
    let address = client_address(&shared.config.trusted_proxies, peer, headers);
    match shared.connections.admit(address) {
        Ok(permit) => Ok(permit),
        Err(Refused::ProcessFull) => {
            shared.metrics.refused(Limit::Connections);
            Err(Box::new(unavailable("connection limit reached")))
        }
        Err(Refused::AddressFull) => {
            shared.metrics.refused(Limit::ConnectionsPerAddress);
            let message = format!(
                "at most {} connections per client address",
                shared.config.max_connections_per_address
            );
            Err(Box::new(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, "5")],
                    Json(json!({"error": {"code": "too_many_connections", "message": message}})),
                )
                    .into_response(),
            ))
        }
    }
}

/// A connection's read buffer. Clients send small frames (a subscribe is ~100 B; one with a
/// token or an `authenticate` under 1 KiB); a larger frame grows the buffer as needed. Every
/// connection holds this much from its first read (the default, 128 KiB, or the 4 KiB used
/// before, would be most of an idle connection's memory).
const READ_BUFFER_BYTES: usize = 512;

/// Frames fed in one batch are gathered up to this many bytes before a socket write (then one
/// flush ends the batch): a burst costs one write syscall per 8 KiB, not one per frame. A single
/// frame is written at its flush, so nothing waits for the buffer to fill.
const WRITE_COALESCE_BYTES: usize = 8 * 1024;

async fn upgrade(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let permit = match admit_connection(&shared, peer, &headers) {
        Ok(permit) => permit,
        Err(refusal) => return *refusal,
    };
    let limit = shared.config.max_message_bytes;
    let task_shared = shared.clone();
    let token = shared.tracker.token();
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_COALESCE_BYTES)
        .on_failed_upgrade(move |err| {
            tracing::debug!(%err, "websocket upgrade failed");
        })
        .on_upgrade(move |socket| {
            // The connection runs in a task of its own, started here: axum's upgrade task (which
            // keeps the handshake's state and the socket it built for as long as its callback's
            // future runs) then ends at once. The task is the connection's future itself, not
            // one awaiting it (that would hold it twice: as captured and as awaited); the permit
            // and the tracker token ride along and are dropped when it ends (heaptrack: the task
            // went from ~3.4 to under 2 KiB per idle connection).
            tokio::spawn(connection::serve(socket, task_shared, (permit, token)));
            std::future::ready(())
        })
}

/// Binds the listener with `send_buffer` as its sockets' kernel send buffer: accepted sockets
/// inherit it (Linux), so every client connection gets it without a call per connection.
fn bind(addr: SocketAddr, send_buffer: usize) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    if send_buffer > 0 {
        socket.set_send_buffer_size(u32::try_from(send_buffer).unwrap_or(u32::MAX))?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

pub(crate) fn unavailable(message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": {"code": "unavailable", "message": message}})),
    )
        .into_response()
}
