//! Courier's MongoDB layer, shared by every service that changes documents (api, worker): the
//! stored document form, the one transactional write path (changes + outbox records commit
//! together), and the outbox publisher/relay that turns each commit into exactly one event.

pub mod chat;
pub mod documents;
pub mod metrics;
pub mod outbox;
pub mod store;
pub mod task_results;

pub use metrics::OutboxMetrics;
pub use outbox::{Outbox, OutboxRecord};
pub use store::{Store, StoreError, Write};
pub use task_results::TaskCommit;
