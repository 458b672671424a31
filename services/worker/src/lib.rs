//! Courier's worker: competing consumers on the `TASKS` work queue, one line per priority taken
//! in the order [`dispatch`] states, with backoff retries and dead letters. Task kinds are served
//! by [`handlers::TaskHandler`]s: built-in ones and [`webhook`] deliveries.

pub mod app;
pub mod config;
pub mod consumer;
pub mod dispatch;
pub mod handlers;
pub mod metrics;
pub mod pets;
pub mod webhook;

pub use app::{Application, standard_handlers};
pub use config::WorkerConfig;
/// The store layer the handlers write through (re-exported for tools and tests).
pub use courier_store;
