//! Task handlers by kind. A handler returns `Ok` once its effect is stored, a transient error
//! to be retried with backoff, or a permanent error that sends the task to the dead letters.

use std::{collections::HashMap, sync::Arc};

use courier_core::Task;
use futures::future::BoxFuture;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// Worth retrying (a dependency is down, a timeout).
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help (bad input, missing document).
    #[error("permanent: {0}")]
    Permanent(String),
    /// The handler made its own attempts (a webhook retries in place to keep per-document
    /// order) and gives up: a dead letter counting `attempts`.
    #[error("dead letter after {attempts} attempts: {reason}")]
    DeadLetter { reason: String, attempts: i64 },
}

/// Whatever a handler keeps for a task between [`TaskHandler::admit`] and the end of its
/// processing (dropped then): e.g. the task's place in its document's line.
pub type Admission = Box<dyn Send + Sync>;

tokio::task_local! {
    /// The delivery number of the task being handled (1 = first), set by the work loop.
    static DELIVERY_ATTEMPT: i64;
}

/// The delivery number of the task the calling handler is handling (1 outside the work loop).
pub fn delivery_attempt() -> i64 {
    DELIVERY_ATTEMPT.try_with(|attempt| *attempt).unwrap_or(1)
}

/// Runs `work` with [`delivery_attempt`] answering `attempt`.
pub async fn with_delivery_attempt<F: std::future::Future>(attempt: i64, work: F) -> F::Output {
    DELIVERY_ATTEMPT.scope(attempt, work).await
}

pub trait TaskHandler: Send + Sync {
    /// The task kind this handler serves, e.g. `pets.enrich`.
    fn kind(&self) -> &'static str;
    fn handle<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<(), TaskError>>;
    /// Called in the order the worker takes tasks, before the task starts (tasks then run
    /// concurrently): a handler that must keep an order records the task's place here.
    fn admit(&self, _task: &Task) -> Option<Admission> {
        None
    }
    /// The worker is stopping: a handler waiting (e.g. to retry) should give its task back
    /// (a transient error) rather than hold the shutdown up.
    fn stopping(&self) {}
    /// At shutdown, after the last task: waits for work the handler left running in the
    /// background (e.g. fast-path event publishes).
    fn drain(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The handlers a worker process serves.
#[derive(Clone, Default)]
pub struct Handlers {
    by_kind: HashMap<&'static str, Arc<dyn TaskHandler>>,
    /// The store the handlers write to, if any: part of the worker's `/readyz`.
    store: Option<courier_store::Store>,
    /// The webhook handlers' metrics, when there are webhook handlers.
    webhook_metrics: Option<Arc<crate::webhook::WebhookMetrics>>,
}

impl Handlers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, handler: Arc<dyn TaskHandler>) -> Self {
        self.by_kind.insert(handler.kind(), handler);
        self
    }

    /// Declares the store the handlers need (the worker is ready only while it answers).
    pub fn with_store(mut self, store: courier_store::Store) -> Self {
        self.store = Some(store);
        self
    }

    /// Declares the webhook handlers' metrics (registered with the worker's).
    pub fn with_webhook_metrics(mut self, metrics: Arc<crate::webhook::WebhookMetrics>) -> Self {
        self.webhook_metrics = Some(metrics);
        self
    }

    pub fn webhook_metrics(&self) -> Option<&Arc<crate::webhook::WebhookMetrics>> {
        self.webhook_metrics.as_ref()
    }

    pub fn store(&self) -> Option<&courier_store::Store> {
        self.store.as_ref()
    }

    /// Tells every handler the worker is stopping ([`TaskHandler::stopping`]).
    pub fn stopping(&self) {
        for handler in self.by_kind.values() {
            handler.stopping();
        }
    }

    /// Waits for every handler's background work (graceful shutdown).
    pub async fn drain(&self) {
        for handler in self.by_kind.values() {
            handler.drain().await;
        }
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn TaskHandler>> {
        self.by_kind.get(kind)
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds: Vec<_> = self.by_kind.keys().copied().collect();
        kinds.sort_unstable();
        kinds
    }
}

/// `system.noop`: completes at once. Measures the queue machinery alone (`courier bench worker
/// --kind system.noop`) and serves as a smoke test of a deployment's workers.
pub struct Noop;

/// The kind [`Noop`] serves.
pub const NOOP_KIND: &str = "system.noop";

impl TaskHandler for Noop {
    fn kind(&self) -> &'static str {
        NOOP_KIND
    }

    fn handle<'a>(&'a self, _task: &'a Task) -> BoxFuture<'a, Result<(), TaskError>> {
        Box::pin(async { Ok(()) })
    }
}
