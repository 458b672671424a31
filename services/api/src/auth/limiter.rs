//! Rate limits in sliding windows: login failures per (username, client address) and attempts
//! per client address, per-user action limits (chat sends, room creation), and the limits on
//! writes that produce events (a rate per collection and writer, a byte budget per writer). One
//! implementation, [`Windows`], counts them all. Limits are per api replica (N replicas allow up
//! to N× the attempts).

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use courier_core::rate::Rate;

/// A sliding-window total per key: each hit adds a weight (1 to count actions, a size to spend
/// a byte budget) and counts until it is a window old. Hits less than 1/[`SLOTS_PER_WINDOW`] of
/// the window apart share one entry, so a key holds a bounded number of entries however busy it
/// is (a hit may expire up to that much early).
struct Windows<K> {
    limit: u64,
    window: Duration,
    hits: Mutex<HashMap<K, Window>>,
}

/// Entries per key at most (one per slot of the window).
const SLOTS_PER_WINDOW: u32 = 64;

/// Keys kept before old, idle ones are swept.
const SWEEP_ABOVE: usize = 10_000;

/// One key's hits: (start of a slot, weight of the hits in it), oldest first, and their sum.
#[derive(Default)]
struct Window {
    slots: VecDeque<(Instant, u64)>,
    total: u64,
}

impl Window {
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some(&(start, weight)) = self.slots.front()
            && now.duration_since(start) >= window
        {
            self.slots.pop_front();
            self.total -= weight;
        }
    }

    /// How long until `cost` more fits under `limit`; `None` when it fits now. A cost over the
    /// limit fits once the window is empty.
    fn wait(&self, now: Instant, window: Duration, limit: u64, cost: u64) -> Option<Duration> {
        let cost = cost.min(limit);
        let mut total = self.total;
        if total + cost <= limit {
            return None;
        }
        for &(start, weight) in &self.slots {
            total -= weight;
            if total + cost <= limit {
                return Some(window.saturating_sub(now.duration_since(start)));
            }
        }
        Some(window)
    }

    fn add(&mut self, now: Instant, window: Duration, cost: u64) {
        let slot = window / SLOTS_PER_WINDOW;
        match self.slots.back_mut() {
            Some((start, weight)) if now.duration_since(*start) < slot => *weight += cost,
            _ => self.slots.push_back((now, cost)),
        }
        self.total += cost;
    }
}

impl<K: Hash + Eq + Clone> Windows<K> {
    fn new(limit: u64, window: Duration) -> Self {
        Windows { limit: limit.max(1), window, hits: Mutex::new(HashMap::new()) }
    }

    /// `Some(wait)` when `key` has used its allowance.
    fn blocked_for(&self, key: &K, now: Instant) -> Option<Duration> {
        self.blocked_at(key, now, self.limit)
    }

    /// `Some(wait)` when `key` has `limit` or more in the window (any limit, not only its own).
    fn blocked_at(&self, key: &K, now: Instant, limit: u64) -> Option<Duration> {
        let mut hits = self.hits.lock().expect("limiter lock poisoned");
        let entry = hits.get_mut(key)?;
        entry.expire(now, self.window);
        entry.wait(now, self.window, limit.max(1), 1)
    }

    /// The total of `key` within the window.
    fn total(&self, key: &K, now: Instant) -> u64 {
        let mut hits = self.hits.lock().expect("limiter lock poisoned");
        hits.get_mut(key).map_or(0, |entry| {
            entry.expire(now, self.window);
            entry.total
        })
    }

    /// Adds `cost` to `key` if it fits its allowance; `Err(wait)` (nothing added) if not.
    fn admit(&self, key: K, now: Instant, cost: u64) -> Result<(), Duration> {
        let mut hits = self.hits.lock().expect("limiter lock poisoned");
        if let Some(entry) = hits.get_mut(&key) {
            entry.expire(now, self.window);
            if let Some(wait) = entry.wait(now, self.window, self.limit, cost) {
                return Err(wait);
            }
        }
        self.add_locked(&mut hits, key, now, cost);
        Ok(())
    }

