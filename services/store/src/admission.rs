//! Write admission: whether a new write may commit, given the streams its outbox records go to.
//!
//! A write commits in MongoDB first and its records reach JetStream after (the fast path at
//! once, the relay later). EVENTS and TASKS have byte limits and refuse new messages when full
//! (`courier_core::jetstream`), so writes that kept committing would pile up in the outbox
//! without bound. Instead, once a publish to a stream is refused as full, this process refuses
//! new writes whose records go to that stream, before anything is written
//! ([`StoreError::StreamFull`](crate::StoreError::StreamFull), 503 `stream_full` with
//! `Retry-After`). It admits them again when a publish to that stream succeeds (the relay keeps
//! retrying the records already committed) or when the stream reports room again (the relay
//! probes a full stream it has nothing to retry for). Every replica learns this from its own
//! publishes, so at most the writes in flight when a stream fills slip into the outbox.
//!
//! The outbox itself is bounded too (`COURIER_OUTBOX_MAX_PENDING`): when NATS is unreachable
//! writes keep committing and their records wait, which is the point of the outbox, but only up
//! to that many. The api's relay counts the backlog (bounded count, every few seconds, NATS up or
//! not); above the bound every write that announces anything is refused
//! ([`StoreError::OutboxFull`](crate::StoreError::OutboxFull), 503 `outbox_full`) until the
//! backlog is back under 90% of it.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use courier_core::subjects::{EVENTS_STREAM, TASKS_STREAM};

use crate::outbox::OutboxRecord;

/// How long a client should wait before retrying a write refused for a full stream, in seconds.
pub const STREAM_FULL_RETRY_AFTER_SECS: u64 = 10;

/// A full stream has room again once it holds at most this share of its `max_bytes` (per mille):
/// some headroom, so writes do not flap between admitted and refused at the limit.
const ROOM_AGAIN_PER_MILLE: i64 = 950;

/// The streams this process found full, and since when.
#[derive(Debug, Default)]
pub struct StreamGate {
    full: Mutex<Vec<(&'static str, Instant)>>,
    /// The last backlog count was over the outbox bound.
    backlog_over: AtomicBool,
}

/// Why a write is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its records would go to this full stream.
    StreamFull(&'static str),
    /// The outbox holds more records than its bound.
    OutboxFull,
}

/// The stream a subject's messages are stored in (Courier's outbox writes only these two).
pub fn stream_of(subject: &str) -> Option<&'static str> {
    if subject.starts_with("events.") {
        Some(EVENTS_STREAM)
    } else if subject.starts_with("tasks.") {
        Some(TASKS_STREAM)
    } else {
        None
    }
}

/// Whether a stream holding `bytes` of at most `max_bytes` (≤ 0: unbounded) has room again.
pub fn has_room(bytes: u64, max_bytes: i64) -> bool {
    max_bytes <= 0
        || i64::try_from(bytes).is_ok_and(|bytes| {
            bytes.saturating_mul(1000) <= max_bytes.saturating_mul(ROOM_AGAIN_PER_MILLE)
        })
}

impl StreamGate {
    /// Whether a write with these outbox `records` must be refused, and why.
    pub fn refusal(&self, records: &[OutboxRecord]) -> Option<Refusal> {
        if records.is_empty() {
            return None;
        }
        if self.backlog_over.load(Ordering::Relaxed) {
            return Some(Refusal::OutboxFull);
        }
        let full = self.full.lock().expect("stream gate lock poisoned");
        records
            .iter()
            .filter_map(|record| stream_of(&record.subject))
            .find(|stream| full.iter().any(|(name, _)| name == stream))
            .map(Refusal::StreamFull)
    }

    /// The relay counted `pending` outbox records (a count bounded just above `max_pending`):
    /// over `max_pending` writes are refused, at or under 90% of it they are admitted again.
    pub fn observe_backlog(&self, pending: u64, max_pending: u64) {
        let was_over = self.backlog_over.load(Ordering::Relaxed);
        let over = if was_over {
            pending.saturating_mul(10) > max_pending.saturating_mul(9)
        } else {
            pending > max_pending
        };
        if over != was_over {
            self.backlog_over.store(over, Ordering::Relaxed);
            if over {
                tracing::warn!(pending, max_pending, "outbox over its bound: refusing new writes");
            } else {
                tracing::info!(
                    pending,
                    max_pending,
                    "outbox back under its bound: admitting writes"
                );
            }
        }
    }

