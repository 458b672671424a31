//! The state every request handler shares.

use std::sync::Arc;

use crate::{collections::CollectionsHandle, metrics::ApiMetrics, outbox::Outbox, store::Store};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub outbox: Outbox,
    pub collections: CollectionsHandle,
    pub metrics: Arc<ApiMetrics>,
    pub max_body_bytes: usize,
    pub fault: Option<crate::config::Fault>,
}
