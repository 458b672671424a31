//! The api's HTTP abuse limits, as tower layers around every api route (not the ops endpoints
//! `/healthz`, `/readyz`, `/metrics`, so probes and scrapes keep answering under load): a
//! request timeout (`COURIER_HTTP_REQUEST_TIMEOUT`) and a limit on requests in flight
//! (`COURIER_HTTP_MAX_CONCURRENT_REQUESTS`). A request over either gets 503 with `Retry-After`
//! and the api's JSON error body (`request_timeout`, `overloaded`). The api serves no WebSocket
//! or streaming endpoint (the broadcaster does): the timeout covers producing the response.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    error_handling::HandleErrorLayer,
    response::{IntoResponse, Response},
};
use courier_core::config::{duration_in, millis_or_duration};
use tokio::sync::Semaphore;
use tower::{BoxError, ServiceBuilder, limit::GlobalConcurrencyLimitLayer};

use crate::error::ApiError;

#[derive(Debug, Clone, clap::Args)]
pub struct HttpLimitArgs {
    /// Longest time the api spends on one request before answering 503 `request_timeout` (a
    /// write may have been applied: read before retrying). `250ms`, `30s`, `2m` (a bare number
    /// is milliseconds).
    #[arg(long, env = "COURIER_HTTP_REQUEST_TIMEOUT", value_parser = duration_in(millis_or_duration, Duration::from_millis(1), Duration::from_secs(600)), default_value = "30s")]
    pub http_request_timeout: Duration,

    /// Most requests the api works on at once; more are answered 503 `overloaded` at once
    /// (not queued).
    #[arg(long, env = "COURIER_HTTP_MAX_CONCURRENT_REQUESTS", value_parser = clap::value_parser!(u32).range(1..=1_000_000), default_value_t = 512)]
    pub http_max_concurrent_requests: u32,
}

/// `router` with the limits around each of its routes (one shared concurrency budget).
pub fn apply(router: Router, limits: &HttpLimitArgs) -> Router {
    let timeout = limits.http_request_timeout;
    let budget = Arc::new(Semaphore::new(limits.http_max_concurrent_requests as usize));
    router.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(
                move |err: BoxError| async move { refusal(&err, timeout) },
            ))
            .load_shed()
            .layer(GlobalConcurrencyLimitLayer::with_semaphore(budget))
            .timeout(timeout),
    )
}

/// The answer for a request a layer refused.
fn refusal(err: &BoxError, timeout: Duration) -> Response {
    if err.is::<tower::timeout::error::Elapsed>() {
        ApiError::RequestTimeout { after: timeout }.into_response()
    } else if err.is::<tower::load_shed::error::Overloaded>() {
        ApiError::Overloaded.into_response()
    } else {
        ApiError::Internal(anyhow::anyhow!("http middleware failed: {err}")).into_response()
    }
}
