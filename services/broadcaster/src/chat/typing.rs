//! Typing indicators of one room (who is typing until when), and the per-connection limiter on
//! `typing` frames. Every broadcaster ends an indicator by itself once its deadline passes, so
//! none can get stuck. Pure state: time is passed in.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use courier_core::chat_live::ChatUser;

#[derive(Debug, Default)]
pub struct Typing {
    active: HashMap<String, (ChatUser, Instant)>,
}

impl Typing {
    /// `user` typed; the indicator lasts until `until`. True if it just started.
    pub fn start(&mut self, user: &ChatUser, until: Instant) -> bool {
        self.active.insert(user.id.clone(), (user.clone(), until)).is_none()
    }

    /// Ends `user_id`'s indicator; the user if there was one.
    pub fn stop(&mut self, user_id: &str) -> Option<ChatUser> {
        self.active.remove(user_id).map(|(user, _)| user)
    }

    /// Ends every indicator due at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<ChatUser> {
        let due: Vec<String> = self
            .active
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(id, _)| id.clone())
            .collect();
        due.iter().filter_map(|id| self.stop(id)).collect()
    }

    pub fn len(&self) -> usize {
        self.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }
}

/// A token bucket: `burst` frames at once, then one per `refill`.
#[derive(Debug)]
pub struct Limiter {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    last: Instant,
}

impl Limiter {
    pub fn new(burst: u32, refill: Duration, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        let per_sec = 1.0 / refill.as_secs_f64().max(0.001);
        Limiter { tokens: burst, burst, per_sec, last: now }
    }

    /// Takes a token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indicators_start_once_refresh_and_expire() {
        let (mut typing, t0) = (Typing::default(), Instant::now());
        let ana = ChatUser { id: "a".into(), username: "ana".into() };
        assert!(typing.start(&ana, t0 + Duration::from_secs(5)));
        assert!(!typing.start(&ana, t0 + Duration::from_secs(7)), "a refresh, not a start");
        assert!(typing.expire(t0 + Duration::from_secs(6)).is_empty());
        assert_eq!(typing.expire(t0 + Duration::from_secs(7)), vec![ana.clone()]);
        assert!(typing.is_empty());
        typing.start(&ana, t0);
        assert_eq!(typing.stop("a"), Some(ana));
        assert_eq!(typing.stop("a"), None);
    }

    #[test]
    fn the_limiter_allows_a_burst_then_the_refill_rate() {
        let t0 = Instant::now();
        let mut limiter = Limiter::new(3, Duration::from_millis(500), t0);
        assert_eq!((0..5).filter(|_| limiter.allow(t0)).count(), 3);
        assert!(!limiter.allow(t0 + Duration::from_millis(400)));
        assert!(limiter.allow(t0 + Duration::from_millis(500)));
        assert_eq!(
            (0..10).filter(|_| limiter.allow(t0 + Duration::from_secs(60))).count(),
            3,
            "idle time refills up to the burst only"
        );
    }
}
