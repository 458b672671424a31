//! Courier's worker: competing consumers on the `TASKS` work queue with backoff retries and
//! dead letters. Task kinds are served by [`handlers::TaskHandler`]s.

pub mod app;
pub mod config;
pub mod consumer;
pub mod handlers;
pub mod metrics;

pub use app::Application;
pub use config::WorkerConfig;
