//! Graceful shutdown: one cancellation token per process, cancelled by SIGINT or SIGTERM; every
//! task watches it, stops taking work, drains and returns. Also `retry_until_ok`, the start-up retry
//! loop (paced by [`Backoff`]), which must itself give way to shutdown.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

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
}
