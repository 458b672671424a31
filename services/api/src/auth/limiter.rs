//! Rate limits in sliding windows: login failures per username and attempts per client address,
//! and per-user action limits (chat sends, room creation). Limits are per api replica (N
//! replicas allow up to N× the attempts).

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// A sliding-window counter per key.
struct Windows<K> {
    limit: usize,
    window: Duration,
    hits: Mutex<HashMap<K, VecDeque<Instant>>>,
}

/// Keys kept before old, idle ones are swept.
const SWEEP_ABOVE: usize = 10_000;

impl<K: Hash + Eq + Clone> Windows<K> {
    fn new(limit: usize, window: Duration) -> Self {
        Windows { limit: limit.max(1), window, hits: Mutex::new(HashMap::new()) }
    }

    /// `Some(wait)` when `key` has used its allowance.
    fn blocked_for(&self, key: &K, now: Instant) -> Option<Duration> {
        let mut hits = self.hits.lock().expect("limiter lock poisoned");
        let entry = hits.get_mut(key)?;
        while entry.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            entry.pop_front();
        }
        (entry.len() >= self.limit)
            .then(|| self.window.saturating_sub(now.duration_since(entry[0])))
    }

    fn hit(&self, key: K, now: Instant) {
        let mut hits = self.hits.lock().expect("limiter lock poisoned");
        if hits.len() > SWEEP_ABOVE {
            hits.retain(|_, times| {
                times.back().is_some_and(|t| now.duration_since(*t) < self.window)
            });
        }
        hits.entry(key).or_default().push_back(now);
    }

    fn clear(&self, key: &K) {
        self.hits.lock().expect("limiter lock poisoned").remove(key);
    }
}

/// At most `limit` admitted actions per key within a sliding window.
pub struct RateLimiter {
    windows: Windows<String>,
}

impl RateLimiter {
    pub fn new(limit: usize, window: Duration) -> Self {
        RateLimiter { windows: Windows::new(limit, window) }
    }

    /// Counts one action of `key`; `Err(wait)` (nothing counted) when its allowance is used up.
    pub fn admit(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let key = key.to_owned();
        if let Some(wait) = self.windows.blocked_for(&key, now) {
            return Err(wait);
        }
        self.windows.hit(key, now);
        Ok(())
    }
}

pub struct LoginLimiter {
    failures_per_user: Windows<String>,
    attempts_per_address: Windows<IpAddr>,
}

impl LoginLimiter {
    pub fn new(
        user_failures: usize,
        user_window: Duration,
        address_attempts: usize,
        address_window: Duration,
    ) -> Self {
        LoginLimiter {
            failures_per_user: Windows::new(user_failures, user_window),
            attempts_per_address: Windows::new(address_attempts, address_window),
        }
    }

    /// Counts an attempt from `address`; `Err(wait)` when the user or the address is limited.
    pub fn admit(&self, username: &str, address: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let user_wait = self.failures_per_user.blocked_for(&username.to_owned(), now);
        let address_wait = self.attempts_per_address.blocked_for(&address, now);
        if let Some(wait) = user_wait.into_iter().chain(address_wait).max() {
            return Err(wait);
        }
        self.attempts_per_address.hit(address, now);
        Ok(())
    }

    pub fn failed(&self, username: &str) {
        self.failures_per_user.hit(username.to_owned(), Instant::now());
    }

    pub fn succeeded(&self, username: &str) {
        self.failures_per_user.clear(&username.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_per_user_and_attempts_per_address_are_limited_separately() {
        let limiter = LoginLimiter::new(2, Duration::from_secs(60), 5, Duration::from_secs(60));
        let here: IpAddr = "10.1.1.1".parse().unwrap();
        let there: IpAddr = "10.2.2.2".parse().unwrap();
        for _ in 0..2 {
            assert!(limiter.admit("ana", here).is_ok());
            limiter.failed("ana");
        }
        let wait = limiter.admit("ana", there).unwrap_err();
        assert!(wait > Duration::from_secs(55) && wait <= Duration::from_secs(60), "{wait:?}");
        assert!(limiter.admit("bob", here).is_ok(), "other users are not locked out");
        limiter.succeeded("ana");
        assert!(limiter.admit("ana", there).is_ok(), "a success clears the failures");
        // `here` has made 3 admitted attempts (ana ×2, bob; refused ones do not count): two
        // more are allowed, the sixth is refused.
        assert!(limiter.admit("carl", here).is_ok());
        assert!(limiter.admit("dora", here).is_ok());
        assert!(limiter.admit("erin", here).is_err());
    }

    #[test]
    fn actions_are_limited_per_key_and_refusals_do_not_count() {
        let limiter = RateLimiter::new(2, Duration::from_secs(10));
        assert!(limiter.admit("ana").is_ok());
        assert!(limiter.admit("ana").is_ok());
        let wait = limiter.admit("ana").unwrap_err();
        assert!(wait > Duration::from_secs(9) && wait <= Duration::from_secs(10), "{wait:?}");
        assert!(limiter.admit("ana").is_err());
        assert!(limiter.admit("bob").is_ok(), "per key");
    }

    #[test]
    fn the_window_slides() {
        let windows = Windows::new(1, Duration::from_millis(10));
        let start = Instant::now();
        windows.hit("k", start);
        assert!(windows.blocked_for(&"k", start).is_some());
        assert!(windows.blocked_for(&"k", start + Duration::from_millis(11)).is_none());
    }
}