    fn hit(&self, key: K, now: Instant) {
        self.add(key, now, 1);
    }

    fn add(&self, key: K, now: Instant, cost: u64) {
        let mut hits = self.hits.lock().expect("limiter lock poisoned");
        self.add_locked(&mut hits, key, now, cost);
    }

    fn add_locked(&self, hits: &mut HashMap<K, Window>, key: K, now: Instant, cost: u64) {
        if hits.len() > SWEEP_ABOVE {
            hits.retain(|_, entry| {
                entry.slots.back().is_some_and(|(t, _)| now.duration_since(*t) < self.window)
            });
        }
        hits.entry(key).or_default().add(now, self.window, cost);
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
        RateLimiter { windows: Windows::new(limit as u64, window) }
    }

    fn of(rate: Rate) -> Self {
        RateLimiter { windows: Windows::new(u64::from(rate.count), rate.per) }
    }

    /// Counts one action of `key`; `Err(wait)` (nothing counted) when its allowance is used up.
    pub fn admit(&self, key: &str) -> Result<(), Duration> {
        self.windows.admit(key.to_owned(), Instant::now(), 1)
    }
}

/// Why a write was refused, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteRefusal {
    /// The writer's rate for this bucket is used up.
    Rate(Duration),
    /// The writer's byte budget for the hour is spent.
    Bytes(Duration),
}

/// The limits on writes that produce events. A writer (a user's id, or a client address for
/// anonymous writes) gets a rate per bucket (a collection, or chat) and one budget of stream
/// bytes per hour across all its writes. The budget is checked before a write and spent after
/// it commits, by the bytes it actually put in the streams (so one write may overshoot it).
pub struct WriteLimiter {
    rates: Mutex<HashMap<String, Arc<(Rate, RateLimiter)>>>,
    /// `None`: no byte budget.
    bytes: Option<Windows<String>>,
}

/// The byte budget's window.
pub const BYTE_BUDGET_WINDOW: Duration = Duration::from_secs(3600);

impl WriteLimiter {
    /// `bytes_per_hour` 0: no byte budget.
    pub fn new(bytes_per_hour: u64) -> Self {
        WriteLimiter {
            rates: Mutex::default(),
            bytes: (bytes_per_hour > 0).then(|| Windows::new(bytes_per_hour, BYTE_BUDGET_WINDOW)),
        }
    }

    /// Counts one write of `writer` to `bucket` at `rate`, unless the rate or the byte budget is
    /// used up (then nothing is counted).
    pub fn admit(&self, bucket: &str, rate: Rate, writer: &str) -> Result<(), WriteRefusal> {
        let writer = writer.to_owned();
        if let Some(bytes) = &self.bytes
            && let Some(wait) = bytes.blocked_for(&writer, Instant::now())
        {
            return Err(WriteRefusal::Bytes(wait));
        }
        self.bucket(bucket, rate).1.admit(&writer).map_err(WriteRefusal::Rate)
    }

    /// Spends `bytes` of `writer`'s budget (what a committed write put in the streams).
    pub fn charge(&self, writer: &str, bytes: u64) {
        if let Some(budget) = &self.bytes {
            budget.add(writer.to_owned(), Instant::now(), bytes);
        }
    }

    /// The bytes `writer` has spent within the hour.
    pub fn spent(&self, writer: &str) -> u64 {
        self.bytes.as_ref().map_or(0, |b| b.total(&writer.to_owned(), Instant::now()))
    }

