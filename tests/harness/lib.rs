//! The test harness: starts real `nats-server` (JetStream) and SecantusDB (MongoDB wire) processes
//! on free ports with temp dirs — stoppable, killable and restartable for fault injection — and
//! runs Courier's services in-process or as their built binaries.

pub mod chaos;
pub mod nats_auth;
pub mod process;
pub mod prometheus;
pub mod servers;
pub mod services;

pub use courier_cli::client::{ClientError, WsClient};
pub use servers::{NatsServer, StoreServer};
pub use services::{RunningApi, RunningBroadcaster, RunningWorker, Stack};

/// The JWT secret every service in a test deployment shares (tests only; services have no
/// built-in secret).
pub const TEST_JWT_SECRET: &str = "courier-tests-only-jwt-secret-0123456789abcdef";

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

/// A free TCP port on 127.0.0.1 (bound and released; the OS will not hand it out again soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}
