//! Graceful shutdown: one cancellation token per process, cancelled by SIGINT or SIGTERM; every
//! task watches it, stops taking work, drains and returns. Also the retry pacing (`Backoff`)
//! that every reconnect loop uses, which must itself give way to shutdown.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A token cancelled when the process receives SIGINT (Ctrl-C) or SIGTERM.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; draining");
        cancel.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM; only Ctrl-C will stop");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Exponential retry pacing for reconnect loops: 100 ms doubling up to a cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub const MIN: Duration = Duration::from_millis(100);

    pub fn new(max: Duration) -> Self {
        Backoff { next: Self::MIN, max }
    }

    /// The delay the next `wait` will sleep.
    pub fn next_delay(&self) -> Duration {
        self.next
    }

    /// Sleeps the current delay and doubles it; returns false (at once) if `shutdown` fires.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// Back to the shortest delay (after a success).
    pub fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

/// Runs `op` until it succeeds, waiting with [`Backoff`] (capped at `max`) between failures and
/// logging each as `what`; false if `shutdown` fires first. Start-up set-up uses it so a service
/// comes up while a dependency is still down and completes the set-up once it is back.
pub async fn retry_until_ok<F, Fut, E>(
    what: &str,
    max: Duration,
    shutdown: &CancellationToken,
    mut op: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut backoff = Backoff::new(max);
    loop {
        match op().await {
            Ok(()) => return true,
            Err(err) => {
                tracing::warn!(%err, retry_in = ?backoff.next_delay(), "{what} failed; retrying")
            }
        }
        if !backoff.wait(shutdown).await {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retry_until_ok_retries_failures_and_yields_to_shutdown() {
        let token = CancellationToken::new();
        let mut calls = 0;
        let ok = retry_until_ok("test", Duration::from_secs(1), &token, || {
            calls += 1;
            let outcome = if calls < 3 { Err("not yet") } else { Ok(()) };
            async move { outcome }
        })
        .await;
        assert!(ok);
        assert_eq!(calls, 3);
        token.cancel();
        assert!(
            !retry_until_ok("test", Duration::from_secs(1), &token, || async {
                Err::<(), _>("down")
            })
            .await
        );
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_to_its_cap_and_yields_to_shutdown() {
        let token = CancellationToken::new();
        let mut backoff = Backoff::new(Duration::from_millis(500));
        let mut delays = Vec::new();
        for _ in 0..5 {
            delays.push(backoff.next_delay().as_millis());
            assert!(backoff.wait(&token).await);
        }
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Backoff::MIN);
        token.cancel();
        assert!(!backoff.wait(&token).await);
    }
}
