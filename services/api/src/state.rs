//! The state every request handler shares.

use std::sync::Arc;

use courier_store::{Outbox, OutboxMetrics, Store};

use crate::collections::CollectionsHandle;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub outbox: Outbox,
    pub collections: CollectionsHandle,
    pub metrics: Arc<OutboxMetrics>,
    pub max_body_bytes: usize,
    pub fault: Option<crate::config::Fault>,
}
