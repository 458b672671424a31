//! The operations endpoints every service exposes: `/healthz` (the process is alive), `/readyz`
//! (its dependencies answer) and `/metrics` (Prometheus text format).

use std::{borrow::Cow, future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio_util::sync::CancellationToken;

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type Check = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// Named readiness checks; `/readyz` answers 200 only when all pass.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Check)>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_check<F, Fut>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push((name, Arc::new(move || Box::pin(check()))));
        self
    }

    /// Ready while the NATS client is connected.
    pub fn with_nats(self, client: async_nats::Client) -> Self {
        self.with_check("nats", move || {
            let state = client.connection_state();
            async move {
                match state {
                    async_nats::connection::State::Connected => Ok(()),
                    other => Err(format!("nats connection is {other:?}").to_lowercase()),
                }
            }
        })
    }

    /// Runs every check; the map of results and whether all passed.
    pub async fn evaluate(&self) -> (bool, serde_json::Map<String, serde_json::Value>) {
        let mut all_ok = true;
        let mut report = serde_json::Map::new();
        for (name, check) in &self.checks {
            let outcome = tokio::time::timeout(std::time::Duration::from_secs(2), check()).await;
            let value = match outcome {
                Ok(Ok(())) => json!("ok"),
                Ok(Err(reason)) => {
                    all_ok = false;
                    json!(reason)
                }
                Err(_) => {
                    all_ok = false;
                    json!("check timed out after 2s")
                }
            };
            report.insert((*name).to_owned(), value);
        }
        (all_ok, report)
    }
}

#[derive(Clone)]
struct OpsState {
    registry: Arc<Registry>,
    readiness: Readiness,
}

/// `/healthz`, `/readyz`, `/metrics` as a router to merge into a service's own.
pub fn router(registry: Arc<Registry>, readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(OpsState { registry, readiness })
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<OpsState>) -> Response {
    let (ready, checks) = state.readiness.evaluate().await;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({"status": if ready { "ready" } else { "not_ready" }, "checks": checks});
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<OpsState>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => (
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(%err, "encoding metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Serves the ops router alone (for services without an HTTP API, such as the worker) until
/// `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(registry, readiness))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// A service's metrics registry: every metric carries `component="<component>"`, and
/// `courier_build_info{component, version}` is 1 (dashboards list pods from it).
pub fn component_registry(component: &'static str) -> Registry {
    let mut registry = Registry::with_labels(std::iter::once((
        Cow::Borrowed("component"),
        Cow::Borrowed(component),
    )));
    let build_info = prometheus_client::metrics::family::Family::<
        [(&'static str, &'static str); 1],
        prometheus_client::metrics::gauge::Gauge,
    >::default();
    build_info.get_or_create(&[("version", env!("CARGO_PKG_VERSION"))]).set(1);
    registry.register(
        "courier_build_info",
        "Always 1; labelled with the running version",
        build_info,
    );
    registry
}

/// Binds `addr`, naming it in the error so a port clash is obvious.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|err| std::io::Error::new(err.kind(), format!("cannot listen on {addr}: {err}")))
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn every_metric_of_a_component_registry_carries_the_component_and_build_info_is_one() {
        let mut registry = component_registry("api");
        registry.register("courier_things", "Things", Counter::<u64>::default());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let build_info = format!(
            r#"courier_build_info{{component="api",version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&build_info), "{text}");
        assert!(text.contains(r#"courier_things_total{component="api"} 0"#), "{text}");
    }
}
