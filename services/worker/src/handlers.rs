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
}

pub trait TaskHandler: Send + Sync {
    /// The task kind this handler serves, e.g. `pets.enrich`.
    fn kind(&self) -> &'static str;
    fn handle<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<(), TaskError>>;
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

    pub fn store(&self) -> Option<&courier_store::Store> {
        self.store.as_ref()
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
