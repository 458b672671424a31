//! The state every request handler shares.

use std::sync::Arc;

use courier_store::{Outbox, OutboxMetrics, Queues, Store};

use courier_core::{auth::JwtKeys, client_addr::TrustedProxies};

use crate::{
    auth::{Accounts, LoginLimiter, RateLimiter},
    collections::CollectionsHandle,
};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub outbox: Outbox,
    /// The task queue's streams (the queue endpoints).
    pub queues: Queues,
    pub collections: CollectionsHandle,
    pub metrics: Arc<OutboxMetrics>,
    pub max_body_bytes: usize,
    pub accounts: Accounts,
    pub jwt: Arc<JwtKeys>,
    pub login_limiter: Arc<LoginLimiter>,
    /// Registrations per client address.
    pub register_limiter: Arc<RateLimiter>,
    /// Bounds the argon2 hashes computed at once (registrations and logins).
    pub password_hashing: Arc<tokio::sync::Semaphore>,
    /// Which `X-Forwarded-For` entry is the client (`courier_core::client_addr`).
    pub trusted_proxies: Arc<TrustedProxies>,
    pub fault: Option<crate::config::Fault>,
    /// The per-writer limits on writes that produce events.
    pub writes: Arc<crate::writes::WriteLimits>,
    /// Chat's rate limits and metrics.
    pub chat: Arc<crate::chat::Chat>,
    /// The web app's settings (`/app-config.json`, optional development directory).
    pub web: Arc<crate::web::WebSettings>,
    /// Set once the configured first admin is in place (`None`: none configured); registrations
    /// wait for it, so nobody can register the admin's name first.
    pub bootstrapped: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// The seed systems' REST aliases are served (`COURIER_SEED_COMPAT`, see `compat`).
    pub seed_compat: bool,
    /// The web app's browser-side metrics; `None` when `COURIER_WEB_TELEMETRY=false`.
    pub web_telemetry: Option<Arc<crate::web_telemetry::WebTelemetry>>,
}
