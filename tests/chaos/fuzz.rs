//! Chaos 6: a fuzzing client sends 10,000 malformed, hostile or oversized frames to a real
//! broadcaster process while another client is subscribed. Every frame that leaves the
//! connection usable gets exactly one answer; every frame that breaks the WebSocket framing or
//! a size limit closes that connection with its code (the fuzzer reconnects); the broadcaster
//! never panics, stays up, and the subscriber gets every event published meanwhile.

use std::{collections::BTreeMap, time::Duration};

use courier_core::protocol::ServerFrame;
use courier_tests::{
    NatsServer, WsClient,
    chaos::{Metrics, broadcaster_process, publish_event, share_machine},
    init_test_logging,
};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{
    Message,
    protocol::frame::{
        Frame,
        coding::{Data as OpData, OpCode},
    },
};
use tokio_util::sync::CancellationToken;

const FRAMES: usize = 10_000;
/// Frames sent before reading their answers (their answers fit in the socket buffers).
const BATCH: usize = 200;
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A small deterministic generator (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// 1 to `max` characters, many of them JSON punctuation or multi-byte.
    fn text(&mut self, max: u64) -> String {
        let len = 1 + self.below(max);
        const ALPHABET: &[char] = &[
            'a', 'Z', '0', '{', '}', '"', ':', ',', '[', ']', '\\', ' ', '.', '*', '>', 'é', '€',
            '🦀', '\u{0}', '\n',
        ];
        (0..len).map(|_| ALPHABET[self.below(ALPHABET.len() as u64) as usize]).collect()
    }
}

/// What the server must do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Exactly one frame back (an error or the answer), connection still open.
    Answer,
    /// The connection is closed with this code.
    Close(u16),
}

