//! The test harness: starts real `nats-server` (JetStream) and SecantusDB (MongoDB wire) processes
//! on ports the OS picks, with temp dirs — stoppable, killable and restartable on the same port for
//! fault injection — runs Courier's services in-process or as their built binaries, and waits for
//! conditions with a deadline (`wait_until`, `wait_for`, `poll_until`) instead of sleeping.

use std::{future::Future, time::Duration};

pub mod bench;
pub mod chaos;
pub mod chat;
pub mod nats_auth;
pub mod priorities;
pub mod process;
pub mod prometheus;
pub mod servers;
pub mod services;
pub mod webhooks;

pub use courier_cli::client::{ClientError, WsClient};
pub use servers::{NatsServer, StoreServer, server_processed};
pub use services::{RunningApi, RunningBroadcaster, RunningWorker, Stack};

/// The JWT secret every service in a test deployment shares (tests only; services have no
/// built-in secret).
pub const TEST_JWT_SECRET: &str = "courier-tests-only-jwt-secret-0123456789abcdef";

/// The bootstrap admin of every test deployment started by `Stack` (tests only).
pub const TEST_ADMIN_USERNAME: &str = "admin";
pub const TEST_ADMIN_PASSWORD: &str = "courier-tests-only-admin-password";

/// Logs from the services under test, only when `TEST_LOG=1` (tests stay quiet otherwise).
pub fn init_test_logging() {
    if std::env::var("TEST_LOG").is_ok_and(|v| v == "1") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            ))
            .with_test_writer()
            .try_init();
    }
}

/// The workspace root (where `.dev/` lives).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// How often the `wait_*` helpers look again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `check` (at once, then every 20 ms) until it is true or `timeout` has passed; whether it
/// became true. For waits whose caller reports the failure itself.
pub async fn poll_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls `check` until it is true; panics naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    if !poll_until(timeout, check).await {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// Polls `probe` until it returns `Ok` (its value is returned); panics naming `what` after
/// `timeout`, with the last `Err`: what the probe saw instead.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}
