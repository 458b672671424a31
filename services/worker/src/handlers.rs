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
}

/// The handlers a worker process serves.
#[derive(Clone, Default)]
pub struct Handlers {
    by_kind: HashMap<&'static str, Arc<dyn TaskHandler>>,
}

impl Handlers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, handler: Arc<dyn TaskHandler>) -> Self {
        self.by_kind.insert(handler.kind(), handler);
        self
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