    /// A publish to `stream` was refused as full.
    pub fn mark_full(&self, stream: &'static str) {
        let mut full = self.full.lock().expect("stream gate lock poisoned");
        if !full.iter().any(|(name, _)| *name == stream) {
            tracing::warn!(stream, "stream full: refusing new writes headed for it");
            full.push((stream, Instant::now()));
        }
    }

    /// A publish to `stream` succeeded, or it has room again.
    pub fn clear(&self, stream: &str) {
        let mut full = self.full.lock().expect("stream gate lock poisoned");
        if let Some(index) = full.iter().position(|(name, _)| *name == stream) {
            let (_, since) = full.swap_remove(index);
            tracing::info!(stream, full_for = ?since.elapsed(), "stream has room again: admitting writes");
        }
    }

    /// The streams currently considered full.
    pub fn full_streams(&self) -> Vec<&'static str> {
        self.full.lock().expect("stream gate lock poisoned").iter().map(|(name, _)| *name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(subject: &str) -> OutboxRecord {
        OutboxRecord {
            id: "e1".into(),
            subject: subject.into(),
            payload: "{}".into(),
            doc_key: "c/1".into(),
            doc_version: 1,
            created_at: mongodb::bson::DateTime::now(),
            trace_id: String::new(),
        }
    }

    #[test]
    fn writes_headed_for_a_full_stream_are_refused_until_it_clears() {
        let gate = StreamGate::default();
        let event = record("events.pets.1.created");
        let task = record("tasks.pets.enrich");
        assert_eq!(gate.refusal(&[event.clone(), task.clone()]), None);
        gate.mark_full(TASKS_STREAM);
        gate.mark_full(TASKS_STREAM);
        assert_eq!(gate.full_streams(), [TASKS_STREAM]);
        // Only writes that enqueue a task are refused.
        assert_eq!(gate.refusal(std::slice::from_ref(&event)), None);
        assert_eq!(
            gate.refusal(&[event.clone(), task.clone()]),
            Some(Refusal::StreamFull(TASKS_STREAM))
        );
        gate.clear(TASKS_STREAM);
        assert_eq!(gate.refusal(&[event.clone(), task]), None);
        assert!(gate.full_streams().is_empty());
        // A write that announces nothing never needs a stream.
        gate.mark_full(EVENTS_STREAM);
        assert_eq!(gate.refusal(&[]), None);
        assert_eq!(gate.refusal(&[event]), Some(Refusal::StreamFull(EVENTS_STREAM)));
    }

    #[test]
    fn an_outbox_over_its_bound_refuses_writes_until_back_under_90_percent() {
        let gate = StreamGate::default();
        let event = [record("events.pets.1.created")];
        gate.observe_backlog(100, 100);
        assert_eq!(gate.refusal(&event), None);
        gate.observe_backlog(101, 100);
        assert_eq!(gate.refusal(&event), Some(Refusal::OutboxFull));
        gate.observe_backlog(91, 100);
        assert_eq!(gate.refusal(&event), Some(Refusal::OutboxFull), "hysteresis");
        gate.observe_backlog(90, 100);
        assert_eq!(gate.refusal(&event), None);
    }

    #[test]
    fn room_again_needs_headroom_below_the_limit() {
        assert!(has_room(0, 1000));
        assert!(has_room(950, 1000));
        assert!(!has_room(951, 1000));
        assert!(!has_room(1000, 1000));
        assert!(has_room(u64::MAX, -1), "unbounded streams always have room");
        assert_eq!(stream_of("events.chat.r1.message"), Some(EVENTS_STREAM));
        assert_eq!(stream_of("tasks.pets.enrich"), Some(TASKS_STREAM));
        assert_eq!(stream_of("dlq.tasks.x"), None);
    }
}
