//! Rate limits in sliding windows: login failures per (username, client address) and attempts
//! per client address, and per-user action limits (chat sends, room creation). Limits are per
//! api replica (N replicas allow up to N× the attempts).

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
        self.blocked_at(key, now, self.limit)
    }

    /// `Some(wait)` when `key` has `limit` hits or more in the window (`limit` ≤ the own one).
    fn blocked_at(&self, key: &K, now: Instant, limit: usize) -> Option<Duration> {
        let mut hits = self.hits.lock().expect("limiter lock poisoned");
        let entry = hits.get_mut(key)?;
        while entry.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            entry.pop_front();
        }
        let limit = limit.max(1);
        (entry.len() >= limit)
            .then(|| self.window.saturating_sub(now.duration_since(entry[entry.len() - limit])))
    }

    /// Hits of `key` within the window.
    fn count(&self, key: &K, now: Instant) -> usize {
        let hits = self.hits.lock().expect("limiter lock poisoned");
        hits.get(key).map_or(0, |times| {
            times.iter().filter(|t| now.duration_since(**t) < self.window).count()
        })
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

/// Login limits that slow a guesser without locking the owner out.
///
/// - Failures count per (username, client address): a client that keeps failing for a username
///   gets 429 for it, while the same username from any other address still signs in.
/// - Failures also count per username, from every address. Past that higher threshold the
///   username is under a spread-out attack, and each address gets one failure for it per window
///   instead of the usual allowance. A client that has not itself failed is always let through
///   to the password check, so a correct password from the owner's own client still succeeds.
/// - Attempts count per client address, whatever the username.
/// - Optionally, the n-th failure of a (username, address) pair in the window is answered only
///   after `failure_delay` × 2^(n-1), at most [`MAX_FAILURE_DELAY`].
pub struct LoginLimiter {
    failures_per_pair: Windows<(String, IpAddr)>,
    failures_per_user: Windows<String>,
    attempts_per_address: Windows<IpAddr>,
    failure_delay: Duration,
}

/// The longest a failed login's answer is held back.
pub const MAX_FAILURE_DELAY: Duration = Duration::from_secs(5);

/// The login limiter's settings.
pub struct LoginLimits {
    /// Failures per (username, client address) within the window.
    pub failures_per_pair: usize,
    /// Failures per username from all addresses within the window before each address is
    /// allowed only one.
    pub failures_per_user: usize,
    /// Attempts per client address within the window.
    pub attempts_per_address: usize,
    pub window: Duration,
    /// The first failure's delay (doubling with each further one); zero turns delays off.
    pub failure_delay: Duration,
}

impl LoginLimiter {
    pub fn new(limits: LoginLimits) -> Self {
        LoginLimiter {
            failures_per_pair: Windows::new(limits.failures_per_pair, limits.window),
            failures_per_user: Windows::new(limits.failures_per_user, limits.window),
            attempts_per_address: Windows::new(limits.attempts_per_address, limits.window),
            failure_delay: limits.failure_delay,
        }
    }

    /// Counts an attempt from `address`; `Err(wait)` when this address is limited, in general
    /// or for this username.
    pub fn admit(&self, username: &str, address: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let pair = (username.to_owned(), address);
        let under_attack = self.failures_per_user.blocked_for(&username.to_owned(), now).is_some();
        // Under attack, one failure of its own already stops an address; without one it passes.
        let pair_wait = if under_attack {
            self.failures_per_pair.blocked_at(&pair, now, 1)
        } else {
            self.failures_per_pair.blocked_for(&pair, now)
        };
        let address_wait = self.attempts_per_address.blocked_for(&address, now);
        if let Some(wait) = pair_wait.into_iter().chain(address_wait).max() {
            return Err(wait);
        }
        self.attempts_per_address.hit(address, now);
        Ok(())
    }

    /// Counts a failure of `username` from `address`; returns how long to hold the answer back.
    pub fn failed(&self, username: &str, address: IpAddr) -> Duration {
        let now = Instant::now();
        let pair = (username.to_owned(), address);
        self.failures_per_pair.hit(pair.clone(), now);
        self.failures_per_user.hit(username.to_owned(), now);
        let failures = self.failures_per_pair.count(&pair, now);
        failure_delay(self.failure_delay, failures)
    }

    /// A success clears this address's failures for `username` (not the other addresses').
    pub fn succeeded(&self, username: &str, address: IpAddr) {
        self.failures_per_pair.clear(&(username.to_owned(), address));
    }
}

/// `base` × 2^(failures-1), at most [`MAX_FAILURE_DELAY`]; zero when `base` is.
fn failure_delay(base: Duration, failures: usize) -> Duration {
    if base.is_zero() || failures == 0 {
        return Duration::ZERO;
    }
    let doublings = u32::try_from(failures - 1).unwrap_or(u32::MAX).min(16);
    base.saturating_mul(1 << doublings).min(MAX_FAILURE_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(pair: usize, user: usize, address: usize) -> LoginLimits {
        LoginLimits {
            failures_per_pair: pair,
            failures_per_user: user,
            attempts_per_address: address,
            window: Duration::from_secs(60),
            failure_delay: Duration::ZERO,
        }
    }

    #[test]
    fn a_guesser_is_limited_and_the_owner_elsewhere_is_not() {
        let limiter = LoginLimiter::new(limits(2, 100, 5));
        let guesser: IpAddr = "10.1.1.1".parse().unwrap();
        let owner: IpAddr = "10.2.2.2".parse().unwrap();
        for _ in 0..2 {
            assert!(limiter.admit("admin", guesser).is_ok());
            limiter.failed("admin", guesser);
        }
        let wait = limiter.admit("admin", guesser).unwrap_err();
        assert!(wait > Duration::from_secs(55) && wait <= Duration::from_secs(60), "{wait:?}");
        assert!(limiter.admit("admin", owner).is_ok(), "the owner's own client is not locked out");
        limiter.succeeded("admin", owner);
        assert!(limiter.admit("admin", guesser).is_err(), "the owner's success frees no guesser");
        assert!(limiter.admit("bob", guesser).is_ok(), "other users are not locked out");
        // `guesser` has made 3 admitted attempts (admin ×2, bob; refused ones do not count): two
        // more are allowed, the sixth is refused whatever the username.
        assert!(limiter.admit("carl", guesser).is_ok());
        assert!(limiter.admit("dora", guesser).is_ok());
        assert!(limiter.admit("erin", guesser).is_err());
    }

    #[test]
    fn a_success_clears_only_its_own_addresss_failures() {
        let limiter = LoginLimiter::new(limits(2, 100, 100));
        let here: IpAddr = "10.1.1.1".parse().unwrap();
        let there: IpAddr = "10.2.2.2".parse().unwrap();
        for address in [here, there] {
            limiter.failed("ana", address);
            limiter.failed("ana", address);
        }
        assert!(limiter.admit("ana", here).is_err() && limiter.admit("ana", there).is_err());
        limiter.succeeded("ana", here);
        assert!(limiter.admit("ana", here).is_ok());
        assert!(limiter.admit("ana", there).is_err());
    }

    #[test]
    fn under_a_spread_out_attack_each_address_gets_one_failure_and_a_clean_one_passes() {
        let limiter = LoginLimiter::new(limits(5, 3, 100));
        let bots: Vec<IpAddr> = (1..=3).map(|n| format!("10.0.0.{n}").parse().unwrap()).collect();
        for bot in &bots {
            assert!(limiter.admit("admin", *bot).is_ok());
            limiter.failed("admin", *bot);
        }
        // 3 failures for admin from all addresses: each bot has failed once, and that is enough.
        for bot in &bots {
            assert!(limiter.admit("admin", *bot).is_err(), "{bot}");
        }
        let owner: IpAddr = "10.9.9.9".parse().unwrap();
        assert!(limiter.admit("admin", owner).is_ok(), "a client that has not failed passes");
        let fresh_bot: IpAddr = "10.0.0.4".parse().unwrap();
        assert!(limiter.admit("admin", fresh_bot).is_ok());
        limiter.failed("admin", fresh_bot);
        assert!(limiter.admit("admin", fresh_bot).is_err(), "one guess per address");
        assert!(limiter.admit("bob", bots[0]).is_ok(), "only the attacked username tightens");
    }

    #[test]
    fn failure_delays_double_up_to_the_cap_and_are_off_by_default() {
        let base = Duration::from_millis(250);
        assert_eq!(failure_delay(Duration::ZERO, 4), Duration::ZERO);
        assert_eq!(failure_delay(base, 1), base);
        assert_eq!(failure_delay(base, 3), Duration::from_secs(1));
        assert_eq!(failure_delay(base, 60), MAX_FAILURE_DELAY);
        let limiter = LoginLimiter::new(LoginLimits { failure_delay: base, ..limits(9, 9, 9) });
        let here: IpAddr = "10.1.1.1".parse().unwrap();
        assert_eq!(limiter.failed("ana", here), base);
        assert_eq!(limiter.failed("ana", here), base * 2);
        assert_eq!(limiter.failed("bob", here), base, "per username and address");
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
