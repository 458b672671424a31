//! The protocol guarantees of issue 6 one by one against a running broadcaster: resume with
//! `since` and `recovered: false` after history left the stream, the slow-consumer close 4008
//! and resume, SIGTERM (1001, stop accepting, drain) with failover, and the WebSocket limits
//! (message size 1009, subscriptions per connection, idle timeout 4000 with server pings,
//! malformed frames answered with `error` on a connection that stays usable).

use std::time::Duration;

use courier_broadcaster::BroadcasterConfig;
use courier_core::protocol::{ClientFrame, ServerFrame, close_code};
use courier_tests::{
    ClientError, NatsServer, RunningBroadcaster, WsClient,
    chaos::{Metrics, broadcaster_process, publish_event, share_machine},
    init_test_logging, wait_until,
};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::support::Tail;

/// Reads `n` event frames (others skipped); returns their sequences.
async fn event_seqs(ws: &mut WsClient, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.len() < n {
        match ws.next_frame_within(Duration::from_secs(10)).await {
            Ok(ServerFrame::Event { seq, .. }) => seqs.push(seq),
            Ok(_) => {}
            Err(err) => panic!("after {} of {n} events: {err}", seqs.len()),
        }
    }
    seqs
}

/// Asserts nothing but non-event frames arrive for a moment (no duplicate after a replay).
async fn assert_quiet(ws: &mut WsClient) {
    ws.send(&ClientFrame::Ping {}).await.expect("ping");
    loop {
        match ws.next_frame_within(Duration::from_secs(5)).await.expect("pong") {
            ServerFrame::Pong => return,
            ServerFrame::Event { seq, .. } => panic!("unexpected event #{seq}"),
            _ => {}
        }
    }
}

