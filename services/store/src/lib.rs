//! Courier's data-access layer, shared by every service that reads or changes documents (api,
//! worker, chat): the stored document form, typed reads ([`Store::get`], [`Store::list`]), the
//! one read-modify-commit loop ([`Store::modify`]), the transactional write path ([`Store::commit`]:
//! changes and outbox records commit together), the outbox publisher/relay that turns each commit
//! into exactly one event, scheduled tasks waiting for their time ([`Scheduler`]), and the task
//! queue's JetStream state ([`Queues`]). It is the only code that builds MongoDB queries.
//! Writes headed for a full stream, or past the outbox's bound, are refused up front
//! ([`admission`]).

pub mod accounts;
pub mod admission;
pub mod change;
pub mod chat;
pub mod documents;
pub mod metrics;
pub mod modify;
pub mod outbox;
pub mod query;
pub mod queues;
pub mod scheduled;
pub mod store;
pub mod task_results;

pub use change::{Announce, Change, TaskRequest};
pub use documents::StoredDocument;
pub use metrics::OutboxMetrics;
pub use modify::{Committed, Decision, Modified, Modify, ModifyError, Precondition};
pub use outbox::{Outbox, OutboxRecord};
pub use query::{
    Condition, Cursor, CursorError, Filter, Grant, ListSpec, Next, Operator, Page, Scalar, SortKey,
    ValueKind,
};
pub use queues::{QueueError, Queues};
pub use scheduled::{ScheduledSummary, ScheduledTask, Scheduler, SchedulerMetrics};
pub use store::{Store, StoreError, Write};
pub use task_results::{TaskCommit, TaskMarker, is_duplicate_key};