/// One fuzz frame: its kind (for the counts), the message and what must happen.
fn fuzz_frame(rng: &mut Rng, n: usize) -> (&'static str, Message, Expect) {
    let text = |kind, s: String| (kind, Message::text(s), Expect::Answer);
    // One frame in 50 ends its connection (each costs a reconnect); the rest must not.
    if rng.below(50) == 0 {
        return match n % 3 {
            0 => (
                "oversized",
                Message::text("x".repeat(MAX_MESSAGE_BYTES + 1 + rng.below(10_000) as usize)),
                Expect::Close(1009),
            ),
            1 => {
                let invalid = vec![b'{', 0xff, 0xfe, b'}'];
                (
                    "invalid_utf8",
                    Message::Frame(Frame::message(invalid, OpCode::Data(OpData::Text), true)),
                    Expect::Close(1007),
                )
            }
            _ => {
                let stray = Frame::message(b"x".to_vec(), OpCode::Data(OpData::Continue), true);
                ("stray_continuation", Message::Frame(stray), Expect::Close(1002))
            }
        };
    }
    match rng.below(15) {
        0 => text("garbage", rng.text(200)),
        1 => {
            let valid =
                format!(r#"{{"type":"subscribe","channel":"products","since":{}}}"#, rng.next());
            let cut = rng.below(valid.len() as u64) as usize;
            text("truncated_json", valid[..cut].to_owned())
        }
        2 => text(
            "unknown_type",
            format!(
                r#"{{"type":"{}"}}"#,
                ["launch", "SUBSCRIBE", "", "event", "pong"][rng.below(5) as usize]
            ),
        ),
        3 => text(
            "wrong_field_types",
            [
                r#"{"type":"subscribe","channel":123}"#,
                r#"{"type":"subscribe","channel":"products","since":"7"}"#,
                r#"{"type":"subscribe","channel":"products","since":-1}"#,
                r#"{"type":"subscribe","channel":"products","since":1.5}"#,
                r#"{"type":"subscribe","channel":"products","since":1e400}"#,
                r#"{"type":"subscribe","channel":"products","since":18446744073709551616}"#,
                r#"{"type":"unsubscribe","channel":null}"#,
                r#"{"type":["subscribe"]}"#,
                r#"{"type":"subscribe","channel":"products","token":{}}"#,
            ][rng.below(9) as usize]
                .to_owned(),
        ),
        4 => {
            let channel = match rng.below(6) {
                0 => "products.>".to_owned(),
                1 => "*".to_owned(),
                2 => String::new(),
                3 => format!("products:{}", "a".repeat(200 + rng.below(5000) as usize)),
                4 => format!("{}:x", "p".repeat(100)),
                _ => rng.text(40),
            };
            text(
                "bad_channel",
                serde_json::json!({"type": "subscribe", "channel": channel}).to_string(),
            )
        }
        5 => {
            let depth = 100 + rng.below(5_000) as usize;
            text("deep_nesting", format!("{}{}", "[".repeat(depth), "]".repeat(depth)))
        }
        6 => (
            "binary",
            Message::binary((0..rng.below(300)).map(|_| rng.next() as u8).collect::<Vec<u8>>()),
            Expect::Answer,
        ),
        7 => text("unknown_field", r#"{"type":"ping","now":1}"#.to_owned()),
        8 => text(
            "top_level_not_object",
            ["null", "42", r#""subscribe""#, "[]", "true", "{}"][rng.below(6) as usize].to_owned(),
        ),
        9 => text("long_string", format!(r#"{{"type":"{}"}}"#, "x".repeat(MAX_MESSAGE_BYTES - 64))),
        10 => text("ping", r#"{"type":"ping"}"#.to_owned()),
        11 => text("get_status", r#"{"type":"get_status"}"#.to_owned()),
        12 => {
            let since = if rng.below(2) == 0 {
                format!(r#","since":{}"#, rng.next() >> 1)
            } else {
                String::new()
            };
            text(
                "subscribe",
                format!(r#"{{"type":"subscribe","channel":"fuzz:d{}"{since}}}"#, rng.below(150)),
            )
        }
        13 => {
            // Chat frames from a client with no room: each is refused with an error.
            let n = rng.below(150);
            let frames = [
                format!(r#"{{"type":"typing","channel":"fuzz:d{n}"}}"#),
                format!(r#"{{"type":"presence","channel":"chat:r{n}"}}"#),
                r#"{"type":"subscribe","channel":"chat"}"#.to_owned(),
                r#"{"type":"subscribe","channel":"user"}"#.to_owned(),
                format!(r#"{{"type":"subscribe","channel":"chat:r{n}","token":"x"}}"#),
                r#"{"type":"typing","channel":"chat:r1","extra":true}"#.to_owned(),
            ];
            text("chat", frames[rng.below(frames.len() as u64) as usize].clone())
        }
        _ => text(
            "unsubscribe",
            format!(r#"{{"type":"unsubscribe","channel":"fuzz:d{}"}}"#, rng.below(150)),
        ),
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads frames until `answers` non-event frames arrived; counts them by type.
async fn read_answers(socket: &mut Socket, answers: usize, counts: &mut BTreeMap<String, usize>) {
    let mut got = 0;
    while got < answers {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .unwrap_or_else(|_| panic!("only {got} of {answers} answers within 10 s"))
            .expect("connection open")
            .expect("readable");
        if let Message::Text(text) = message {
            let frame: ServerFrame =
                serde_json::from_str(&text).expect("server frames are valid JSON");
            let label = match frame {
                ServerFrame::Event { .. } => continue,
                ServerFrame::Error { code, .. } => format!("error {code}"),
                other => serde_json::to_value(&other).expect("json")["type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            };
            *counts.entry(label).or_default() += 1;
            got += 1;
        }
    }
}

/// Reads until the server closes; returns the close code.
async fn read_close(socket: &mut Socket) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("closed within 10 s")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_hostile_frames_break_nothing() {
    let _machine = share_machine().await;
    init_test_logging();
    let nats = NatsServer::start().await;
    let mut broadcaster = broadcaster_process(&nats.url(), &[]).await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));

    // A well-behaved subscriber and a steady publisher for the whole run.
    let mut subscriber = WsClient::connect(&broadcaster.ws_url()).await.expect("subscriber");
    subscriber.subscribe("products", None, None).await.expect("subscribed");
    let stop = CancellationToken::new();
    let (delivered_tx, delivered_rx) = tokio::sync::oneshot::channel::<usize>();
    let reader = tokio::spawn(async move {
        // Reads all along; once told how many were published, stops at that many.
        let mut delivered = Vec::new();
        let mut expected = None;
        let mut delivered_rx = delivered_rx;
        loop {
            if expected.is_some_and(|n| delivered.len() >= n) {
                return Ok(delivered);
            }
            let frame = tokio::select! {
                n = &mut delivered_rx, if expected.is_none() => { expected = n.ok(); continue; }
                frame = subscriber.next_frame_within(Duration::from_secs(30)) => frame,
            };
            match frame {
                Ok(ServerFrame::Event { seq, .. }) => delivered.push(seq),
                Ok(_) => {}
                Err(err) => {
                    return Err(format!("subscriber lost after {} events: {err}", delivered.len()));
                }
            }
        }
    });
    let publisher = tokio::spawn({
        let (js, stop) = (js.clone(), stop.clone());
        async move {
            let mut seqs = Vec::new();
            // Pacing (about 100 events/s), not synchronisation.
            let mut pace = tokio::time::interval(Duration::from_millis(10));
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.is_cancelled() {
                pace.tick().await;
                seqs.push(
                    publish_event(
                        &js,
                        "products",
                        &format!("f{}", seqs.len()),
                        serde_json::json!({"n": seqs.len()}),
                    )
                    .await,
                );
            }
            seqs
        }
    });

    let mut rng = Rng(0x5eed_c0de_cafe_f00d);
    let (mut sent, mut sessions) = (0, 0);
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    let mut closes: BTreeMap<Option<u16>, usize> = BTreeMap::new();
    'sessions: while sent < FRAMES {
        let (mut socket, _) =
            tokio_tungstenite::connect_async(broadcaster.ws_url()).await.expect("fuzzer connects");
        sessions += 1;
        read_answers(&mut socket, 1, &mut answers).await; // connection_established
        loop {
            let mut batch = 0;
            while batch < BATCH && sent < FRAMES {
                let (kind, message, expect) = fuzz_frame(&mut rng, sent);
                *kinds.entry(kind).or_default() += 1;
                sent += 1;
                match expect {
                    Expect::Answer => {
                        socket.feed(message).await.expect("send");
                        batch += 1;
                    }
                    Expect::Close(code) => {
                        socket.send(message).await.expect("send");
                        read_answers(&mut socket, batch, &mut answers).await;
                        let got = read_close(&mut socket).await;
                        assert_eq!(got, Some(code), "{kind} closes with {code}");
                        *closes.entry(got).or_default() += 1;
                        continue 'sessions;
                    }
                }
            }
            socket.flush().await.expect("flush");
            read_answers(&mut socket, batch, &mut answers).await;
            if sent >= FRAMES {
                let _ = socket.close(None).await;
                break 'sessions;
            }
        }
    }

    stop.cancel();
    let published = publisher.await.expect("publisher");
    let _ = delivered_tx.send(published.len());
    let delivered = reader.await.expect("reader task").expect("the subscriber is served all along");
    let mut fresh =
        WsClient::connect(&broadcaster.ws_url()).await.expect("new connections still accepted");
    fresh.send(&courier_core::ClientFrame::Ping {}).await.expect("ping");
    assert_eq!(
        fresh.next_frame_within(Duration::from_secs(5)).await.expect("pong"),
        ServerFrame::Pong
    );
    let metrics = Metrics::scrape(&broadcaster.http_url("/metrics")).await;
    let running = broadcaster.is_running();
    let panics = broadcaster.log_text().matches("panicked").count();

    let answered: usize = answers.values().sum::<usize>() - sessions; // minus the greetings
    let closed: usize = closes.values().sum();
    eprintln!(
        "chaos 6 (fuzz): {sent} frames in {sessions} connections; {answered} answered, {closed} closed the connection \
         {closes:?}; answers {answers:?}; frames by kind {kinds:?}; subscriber got {}/{} events meanwhile; \
         broadcaster running: {running}, open connections {}, panics in its log: {panics}",
        delivered.len(),
        published.len(),
        metrics.sum("courier_ws_connections", ""),
    );
    assert_eq!(answered + closed, FRAMES, "every frame got its answer or its close");
    assert_eq!(
        delivered, published,
        "the subscriber got every event, in order, during the fuzzing"
    );
    assert!(running, "the broadcaster is still running");
    assert_eq!(panics, 0, "no panic in the broadcaster's log");
}