    /// The bucket's limiter at `rate` (a new one when its rate changed, e.g. a reloaded file).
    fn bucket(&self, bucket: &str, rate: Rate) -> Arc<(Rate, RateLimiter)> {
        let mut rates = self.rates.lock().expect("limiter lock poisoned");
        match rates.get(bucket) {
            Some(limiter) if limiter.0 == rate => limiter.clone(),
            _ => {
                let limiter = Arc::new((rate, RateLimiter::of(rate)));
                rates.insert(bucket.to_owned(), limiter.clone());
                limiter
            }
        }
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
            failures_per_pair: Windows::new(limits.failures_per_pair as u64, limits.window),
            failures_per_user: Windows::new(limits.failures_per_user as u64, limits.window),
            attempts_per_address: Windows::new(limits.attempts_per_address as u64, limits.window),
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
        let failures = self.failures_per_pair.total(&pair, now);
        failure_delay(self.failure_delay, failures)
    }

    /// A success clears this address's failures for `username` (not the other addresses').
    pub fn succeeded(&self, username: &str, address: IpAddr) {
        self.failures_per_pair.clear(&(username.to_owned(), address));
    }
}

/// `base` × 2^(failures-1), at most [`MAX_FAILURE_DELAY`]; zero when `base` is.
fn failure_delay(base: Duration, failures: u64) -> Duration {
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
    fn weighted_hits_spend_a_budget_and_free_it_as_they_age() {
        let windows = Windows::new(1000, Duration::from_secs(64));
        let start = Instant::now();
        assert!(windows.admit("k", start, 600).is_ok());
        assert!(windows.admit("k", start + Duration::from_secs(10), 300).is_ok());
        let wait = windows.admit("k", start + Duration::from_secs(20), 200).unwrap_err();
        assert_eq!(wait, Duration::from_secs(44), "until the first 600 age out");
        assert_eq!(windows.total(&"k", start + Duration::from_secs(20)), 900);
        assert_eq!(windows.total(&"k", start + Duration::from_secs(64)), 300);
        assert!(windows.admit("k", start + Duration::from_secs(64), 200).is_ok());
        // A cost over the whole limit fits only an empty window.
        let big = Windows::new(100, Duration::from_secs(10));
        assert!(big.admit("k", start, 500).is_ok());
        assert!(big.admit("k", start + Duration::from_secs(5), 1).is_err());
    }

    #[test]
    fn hits_close_together_share_an_entry() {
        let windows = Windows::new(u64::MAX, Duration::from_secs(64));
        let start = Instant::now();
        for n in 0..10_000u64 {
            windows.hit("k", start + Duration::from_millis(n * 10));
        }
        let hits = windows.hits.lock().unwrap();
        assert!(hits["k"].slots.len() <= 101, "{} entries", hits["k"].slots.len());
        assert_eq!(hits["k"].total, 10_000);
    }

    #[test]
    fn writes_are_limited_per_bucket_and_writer_and_by_bytes_across_buckets() {
        let limiter = WriteLimiter::new(10_000);
        let two = "2/min".parse().unwrap();
        assert!(limiter.admit("products", two, "user:ana").is_ok());
        assert!(limiter.admit("products", two, "user:ana").is_ok());
        assert!(matches!(
            limiter.admit("products", two, "user:ana"),
            Err(WriteRefusal::Rate(wait)) if wait > Duration::from_secs(59)
        ));
        assert!(limiter.admit("products", two, "user:bob").is_ok(), "per writer");
        assert!(limiter.admit("desks", two, "user:ana").is_ok(), "per bucket");
        let three = "3/min".parse().unwrap();
        assert!(limiter.admit("products", three, "user:ana").is_ok(), "a new rate starts afresh");
        limiter.charge("user:bob", 10_000);
        assert_eq!(limiter.spent("user:bob"), 10_000);
        assert!(matches!(
            limiter.admit("desks", two, "user:bob"),
            Err(WriteRefusal::Bytes(wait)) if wait > Duration::from_secs(3590)
        ));
        assert!(limiter.admit("desks", two, "address:10.0.0.1").is_ok());
        let unlimited = WriteLimiter::new(0);
        unlimited.charge("user:bob", u64::MAX);
        assert!(unlimited.admit("desks", two, "user:bob").is_ok());
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