/// Reads a server's unmasked WebSocket frames off the raw socket until it closes; returns
/// (opcode, payload) per frame.
async fn raw_server_frames(
    stream: &mut tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
) -> Vec<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .expect("the server closes the socket")
        .expect("read");
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 2 <= bytes.len() {
        let opcode = bytes[at] & 0x0f;
        let (len, header) = match bytes[at + 1] & 0x7f {
            126 => (u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize, 4),
            127 => panic!("no frame here is that large"),
            len => (len as usize, 2),
        };
        frames.push((opcode, bytes[at + header..(at + header + len).min(bytes.len())].to_vec()));
        at += header + len;
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_resumes_exactly_and_says_recovered_false_once_history_is_gone() {
    let _machine = share_machine().await;
    init_test_logging();
    let nats = NatsServer::start().await;
    let broadcaster = RunningBroadcaster::start(BroadcasterConfig::for_local(&nats.url())).await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    // Products interleaved with desks: a channel's sequences are not contiguous.
    let mut seqs = Vec::new();
    for n in 0..10 {
        seqs.push(publish_event(&js, "products", &format!("r{n}"), json!({"n": n})).await);
        publish_event(&js, "desks", &format!("d{n}"), json!({"n": n})).await;
    }

    let mut intact = WsClient::connect(&broadcaster.ws_url()).await.expect("connect");
    assert_eq!(
        intact.subscribe("products", Some(seqs[1]), None).await.expect("subscribe"),
        (seqs[1], Some(true))
    );
    assert_eq!(event_seqs(&mut intact, 8).await, seqs[2..]);

    // Retention takes everything before the sixth product event.
    let stream = js.get_stream(courier_core::subjects::EVENTS_STREAM).await.expect("EVENTS");
    let purged = stream.purge().sequence(seqs[5]).await.expect("purge").purged;

    let mut lossy = WsClient::connect(&broadcaster.ws_url()).await.expect("connect");
    assert_eq!(
        lossy.subscribe("products", Some(seqs[1]), None).await.expect("subscribe"),
        (seqs[1], Some(false))
    );
    assert_eq!(event_seqs(&mut lossy, 5).await, seqs[5..], "what is left is replayed");
    let live = publish_event(&js, "products", "r10", json!({"n": 10})).await;
    assert_eq!(event_seqs(&mut lossy, 1).await, [live], "then live events follow");
    assert_quiet(&mut lossy).await;

    // Right at the edge of what is left, nothing was lost.
    let mut edge = WsClient::connect(&broadcaster.ws_url()).await.expect("connect");
    assert_eq!(
        edge.subscribe("products", Some(seqs[5] - 1), None).await.expect("subscribe"),
        (seqs[5] - 1, Some(true))
    );
    assert_eq!(event_seqs(&mut edge, 6).await, [&seqs[5..], &[live]].concat());

    // `courier tail`'s subscriber passes the loss on.
    let mut notices = Vec::new();
    let mut tail = courier_cli::client::ResumingSubscriber::new(
        vec![broadcaster.ws_url()],
        vec!["products".into()],
        Some(seqs[1]),
        None,
    );
    let first = tokio::time::timeout(
        Duration::from_secs(10),
        tail.next_event(|n| notices.push(format!("{n:?}"))),
    )
    .await
    .expect("the tail gets an event within 10 s");
    assert_eq!(first.seq, seqs[5]);
    assert!(notices.iter().any(|n| n.contains("recovered: Some(false)")), "{notices:?}");
    eprintln!(
        "resume: since #{} on an intact stream → 8 events, recovered true; {purged} messages purged → since #{} → \
         recovered false, 5 replayed + 1 live, 0 duplicates; since #{} → recovered true",
        seqs[1],
        seqs[1],
        seqs[5] - 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_with_4008_and_resumes_without_gap() {
    let _machine = share_machine().await;
    init_test_logging();
    let nats = NatsServer::start().await;
    let mut config = BroadcasterConfig::for_local(&nats.url());
    config.send_timeout = Duration::from_secs(1);
    let broadcaster = RunningBroadcaster::start(config).await;
    let metrics_url = format!("http://{}/metrics", broadcaster.addr);
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));

    // A client with a tiny receive buffer that stops reading after subscribing.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(broadcaster.addr).await.expect("connect");
    let mut slow = WsClient::connect_over(stream, &broadcaster.ws_url()).await.expect("ws");
    slow.subscribe("products", None, None).await.expect("subscribe");

    let pad = "x".repeat(1024);
    let mut published = Vec::new();
    while Metrics::scrape(&metrics_url).await.sum("courier_ws_slow_consumer_disconnects_total", "")
        < 1.0
    {
        assert!(published.len() < 20_000, "never cut off");
        for _ in 0..20 {
            let n = published.len();
            published.push(
                publish_event(&js, "products", &format!("s{n}"), json!({"n": n, "pad": pad})).await,
            );
        }
    }
    // It reads again (within the close window): what was in flight, then close 4008.
    let mut got = Vec::new();
    let end = loop {
        match slow.next_frame_within(Duration::from_secs(10)).await {
            Ok(ServerFrame::Event { seq, .. }) => got.push(seq),
            Ok(_) => {}
            Err(err) => break err,
        }
    };
    assert!(
        matches!(&end, ClientError::Closed { code: Some(close_code::SLOW_CONSUMER), .. }),
        "expected close 4008, got {end}"
    );
    assert_eq!(got, published[..got.len()], "an in-order prefix");

    let mut resumed = WsClient::connect(&broadcaster.ws_url()).await.expect("reconnect");
    let last = *got.last().expect("some events arrived before the cut");
    assert_eq!(
        resumed.subscribe("products", Some(last), None).await.expect("resume"),
        (last, Some(true))
    );
    let rest = event_seqs(&mut resumed, published.len() - got.len()).await;
    assert_eq!([got.clone(), rest.clone()].concat(), published, "no gap, no duplicate");
    assert_quiet(&mut resumed).await;
    eprintln!(
        "slow consumer: {} events published, {} read before close 4008, {} replayed after resuming with since #{last}",
        published.len(),
        got.len(),
        rest.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_1001_stops_accepting_and_clients_resume_elsewhere() {
    let _machine = share_machine().await;
    init_test_logging();
    let nats = NatsServer::start().await;
    let nats_url = nats.url();
    let (mut first, second) =
        tokio::join!(broadcaster_process(&nats_url, &[]), broadcaster_process(&nats_url, &[]));
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    let tail = Tail::start(vec![first.ws_url(), second.ws_url()], "products").await;
    let mut watcher = WsClient::connect(&first.ws_url()).await.expect("connect");
    watcher.subscribe("products", None, None).await.expect("subscribe");

    let stop = CancellationToken::new();
    let publisher = tokio::spawn({
        let (js, stop) = (js.clone(), stop.clone());
        async move {
            let mut seqs = Vec::new();
            // Pacing (about 200 events/s), not synchronisation.
            let mut pace = tokio::time::interval(Duration::from_millis(5));
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.is_cancelled() {
                pace.tick().await;
                seqs.push(
                    publish_event(&js, "products", &format!("t{}", seqs.len()), json!({})).await,
                );
            }
            seqs
        }
    });
    tail.wait_for(50, Duration::from_secs(10)).await;

    let pid = first.child.id().expect("running") as libc::pid_t;
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let close = loop {
        match watcher.next_frame_within(Duration::from_secs(10)).await {
            Ok(_) => continue,
            Err(err) => break err,
        }
    };
    assert!(
        matches!(close, ClientError::Closed { code: Some(close_code::GOING_AWAY), .. }),
        "expected 1001, got {close}"
    );
    let draining = first.is_running();
    let refused = WsClient::connect(&first.ws_url()).await.is_err();
    assert!(refused, "no new connection once shutdown began");
    let status = first.wait_exit(Duration::from_secs(15)).await.expect("exits after draining");
    assert!(status.success(), "clean exit: {status}; log:\n{}", first.log_text());

    tail.wait_for(tail.received() + 50, Duration::from_secs(10)).await; // live again, elsewhere
    stop.cancel();
    let published = publisher.await.expect("publisher");
    let tailed = tail.finish(published.len(), Duration::from_secs(20)).await;
    let seqs: Vec<u64> = tailed.events.iter().map(|r| r.seq).collect();
    let told = tailed.notices.iter().filter(|n| n.contains("1001")).count();
    eprintln!(
        "sigterm: 1001 to clients, new connections refused (process still draining: {draining}), exit {status}; \
         tail got {}/{} events over {} connections, {} duplicate frames",
        seqs.len(),
        published.len(),
        tailed.connects,
        tailed.duplicates_dropped
    );
    assert_eq!(seqs, published, "every event once, in order, across the move");
    assert_eq!(
        (told, tailed.connects, tailed.duplicates_dropped),
        (1, 2, 0),
        "{:#?}",
        tailed.notices
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_subscription_and_idle_limits_and_malformed_frames() {
    let _machine = share_machine().await;
    init_test_logging();
    let nats = NatsServer::start().await;
    let mut config = BroadcasterConfig::for_local(&nats.url());
    config.max_message_bytes = 1024;
    config.max_subscriptions = 3;
    config.ping_interval = Duration::from_millis(200);
    let broadcaster = RunningBroadcaster::start(config).await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));

    // A silent client (reads nothing, so answers no ping) and a lively one (reads, so its
    // library answers every ping) connect together.
    let (mut silent, _) =
        tokio_tungstenite::connect_async(broadcaster.ws_url()).await.expect("connect");
    let (lively, _) =
        tokio_tungstenite::connect_async(broadcaster.ws_url()).await.expect("connect");
    let stop_lively = CancellationToken::new();
    let lively_task = tokio::spawn({
        let stop = stop_lively.clone();
        async move {
            let mut lively = lively;
            let mut pings = 0;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return (lively, pings),
                    message = lively.next() => match message {
                        Some(Ok(Message::Ping(_))) => pings += 1,
                        Some(Ok(_)) => {}
                        other => panic!("the lively client was disconnected: {other:?}"),
                    }
                }
            }
        }
    });

    // Size: one byte over the limit closes with 1009.
    let mut big = WsClient::connect(&broadcaster.ws_url()).await.expect("connect");
    big.send_raw(Message::text("x".repeat(1025))).await.expect("send");
    match big.next_frame_within(Duration::from_secs(5)).await {
        Err(ClientError::Closed { code, .. }) => {
            assert_eq!(code, Some(close_code::MESSAGE_TOO_BIG))
        }
        other => panic!("expected close 1009, got {other:?}"),
    }

    // Subscriptions: three, then refused; re-subscribing is not a new one; leaving frees one.
    let mut ws = WsClient::connect(&broadcaster.ws_url()).await.expect("connect");
    for channel in ["products", "desks", "products:a1"] {
        ws.subscribe(channel, None, None).await.expect("within the limit");
    }
    match ws.subscribe("pets", None, None).await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, "too_many_subscriptions"),
        other => panic!("expected too_many_subscriptions, got {other:?}"),
    }
    ws.subscribe("products", None, None).await.expect("re-subscribing is not a fourth");
    ws.send(&ClientFrame::Unsubscribe { channel: "desks".into() }).await.expect("send");
    ws.subscribe("pets", None, None).await.expect("a freed slot is usable");

    // Malformed frames: an error each, and the connection keeps working.
    let mut errors = 0;
    for bad in [
        Message::text("not json"),
        Message::text(r#"{"type":"launch"}"#),
        Message::text("{}"),
        Message::binary(vec![1, 2, 3]),
    ] {
        ws.send_raw(bad).await.expect("send");
        loop {
            match ws.next_frame_within(Duration::from_secs(5)).await.expect("answer") {
                ServerFrame::Error { code, .. } => {
                    assert_eq!(code, "bad_frame");
                    errors += 1;
                    break;
                }
                ServerFrame::Unsubscribed { .. } => continue,
                other => panic!("expected bad_frame, got {other:?}"),
            }
        }
    }
    let seq = publish_event(&js, "products", "a1", json!({})).await;
    let mut got = event_seqs(&mut ws, 2).await; // on `products` and `products:a1`
    got.dedup();
    assert_eq!(got, [seq], "still delivering after the errors");

    // Idle: the silent client is closed with 4000 after 3 ping intervals; the lively one stays.
    wait_until("the idle close", Duration::from_secs(10), || async {
        Metrics::scrape(&format!("http://{}/metrics", broadcaster.addr))
            .await
            .sum("courier_ws_disconnects_total", r#"reason="idle_timeout""#)
            >= 1.0
    })
    .await;
    // Read what the server sent it straight off the socket: a library would try to answer the
    // pings first and fail on the closed socket before showing the close frame.
    let frames = raw_server_frames(silent.get_mut()).await;
    let silent_pings = frames.iter().filter(|(opcode, _)| *opcode == 0x9).count();
    let silent_close = frames
        .iter()
        .find(|(opcode, _)| *opcode == 0x8)
        .and_then(|(_, payload)| Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?])));
    assert_eq!(silent_close, Some(close_code::IDLE_TIMEOUT));
    assert!(silent_pings >= 2, "the server pinged before giving up ({silent_pings})");
    stop_lively.cancel();
    let (mut lively, lively_pings) = lively_task.await.expect("lively task");
    lively
        .send(Message::text(r#"{"type":"ping"}"#))
        .await
        .expect("the lively client is still connected");
    let ponged = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match lively.next().await {
                Some(Ok(Message::Text(text))) => {
                    assert_eq!(
                        serde_json::from_str::<ServerFrame>(&text).expect("frame"),
                        ServerFrame::Pong
                    );
                    return;
                }
                Some(Ok(_)) => continue,
                other => panic!("the lively client was disconnected: {other:?}"),
            }
        }
    })
    .await;
    assert!(ponged.is_ok(), "the lively client got no pong within 10 s");
    eprintln!(
        "limits: 1025-byte message → close 1009; 4th subscription → too_many_subscriptions; {errors} malformed frames → \
         bad_frame, connection usable; silent client → {silent_pings} pings then close 4000; lively client answered \
         {lively_pings} pings and stays"
    );
}
