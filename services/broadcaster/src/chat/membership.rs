//! Room membership for `chat:<room_id>` subscribes: the `rpc.chat.membership` request to the api
//! (fail closed: no answer in time is a refusal), and the removals seen in the live feed, so a
//! removal that arrives while a check is in flight wins over the check's answer.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use courier_core::{
    chat::{MembershipReply, MembershipRequest},
    subjects::CHAT_MEMBERSHIP_RPC,
};

/// What the api said (a metric label too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Member,
    NotMember,
    /// No answer within the timeout, no responder, or an unreadable answer.
    Unavailable,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Member, Outcome::NotMember, Outcome::Unavailable];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Member => "member",
            Outcome::NotMember => "not_member",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// Largest reply read (a membership answer is a few dozen bytes).
const MAX_REPLY_BYTES: usize = 4 * 1024;

/// Asks the api whether `user_id` is a member of `room_id`, waiting at most `timeout`.
pub async fn check(
    nats: &async_nats::Client,
    room_id: &str,
    user_id: &str,
    timeout: Duration,
) -> Outcome {
    let request = MembershipRequest { room_id: room_id.to_owned(), user_id: user_id.to_owned() };
    let payload = serde_json::to_vec(&request).expect("requests serialize");
    let reply = match tokio::time::timeout(
        timeout,
        nats.request(CHAT_MEMBERSHIP_RPC, payload.into()),
    )
    .await
    {
        Ok(Ok(reply)) => reply,
        Ok(Err(err)) => {
            tracing::warn!(%err, room_id, "membership check failed");
            return Outcome::Unavailable;
        }
        Err(_) => {
            tracing::warn!(room_id, ?timeout, "membership check timed out");
            return Outcome::Unavailable;
        }
    };
    if reply.payload.len() > MAX_REPLY_BYTES {
        tracing::warn!(room_id, bytes = reply.payload.len(), "membership reply too large");
        return Outcome::Unavailable;
    }
    match serde_json::from_slice::<MembershipReply>(&reply.payload) {
        Ok(MembershipReply { member: true, .. }) => Outcome::Member,
        Ok(MembershipReply { member: false, .. }) => Outcome::NotMember,
        Err(err) => {
            tracing::warn!(%err, room_id, "unreadable membership reply");
            Outcome::Unavailable
        }
    }
}

/// How long a removal is remembered: longer than any membership check can take.
const REMEMBER: Duration = Duration::from_secs(60);

/// Removals seen in the feed, numbered in the order they were seen.
#[derive(Debug, Default)]
pub struct Removals {
    counter: u64,
    recent: HashMap<(String, String), (u64, Instant)>,
}

impl Removals {
    /// The position to pass to [`Removals::removed_since`] when a check starts.
    pub fn mark(&self) -> u64 {
        self.counter
    }

    pub fn record(&mut self, room_id: &str, user_id: &str, now: Instant) {
        self.counter += 1;
        self.recent.insert((room_id.to_owned(), user_id.to_owned()), (self.counter, now));
    }

    /// Whether `user_id` was removed from `room_id` after `mark` was taken.
    pub fn removed_since(&self, room_id: &str, user_id: &str, mark: u64) -> bool {
        self.recent
            .get(&(room_id.to_owned(), user_id.to_owned()))
            .is_some_and(|(seen, _)| *seen > mark)
    }

    pub fn prune(&mut self, now: Instant) {
        self.recent.retain(|_, (_, at)| now.saturating_duration_since(*at) < REMEMBER);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removal_after_the_mark_wins_and_one_before_does_not() {
        let (mut removals, t0) = (Removals::default(), Instant::now());
        removals.record("r", "old", t0);
        let mark = removals.mark();
        assert!(!removals.removed_since("r", "old", mark), "removed before the check started");
        removals.record("r", "u", t0);
        assert!(removals.removed_since("r", "u", mark));
        assert!(!removals.removed_since("other-room", "u", mark));
        removals.prune(t0 + REMEMBER);
        assert!(!removals.removed_since("r", "u", mark), "forgotten after a minute");
    }
}
