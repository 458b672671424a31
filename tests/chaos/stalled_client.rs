//! Chaos 5: one stalled client (subscribed, never reads) among 200 on one channel. The other
//! 199 keep their delivery latency (p99 within 2× of the same run without the stalled client)
//! and lose nothing; the stalled one is cut off as a slow consumer. Runs alone
//! (`whole_machine`), after a warm-up, at ≈20,000 deliveries/s (100 events/s × 199 readers).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use courier_core::protocol::ServerFrame;
use courier_tests::{
    ClientError, NatsServer, WsClient,
    chaos::{Metrics, broadcaster_process, publish_event, whole_machine},
    init_test_logging, wait_until,
};
use tokio_util::sync::CancellationToken;

const READERS: usize = 199;
const EVENTS_PER_SEC: u64 = 100;
const PAYLOAD_BYTES: usize = 1024;
const WARMUP: Duration = Duration::from_secs(1);
const PHASE: Duration = Duration::from_secs(3);
/// Latencies under this are noise on a shared 2-core machine; the bound is 2× the larger of it
/// and the measured baseline. A stalled client holding up delivery would add its send timeout
/// (1 s here) to the others' latency, far above either.
const P99_FLOOR_MS: f64 = 10.0;
const SEND_TIMEOUT_MS: u64 = 1_000;

const WARMING: u64 = 0;
const BASELINE: u64 = 1;
const STALLED: u64 = 2;

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_micros() as u64
}

