//! WebSocket protocol v1 against a running broadcaster: frames, errors that leave the
//! connection usable, replay with `since`, and graceful shutdown as a real process.

use std::time::Duration;

use courier_core::protocol::{ClientFrame, ServerFrame, close_code};
use courier_tests::{
    ClientError, NatsServer, Stack, WsClient, process,
    services::{ServiceProcess, product},
};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::collect_events;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_ping_status_and_errors_that_keep_the_connection_usable() {
    let stack = Stack::start().await;
    let mut ws = stack.ws().await;
    assert!(!ws.connection_id.is_empty());

    ws.send(&ClientFrame::Ping {}).await.unwrap();
    assert_eq!(ws.next_frame_within(Duration::from_secs(5)).await.unwrap(), ServerFrame::Pong);

    for bad in ["not json", r#"{"type":"launch"}"#, r#"{"type":"subscribe"}"#] {
        ws.send_raw(Message::text(bad)).await.unwrap();
        match ws.next_frame_within(Duration::from_secs(5)).await.unwrap() {
            ServerFrame::Error { code, .. } => assert_eq!(code, "bad_frame", "{bad}"),
            other => panic!("expected an error frame for {bad}, got {other:?}"),
        }
    }
    match ws.subscribe("products.>", None, None).await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, "bad_channel"),
        other => panic!("wildcard channel must be refused, got {other:?}"),
    }
    ws.send(&ClientFrame::Unsubscribe { channel: "products".into() }).await.unwrap();
    assert!(
        matches!(ws.next_frame_within(Duration::from_secs(5)).await.unwrap(), ServerFrame::Error { code, .. } if code == "not_subscribed")
    );

    ws.subscribe("products", None, None).await.unwrap();
    ws.send(&ClientFrame::GetStatus {}).await.unwrap();
    match ws.next_frame_within(Duration::from_secs(5)).await.unwrap() {
        ServerFrame::Status(status) => {
            assert_eq!(status.subscriptions, ["products"]);
            assert_eq!(status.connection_id, ws.connection_id);
            assert_eq!(status.connections, 1);
        }
        other => panic!("expected status, got {other:?}"),
    }
    // Still delivering after all that.
    stack.post("products", &product(1)).await;
    assert_eq!(collect_events(&mut ws, 1, Duration::from_secs(10)).await.len(), 1);

    ws.send(&ClientFrame::Unsubscribe { channel: "products".into() }).await.unwrap();
    assert_eq!(
        ws.next_frame_within(Duration::from_secs(5)).await.unwrap(),
        ServerFrame::Unsubscribed { channel: "products".into(), reason: None }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_replays_the_history_then_continues_live_without_gap_or_duplicate() {
    let stack = Stack::start().await;
    let mut first = stack.ws().await;
    first.subscribe("products", None, None).await.unwrap();
    for n in 0..5 {
        stack.post("products", &product(n)).await;
    }
    let live = collect_events(&mut first, 5, Duration::from_secs(10)).await;

    // A second client resumes from after the second event.
    let mut resumed = stack.ws().await;
    let (seq, recovered) = resumed.subscribe("products", Some(live[1].seq), None).await.unwrap();
    assert_eq!((seq, recovered), (live[1].seq, Some(true)));
    for n in 5..8 {
        stack.post("products", &product(n)).await;
    }
    let got = collect_events(&mut resumed, 6, Duration::from_secs(10)).await;
    let expected: Vec<u64> = live[2..]
        .iter()
        .map(|g| g.seq)
        .chain(collect_events(&mut first, 3, Duration::from_secs(10)).await.iter().map(|g| g.seq))
        .collect();
    assert_eq!(got.iter().map(|g| g.seq).collect::<Vec<_>>(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_1001_and_the_process_exits_cleanly() {
    let nats = NatsServer::start().await;
    let shipped = courier_tests::workspace_root().join("collections.yaml");
    let mut broadcaster = ServiceProcess::start(
        "courier-broadcaster",
        &[
            ("COURIER_NATS_URL", nats.url()),
            ("COURIER_COLLECTIONS_FILE", shipped.display().to_string()),
        ],
    )
    .await;
    let mut ws = WsClient::connect(&broadcaster.ws_url()).await.unwrap();
    ws.subscribe("products", None, None).await.unwrap();

    let status = process::terminate(&mut broadcaster.child, Duration::from_secs(10)).await;
    match ws.next_frame_within(Duration::from_secs(5)).await {
        Err(ClientError::Closed { code, .. }) => assert_eq!(code, Some(close_code::GOING_AWAY)),
        other => panic!("expected close 1001, got {other:?}"),
    }
    let status = status
        .unwrap_or_else(|| panic!("did not exit after SIGTERM; log:\n{}", broadcaster.log_text()));
    assert!(status.success(), "exit status {status}; log:\n{}", broadcaster.log_text());
}
