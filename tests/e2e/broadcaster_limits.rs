//! The broadcaster's abuse limits and fail-closed rules (docs/security.md, "Broadcaster
//! limits"): undeclared collections, no collections file, connections per client address,
//! channels per process, token expiry at `exp` and `authenticate`, and `since` replays that
//! stream, with caps on how many run at once.

use std::time::{Duration, Instant};

use courier_broadcaster::BroadcasterConfig;
use courier_core::{
    auth::{Claims, JwtKeys, Secret},
    protocol::{ClientFrame, ServerFrame, unsubscribe_reason},
};
use courier_tests::{
    ClientError, NatsServer, RunningBroadcaster, Stack, TEST_JWT_SECRET, WsClient,
    chaos::publish_event, process, wait_for, wait_until, workspace_root,
};
use futures::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

fn refused_with(result: Result<(u64, Option<bool>), ClientError>) -> String {
    match result {
        Err(ClientError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The shipped collections' broadcaster (rules from `collections.yaml`, the tests' key).
fn declared(nats: &NatsServer) -> BroadcasterConfig {
    Stack::broadcaster_config(nats)
}

fn keys() -> JwtKeys {
    JwtKeys::hs256(TEST_JWT_SECRET.as_bytes(), Duration::from_secs(900))
}

/// A token for `user` that expires `secs` seconds from now.
fn token_for(user: &str, secs: u64) -> (String, Claims) {
    let keys = keys();
    let (_, claims) = keys.issue(user, user).expect("the test keys sign");
    let claims = Claims { exp: claims.iat + secs, ..claims };
    (keys.sign(&claims).expect("sign"), claims)
}

/// Runs the broadcaster binary with `envs` and waits for it to exit by itself: its status and
/// log.
async fn exits_at_start(envs: &[(&str, String)]) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("broadcaster.log");
    let mut all: Vec<(String, String)> =
        envs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    all.push(("COURIER_BROADCASTER_LISTEN".into(), "127.0.0.1:0".into()));
    let program = process::courier_binary("courier-broadcaster");
    let mut child = process::spawn(&program, &[], &all, &log);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the broadcaster exits within 20 s")
        .expect("wait");
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broadcaster_fails_closed_without_rules_and_on_undeclared_collections() {
    let nats = NatsServer::start().await;
    // No collections file and no --public-channels: it refuses to start, saying why.
    let (status, log) = exits_at_start(&[("COURIER_NATS_URL", nats.url())]).await;
    assert!(!status.success(), "{status:?}");
    assert!(log.contains("COURIER_PUBLIC_CHANNELS"), "{log}");
    let shipped = workspace_root().join("collections.yaml").display().to_string();
    let (status, log) = exits_at_start(&[
        ("COURIER_NATS_URL", nats.url()),
        ("COURIER_COLLECTIONS_FILE", shipped),
        ("COURIER_PUBLIC_CHANNELS", "true".into()),
    ])
    .await;
    assert!(!status.success(), "both at once are refused too: {status:?}");
    assert!(log.contains("exclude each other"), "{log}");

    // With the file, a collection it does not declare is refused; the connection stays usable.
    let broadcaster = RunningBroadcaster::start(declared(&nats)).await;
    let mut ws = WsClient::connect(&broadcaster.ws_url()).await.unwrap();
    for undeclared in ["secrets", "secrets:doc1", "memos"] {
        assert_eq!(refused_with(ws.subscribe(undeclared, None, None).await), "unknown_collection");
    }
    ws.subscribe("products", None, None).await.expect("a declared public collection");
    ws.subscribe("pets:p1", None, None).await.expect("a declared collection's document");
    broadcaster.stop().await;

    // --public-channels (what `for_local` sets): any collection, as before.
    let open = RunningBroadcaster::start(BroadcasterConfig::for_local(&nats.url())).await;
    let mut ws = WsClient::connect(&open.ws_url()).await.unwrap();
    ws.subscribe("secrets", None, None).await.expect("public channels: everything is open");
    assert_eq!(
        refused_with(ws.subscribe("chat:r1", None, None).await),
        "unauthorized",
        "chat rooms still need a token"
    );
    open.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_client_address_are_capped_with_429() {
    let nats = NatsServer::start().await;
    let mut config = declared(&nats);
    config.max_connections_per_address = 3;
    let broadcaster = RunningBroadcaster::start(config).await;
    let url = broadcaster.ws_url();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(WsClient::connect(&url).await.expect("within the per-address cap"));
    }
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            assert_eq!(response.headers()["retry-after"], "5");
            let body: serde_json::Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
        }
        other => panic!("expected 429 for a fourth connection, got {other:?}"),
    }
    // The three still work, and a closed one frees its slot.
    held[0].send(&ClientFrame::Ping {}).await.unwrap();
    assert_eq!(held[0].next_frame_within(Duration::from_secs(5)).await.unwrap(), ServerFrame::Pong);
    held.pop().unwrap().close().await;
    let again = wait_for("a freed slot to admit a connection", Duration::from_secs(10), || {
        let url = url.clone();
        async move { WsClient::connect(&url).await.map_err(|e| e.to_string()) }
    })
    .await;
    drop((again, held));
    broadcaster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_channel_limit_a_subscribe_is_refused_and_the_connection_stays_usable() {
    let nats = NatsServer::start().await;
    let mut config = declared(&nats);
    config.max_channels = 2;
    let broadcaster = RunningBroadcaster::start(config).await;
    let mut ws = WsClient::connect(&broadcaster.ws_url()).await.unwrap();
    let mut other = WsClient::connect(&broadcaster.ws_url()).await.unwrap();
    ws.subscribe("products:a", None, None).await.unwrap();
    other.subscribe("products:b", None, None).await.unwrap();
    assert_eq!(refused_with(ws.subscribe("products:c", None, None).await), "too_many_channels");
    ws.subscribe("products:b", None, None).await.expect("an existing channel is joined");
    other.send(&ClientFrame::Unsubscribe { channel: "products:b".into() }).await.unwrap();
    ws.send(&ClientFrame::Unsubscribe { channel: "products:a".into() }).await.unwrap();
    // A channel nobody listens to any more makes room.
    let ws = tokio::sync::Mutex::new(ws);
    wait_until("products:a to be left", Duration::from_secs(10), || async {
        ws.lock().await.subscribe("products:c", None, None).await.is_ok()
    })
    .await;
    broadcaster.stop().await;
}

/// Reads frames until `unsubscribed {channel, reason}` (the error frame before it is checked
/// too); how long that took.
async fn until_unsubscribed(ws: &mut WsClient, channel: &str, reason: &str) -> Duration {
    let started = Instant::now();
    loop {
        match ws.next_frame_within(Duration::from_secs(30)).await.expect("a frame") {
            ServerFrame::Unsubscribed { channel: c, reason: r } if c == channel => {
                assert_eq!(r.as_deref(), Some(reason));
                return started.elapsed();
            }
            ServerFrame::Error { channel: Some(c), code, .. } if c == channel => {
                assert!(code == "unauthorized" || code == "replay_failed", "{code}")
            }
            _ => {}
        }
    }
}

async fn status(ws: &mut WsClient) -> Vec<String> {
    ws.send(&ClientFrame::GetStatus {}).await.unwrap();
    loop {
        if let ServerFrame::Status(status) =
            ws.next_frame_within(Duration::from_secs(5)).await.unwrap()
        {
            return status.subscriptions;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_subscription_ends_at_exp_not_at_the_next_ping_unless_renewed() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("collections.yaml");
    std::fs::write(
        &file,
        "collections:\n  - {name: secrets, schema: {type: object}, access: {read: authenticated}}\n",
    )
    .unwrap();
    let mut config = declared(&nats);
    config.collections_file = Some(file);
    config.jwt.secret = Some(Secret(TEST_JWT_SECRET.to_owned()));
    config.ping_interval = Duration::from_secs(60); // the old check ran on this tick
    let broadcaster = RunningBroadcaster::start(config).await;
    let mut ws = WsClient::connect(&broadcaster.ws_url()).await.unwrap();

    let (short, claims) = token_for("u1", 2);
    ws.subscribe("secrets", None, Some(short)).await.unwrap();
    let ended = until_unsubscribed(&mut ws, "secrets", unsubscribe_reason::TOKEN_EXPIRED).await;
    let at = std::time::UNIX_EPOCH + Duration::from_secs(claims.exp);
    let late = std::time::SystemTime::now().duration_since(at).unwrap_or_default();
    assert!(
        late < Duration::from_secs(1),
        "ended {late:?} after exp ({ended:?} after subscribing)"
    );

    // `authenticate` with a fresh token of the same user renews; another user's renews nothing.
    let (short, claims) = token_for("u1", 2);
    ws.subscribe("secrets", None, Some(short)).await.unwrap();
    ws.subscribe("secrets:s1", None, Some(token_for("u1", 2).0)).await.unwrap();
    ws.send(&ClientFrame::Authenticate { token: token_for("u2", 600).0 }).await.unwrap();
    match ws.next_frame_within(Duration::from_secs(5)).await.unwrap() {
        ServerFrame::Authenticated { channels, .. } => assert!(channels.is_empty(), "{channels:?}"),
        other => panic!("expected authenticated, got {other:?}"),
    }
    let (fresh, fresh_claims) = token_for("u1", 600);
    ws.send(&ClientFrame::Authenticate { token: fresh }).await.unwrap();
    match ws.next_frame_within(Duration::from_secs(5)).await.unwrap() {
        ServerFrame::Authenticated { exp, channels } => {
            assert_eq!(
                (exp, channels),
                (fresh_claims.exp, vec!["secrets".into(), "secrets:s1".into()])
            );
        }
        other => panic!("expected authenticated, got {other:?}"),
    }
    let forged =
        JwtKeys::hs256(b"an attacker's own secret, 32+ bytes long", Duration::from_secs(9))
            .sign(&fresh_claims)
            .unwrap();
    ws.send(&ClientFrame::Authenticate { token: forged }).await.unwrap();
    match ws.next_frame_within(Duration::from_secs(5)).await.unwrap() {
        ServerFrame::Error { code, .. } => assert_eq!(code, "unauthorized"),
        other => panic!("expected unauthorized, got {other:?}"),
    }
    // Past the old tokens' exp, both subscriptions are still there.
    let old_exp = std::time::UNIX_EPOCH + Duration::from_secs(claims.exp + 1);
    let wait = old_exp.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    match ws.next_frame_within(wait + Duration::from_millis(500)).await {
        Err(ClientError::Timeout) => {}
        other => panic!("nothing should end the renewed subscriptions: {other:?}"),
    }
    assert_eq!(status(&mut ws).await, ["secrets", "secrets:s1"]);
    broadcaster.stop().await;
}

/// Publishes `n` events of about `size` bytes on `products:<doc>`; their sequences.
async fn publish_many(
    js: &async_nats::jetstream::Context,
    doc: &str,
    n: usize,
    size: usize,
) -> Vec<u64> {
    let filler = "x".repeat(size);
    let mut seqs = Vec::with_capacity(n);
    for i in 0..n {
        seqs.push(publish_event(js, "products", doc, json!({"i": i, "filler": filler})).await);
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_replays_stream_without_gap_or_duplicate_and_are_capped_per_connection() {
    let nats = NatsServer::start().await;
    let mut config = declared(&nats);
    config.max_replays_per_connection = 1;
    let broadcaster = RunningBroadcaster::start(config).await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let history = publish_many(&js, "big", 2_000, 50).await;
    let other = publish_many(&js, "small", 3, 10).await;

    let mut ws = WsClient::connect(&broadcaster.ws_url()).await.unwrap();
    ws.subscribe("products:big", Some(0), None).await.expect("the replay starts");
    // Sent at once, both are read while the replay is being written: a buffered replay would
    // answer them only after its last event.
    ws.send(&ClientFrame::Subscribe {
        channel: "products:small".into(),
        since: Some(0),
        token: None,
        filter: None,
    })
    .await
    .unwrap();
    ws.send(&ClientFrame::Ping {}).await.unwrap();
    // Events published during the replay come after it, once each.
    let live = publish_many(&js, "big", 5, 50).await;
    let mut big = Vec::new();
    let (mut refused_at, mut pong_at) = (None, None);
    while big.len() < history.len() + live.len() {
        match ws.next_frame_within(Duration::from_secs(30)).await.expect("a frame") {
            ServerFrame::Event { channel, seq, .. } if channel == "products:big" => big.push(seq),
            ServerFrame::Error { code, channel, .. } => {
                assert_eq!(
                    (code.as_str(), channel.as_deref()),
                    ("too_many_replays", Some("products:small"))
                );
                refused_at = Some(big.len());
            }
            ServerFrame::Pong => pong_at = Some(big.len()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(big, [history.clone(), live].concat(), "no gap, no duplicate, in order");
    let refused_at = refused_at.expect("the second replay was refused");
    let pong_at = pong_at.expect("the ping was answered");
    assert!(
        refused_at < history.len() && pong_at < history.len(),
        "answered mid-replay: {refused_at}, {pong_at}"
    );
    // The connection stays usable: once the replay is done, the refused one is accepted.
    assert_eq!(ws.subscribe("products:small", Some(0), None).await.unwrap(), (0, Some(true)));
    let mut small = Vec::new();
    while small.len() < other.len() {
        if let ServerFrame::Event { seq, .. } =
            ws.next_frame_within(Duration::from_secs(10)).await.unwrap()
        {
            small.push(seq);
        }
    }
    assert_eq!(small, other);
    broadcaster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_waits_for_a_client_that_does_not_read_and_replays_are_capped_per_process() {
    let nats = NatsServer::start().await;
    let mut config = declared(&nats);
    config.max_replays = 1;
    config.send_timeout = Duration::from_secs(60);
    config.send_buffer_bytes = 64 * 1024;
    let broadcaster = RunningBroadcaster::start(config).await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    // ~16 MB of history: far more than the socket buffers between the two sides hold.
    publish_many(&js, "big", 2_000, 8_000).await;

    // A client that subscribes with since and then reads nothing: its replay stalls on the full
    // socket (backpressure) and keeps the process's only replay slot.
    let (mut stalled, _) = tokio_tungstenite::connect_async(broadcaster.ws_url()).await.unwrap();
    use futures::SinkExt;
    let subscribe = json!({"type": "subscribe", "channel": "products:big", "since": 0});
    stalled.send(Message::text(subscribe.to_string())).await.unwrap();
    let mut got = 0;
    while got < 2 {
        // connection_established, subscribed
        match tokio::time::timeout(Duration::from_secs(10), stalled.next()).await {
            Ok(Some(Ok(message))) if message.is_text() => got += 1,
            Ok(Some(Ok(_))) => {}
            other => panic!("the stalled client's hello and subscribed: {other:?}"),
        }
    }

    let mut ws = WsClient::connect(&broadcaster.ws_url()).await.unwrap();
    assert_eq!(refused_with(ws.subscribe("products:big", Some(0), None).await), "too_many_replays");
    ws.subscribe("products:big", None, None).await.expect("a live subscribe needs no slot");
    ws.send(&ClientFrame::Ping {}).await.unwrap();
    assert_eq!(ws.next_frame_within(Duration::from_secs(5)).await.unwrap(), ServerFrame::Pong);
    let refusals =
        courier_tests::chaos::Metrics::scrape(&format!("http://{}/metrics", broadcaster.addr))
            .await
            .sum("courier_ws_limit_refusals_total", r#"reason="replays""#);
    assert_eq!(refusals, 1.0);

    // The stalled client goes away: its slot frees and the replay is admitted.
    drop(stalled);
    let ws = tokio::sync::Mutex::new(ws);
    wait_until("the freed replay slot", Duration::from_secs(20), || async {
        ws.lock().await.subscribe("products:big", Some(1), None).await.is_ok()
    })
    .await;
    broadcaster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn courier_tail_waits_for_a_replay_slot_instead_of_failing() {
    let nats = NatsServer::start().await;
    let mut config = declared(&nats);
    config.max_replays_per_connection = 1;
    let broadcaster = RunningBroadcaster::start(config).await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let a = publish_many(&js, "a", 1_000, 50).await;
    let b = publish_many(&js, "b", 10, 50).await;
    let mut tail = courier_cli::client::ResumingSubscriber::new(
        vec![broadcaster.ws_url()],
        vec!["products:a".into(), "products:b".into()],
        Some(0),
        None,
    );
    let mut got: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    let mut notices = Vec::new();
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        while got.values().map(Vec::len).sum::<usize>() < a.len() + b.len() {
            let event = tail.next_event(|n| notices.push(format!("{n:?}"))).await;
            got.entry(event.channel).or_default().push(event.seq);
        }
    })
    .await;
    assert!(all.is_ok(), "not every event within 60 s: {notices:?}");
    assert_eq!((&got["products:a"], &got["products:b"]), (&a, &b));
    assert_eq!(tail.connects(), 1, "one connection, no failure: {notices:?}");
    broadcaster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_replay_holds_a_few_pages_not_the_history() {
    let nats = NatsServer::start().await;
    let broadcaster = courier_tests::chaos::broadcaster_process(
        &nats.url(),
        &[
            ("COURIER_WS_SEND_TIMEOUT_MS", "60s".to_owned()),
            ("COURIER_WS_SEND_BUFFER_BYTES", (64 * 1024).to_string()),
        ],
    )
    .await;
    let pid = broadcaster.child.id().expect("running").to_string();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    // 2,000 events of 16 KB: 32 MB of history on one channel.
    let history = publish_many(&js, "big", 2_000, 16_000).await;
    // Warm up (a small replay read to its end), then the baseline.
    let mut warm = WsClient::connect(&broadcaster.ws_url()).await.unwrap();
    warm.subscribe("products:big", Some(history[history.len() - 5]), None).await.unwrap();
    for _ in 0..4 {
        warm.next_frame_within(Duration::from_secs(10)).await.unwrap();
    }
    let baseline = courier_cli::probe::rss_bytes(&pid).expect("the broadcaster's RSS");

    // Two clients replay the whole history and then read nothing.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let (mut socket, _) = tokio_tungstenite::connect_async(broadcaster.ws_url()).await.unwrap();
        use futures::SinkExt;
        let subscribe = json!({"type": "subscribe", "channel": "products:big", "since": 0});
        socket.send(Message::text(subscribe.to_string())).await.unwrap();
        // A buffered replay holds the whole history before it sends `subscribed`.
        loop {
            let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
                .await
                .expect("subscribed within 20 s")
                .expect("open")
                .expect("a message");
            if let Message::Text(text) = message
                && text.contains(r#""type":"subscribed""#)
            {
                break;
            }
        }
        stalled.push(socket);
    }
    // The peak over the next 2 s, while the readers fill their queues and the writes stall.
    let mut peak = 0;
    for _ in 0..20 {
        peak = peak.max(courier_cli::probe::rss_bytes(&pid).expect("the broadcaster's RSS"));
        tokio::time::sleep(Duration::from_millis(100)).await; // sampling, not synchronisation
    }
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "2 stalled since-replays of 32 MB each: broadcaster RSS {} MiB → peak {} MiB (+{:.1} MiB)",
        baseline / (1 << 20),
        peak / (1 << 20),
        growth as f64 / (1 << 20) as f64
    );
    assert!(growth < 16 << 20, "a buffered replay would hold 64 MB; +{growth} bytes");
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_compat_chat_socket_is_closed_with_4001_when_its_token_expires() {
    let stack = Stack::start().await;
    let mut config = Stack::broadcaster_config(&stack.nats);
    config.seed_compat = true;
    let compat = RunningBroadcaster::start(config).await;
    let ana = tokio::time::timeout(Duration::from_secs(30), stack.token("ana"))
        .await
        .expect("signed in within 30 s");
    let room: serde_json::Value = stack
        .http
        .post(format!("{}/api/v1/chats", stack.api.url()))
        .bearer_auth(&ana)
        .json(&json!({"name": "expiring room", "members": []}))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let room_id = room["id"].as_str().unwrap_or_else(|| panic!("a room: {room}")).to_owned();
    // Ana's own token, re-signed to expire in 2 s.
    let claims = keys().verify(&ana).expect("the api's token verifies");
    let exp = claims.iat.max(courier_broadcaster::access::unix_now()) + 2;
    let short = keys().sign(&Claims { exp, ..claims }).unwrap();
    let url = format!("ws://{}/ws/chats/{room_id}?token={short}", compat.addr);
    let (mut socket, _) =
        tokio::time::timeout(Duration::from_secs(20), tokio_tungstenite::connect_async(&url))
            .await
            .expect("the upgrade is answered within 20 s")
            .expect("a member joins");
    let close = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("closed within 30 s");
    let late = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH + Duration::from_secs(exp))
        .unwrap_or_default();
    assert_eq!(close.map(|f| u16::from(f.code)), Some(4001));
    assert!(late < Duration::from_secs(1), "closed {late:?} after exp");
    compat.stop().await;
}

/// A replay's pages stop at `PAGE_BYTES`; an event larger than a whole page is still replayed,
/// in order, between its neighbours (it is fetched alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_passes_an_event_larger_than_a_page() {
    let nats = NatsServer::start().await;
    let broadcaster = RunningBroadcaster::start(declared(&nats)).await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let page = courier_broadcaster::replay::PAGE_BYTES;
    let mut history = publish_many(&js, "mixed", 70, page / 60).await;
    history.extend(publish_many(&js, "mixed", 1, page + 64 * 1024).await);
    history.extend(publish_many(&js, "mixed", 3, 100).await);

    let mut ws = WsClient::connect(&broadcaster.ws_url()).await.unwrap();
    ws.subscribe("products:mixed", Some(0), None).await.expect("the replay starts");
    let mut seqs = Vec::new();
    while seqs.len() < history.len() {
        match ws.next_frame_within(Duration::from_secs(10)).await.expect("the next event") {
            ServerFrame::Event { seq, .. } => seqs.push(seq),
            ServerFrame::Error { message, .. } => panic!("the replay failed: {message}"),
            _ => {}
        }
    }
    assert_eq!(seqs, history, "every event once, in order");
    broadcaster.stop().await;
}
