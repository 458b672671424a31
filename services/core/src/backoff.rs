//! Retry pacing, written once: exponential delays from a floor to a cap with "equal jitter"
//! (each delay is drawn uniformly from the upper half of its step), so clients that failed
//! together do not retry together. Every retry loop uses it: reconnects, start-up set-up,
//! optimistic-concurrency retries and the worker's redelivery delays.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Exponential backoff with jitter. `attempt` counts the waits since the last [`reset`].
///
/// [`reset`]: Backoff::reset
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// The default floor: reconnect loops start retrying after about 100 ms.
    pub const MIN: Duration = Duration::from_millis(100);

    /// From [`Backoff::MIN`] doubling up to `max`.
    pub fn new(max: Duration) -> Self {
        Self::with_min(Self::MIN, max)
    }

    /// From `min` doubling up to `max` (`max` is raised to `min` if smaller).
    pub fn with_min(min: Duration, max: Duration) -> Self {
        Backoff { min, max: max.max(min), attempt: 0 }
    }

    /// The ceiling of the delay for retry number `attempt` (0-based): `min · 2^attempt`, capped.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.min.saturating_mul(1u32 << attempt.min(20)).min(self.max)
    }

    /// A jittered delay for retry number `attempt`: uniform in `[ceiling/2, ceiling]`.
    pub fn delay_for(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(if spread == 0 { 0 } else { rand::random_range(0..=spread) })
    }

    /// The longest the next wait can take (for "retrying in …" logs).
    pub fn next_delay(&self) -> Duration {
        self.ceiling(self.attempt)
    }

    /// The next jittered delay, counting it as waited.
    pub fn advance(&mut self) -> Duration {
        let delay = self.delay_for(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// Sleeps the next delay; returns false (at once) if `shutdown` fires.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.advance();
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// Sleeps the next delay (for short in-request retries that need no shutdown path).
    pub async fn sleep(&mut self) {
        tokio::time::sleep(self.advance()).await;
    }

    /// Back to the shortest delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_to_the_cap_and_delays_stay_in_the_upper_half() {
        let backoff = Backoff::new(Duration::from_millis(500));
        let ceilings: Vec<u128> = (0..5).map(|a| backoff.ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 500, 500]);
        for attempt in 0..40 {
            let ceiling = backoff.ceiling(attempt);
            let delay = backoff.delay_for(attempt);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} outside [{ceiling:?}/2, {ceiling:?}]"
            );
        }
        let distinct: std::collections::HashSet<Duration> =
            (0..50).map(|_| backoff.delay_for(3)).collect();
        assert!(distinct.len() > 1, "delays are jittered");
    }

    #[tokio::test(start_paused = true)]
    async fn waits_advance_reset_and_yield_to_shutdown() {
        let token = CancellationToken::new();
        let mut backoff = Backoff::with_min(Duration::from_millis(10), Duration::from_millis(40));
        let mut ceilings = Vec::new();
        for _ in 0..4 {
            ceilings.push(backoff.next_delay().as_millis());
            let before = tokio::time::Instant::now();
            assert!(backoff.wait(&token).await);
            assert!(before.elapsed() <= Duration::from_millis(40));
        }
        assert_eq!(ceilings, [10, 20, 40, 40]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(10));
        token.cancel();
        assert!(!backoff.wait(&token).await);
    }
}