/// Reads events until `done`, recording (phase, latency µs) per event.
async fn read(
    mut ws: WsClient,
    received: Arc<AtomicU64>,
    done: CancellationToken,
) -> Result<Vec<(u64, u64)>, ClientError> {
    let mut samples = Vec::new();
    loop {
        let frame = tokio::select! {
            _ = done.cancelled() => return Ok(samples),
            frame = ws.next_frame() => frame?,
        };
        if let ServerFrame::Event { event, .. } = frame {
            let latency =
                now_us().saturating_sub(event.data["sent_us"].as_u64().unwrap_or(u64::MAX));
            samples.push((event.data["phase"].as_u64().unwrap_or(u64::MAX), latency));
            received.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Publishes at `EVENTS_PER_SEC` in `phase` until `until` says stop; returns how many.
async fn publish_phase(
    js: &async_nats::jetstream::Context,
    phase: u64,
    mut until: impl AsyncFnMut(Duration) -> bool,
) -> u64 {
    let pad = "x".repeat(PAYLOAD_BYTES);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / EVENTS_PER_SEC));
    let started = Instant::now();
    let mut published = 0;
    while !until(started.elapsed()).await {
        tick.tick().await;
        let data = serde_json::json!({"phase": phase, "sent_us": now_us(), "pad": pad});
        publish_event(js, "products", &format!("p{published}"), data).await;
        published += 1;
    }
    published
}

fn p99_ms(samples: &[(u64, u64)], phase: u64) -> (f64, usize) {
    let mut latencies: Vec<u64> = samples.iter().filter(|s| s.0 == phase).map(|s| s.1).collect();
    latencies.sort_unstable();
    let at = ((latencies.len() as f64) * 0.99).ceil() as usize;
    (latencies[at.saturating_sub(1).min(latencies.len() - 1)] as f64 / 1000.0, latencies.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_cut_off_without_slowing_199_others() {
    let _machine = whole_machine().await;
    init_test_logging();
    let nats = NatsServer::start().await;
    let broadcaster = broadcaster_process(
        &nats.url(),
        &[("COURIER_WS_SEND_TIMEOUT_MS", SEND_TIMEOUT_MS.to_string())],
    )
    .await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    let metrics_url = broadcaster.http_url("/metrics");

    let (received, done) = (Arc::new(AtomicU64::new(0)), CancellationToken::new());
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let mut ws = WsClient::connect(&broadcaster.ws_url()).await.expect("reader connects");
        ws.subscribe("products", None, None).await.expect("reader subscribes");
        readers.push(tokio::spawn(read(ws, received.clone(), done.clone())));
    }

    let mut published = publish_phase(&js, WARMING, async |t| t >= WARMUP).await;
    published += publish_phase(&js, BASELINE, async |t| t >= PHASE).await;

    // The stalled client: a tiny receive buffer, subscribed, and then never reads again.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream =
        socket.connect(([127, 0, 0, 1], broadcaster.port).into()).await.expect("tcp connect");
    let mut stalled = WsClient::connect_over(stream, &broadcaster.ws_url())
        .await
        .expect("stalled client connects");
    stalled.subscribe("products", None, None).await.expect("stalled client subscribes");
    let stalled_since = Instant::now();
    let mut cut_off_after = None;
    published += publish_phase(&js, STALLED, async |t| {
        if cut_off_after.is_none()
            && Metrics::scrape(&metrics_url)
                .await
                .sum("courier_ws_slow_consumer_disconnects_total", "")
                >= 1.0
        {
            cut_off_after = Some(stalled_since.elapsed());
        }
        (t >= PHASE && cut_off_after.is_some()) || t >= Duration::from_secs(30)
    })
    .await;
    let cut_off_after = cut_off_after.expect("the stalled client is cut off within 30 s");

    let expected = published * READERS as u64;
    wait_until("every reader to get every event", Duration::from_secs(30), || async {
        received.load(Ordering::Relaxed) >= expected
    })
    .await;
    // The stalled connection ends after its close window; then only the readers are left.
    wait_until("the stalled connection to end", Duration::from_secs(10), || async {
        Metrics::scrape(&metrics_url).await.sum("courier_ws_connections", "") <= READERS as f64
    })
    .await;
    let metrics = Metrics::scrape(&metrics_url).await;
    done.cancel();
    let mut samples = Vec::new();
    for reader in readers {
        samples.extend(reader.await.expect("reader task").expect("no reader is disconnected"));
    }

    // The stalled client now reads what was in flight: some events, then the end.
    let mut stalled_events = 0;
    let stalled_end = loop {
        match stalled.next_frame_within(Duration::from_secs(10)).await {
            Ok(ServerFrame::Event { .. }) => stalled_events += 1,
            Ok(_) => {}
            Err(err) => break err,
        }
    };

    let (baseline, baseline_n) = p99_ms(&samples, BASELINE);
    let (with_stalled, stalled_n) = p99_ms(&samples, STALLED);
    let bound = 2.0 * baseline.max(P99_FLOOR_MS);
    eprintln!(
        "chaos 5 (stalled client): {READERS} readers + 1 stalled, {published} events × {PAYLOAD_BYTES} B at {EVENTS_PER_SEC}/s; \
         p99 {baseline:.1} ms without ({baseline_n} deliveries) vs {with_stalled:.1} ms with the stalled client \
         ({stalled_n} deliveries), bound {bound:.1} ms; stalled client cut off after {cut_off_after:?}, it had read \
         {stalled_events} events, then: {stalled_end}; slow-consumer disconnects {}, open connections {}",
        metrics.sum("courier_ws_slow_consumer_disconnects_total", ""),
        metrics.sum("courier_ws_connections", ""),
    );
    assert_eq!(samples.len() as u64, expected, "every reader got every event");
    assert!(
        with_stalled <= bound,
        "p99 with a stalled client {with_stalled:.1} ms exceeds {bound:.1} ms"
    );
    assert_eq!(
        metrics.sum("courier_ws_slow_consumer_disconnects_total", ""),
        1.0,
        "only the stalled client is cut off"
    );
    assert_eq!(metrics.sum("courier_ws_connections", ""), READERS as f64);
    assert!((stalled_events as u64) < published, "the stalled client did not get everything");
    assert!(!matches!(stalled_end, ClientError::Timeout), "the stalled client's connection ended");
}
