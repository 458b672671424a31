//! Shared assertions for the end-to-end tests.

use std::time::Duration;

use courier_core::{Event, protocol::ServerFrame};
use courier_tests::{ClientError, WsClient};

/// One received event frame.
#[derive(Debug, Clone)]
pub struct Got {
    pub channel: String,
    pub seq: u64,
    pub event: Event,
}

/// Reads until `n` event frames arrived (other frames are skipped); panics after `timeout`.
pub async fn collect_events(ws: &mut WsClient, n: usize, timeout: Duration) -> Vec<Got> {
    let mut got = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + timeout;
    while got.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.next_frame_within(left).await {
            Ok(ServerFrame::Event { channel, seq, event, .. }) => {
                got.push(Got { channel, seq, event })
            }
            Ok(_) => {}
            Err(ClientError::Timeout) => {
                panic!("only {} of {n} events arrived within {timeout:?}", got.len())
            }
            Err(err) => panic!("subscriber failed after {} of {n} events: {err}", got.len()),
        }
    }
    got
}

/// Asserts that no event frame arrives within `window`.
pub async fn assert_no_event(ws: &mut WsClient, window: Duration) {
    let deadline = tokio::time::Instant::now() + window;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.next_frame_within(left).await {
            Err(ClientError::Timeout) => return,
            Ok(ServerFrame::Event { seq, event, .. }) => {
                panic!("unexpected event #{seq}: {}", event.event_type)
            }
            Ok(_) => continue,
            Err(err) => panic!("subscriber failed: {err}"),
        }
    }
}

/// Asserts sequences strictly increase and event ids are unique.
pub fn assert_in_order_without_duplicates(events: &[Got]) {
    for pair in events.windows(2) {
        assert!(
            pair[0].seq < pair[1].seq,
            "out of order or duplicate: #{} then #{}",
            pair[0].seq,
            pair[1].seq
        );
    }
    let mut ids: Vec<_> = events.iter().map(|g| g.event.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "duplicate event ids");
}
