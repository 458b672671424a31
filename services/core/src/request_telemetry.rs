//! Per-request telemetry for every HTTP router: a trace id (the client's `x-trace-id` when sane,
//! else a new one) in a span around the request and echoed in the response, and RED metrics by
//! route template (`courier_http_requests_total`, `courier_http_request_duration_seconds`).

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tracing::Instrument;

/// Header carrying a request's trace id, both ways.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

/// The route label of requests no route matched (kept bounded: never the raw path).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Latency buckets (seconds) for request durations: 1 ms … 10 s.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0];

/// The trace id of one request, available to handlers as `Extension<TraceId>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceId(pub String);

impl TraceId {
    /// The client's `x-trace-id` when it is a sane token (1–64 of `[A-Za-z0-9-]`), else a new one.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        headers
            .get(TRACE_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_sane_trace_id(v))
            .map(|v| TraceId(v.to_owned()))
            .unwrap_or_else(TraceId::generate)
    }

    pub fn generate() -> Self {
        TraceId(uuid::Uuid::now_v7().simple().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `value` may be used as a trace id as given (it ends up in logs and headers).
pub fn is_sane_trace_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub method: &'static str,
}

/// The RED metrics of one HTTP service.
#[derive(Debug)]
pub struct HttpMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<RouteLabels, Histogram>,
    pub in_flight: Gauge,
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            in_flight: Gauge::default(),
        };
        registry.register(
            "courier_http_requests",
            "HTTP requests answered, by route template, method and status",
            metrics.requests.clone(),
        );
        registry.register(
            "courier_http_request_duration_seconds",
            "HTTP request latency until the response head, by route template and method",
            metrics.duration.clone(),
        );
        registry.register(
            "courier_http_requests_in_flight",
            "HTTP requests being handled now",
            metrics.in_flight.clone(),
        );
        Arc::new(metrics)
    }
}

/// Middleware (add with `Router::layer(axum::middleware::from_fn_with_state(metrics, observe))`
/// so the route template is known): trace id, span, metrics, and the `x-trace-id` response header.
pub async fn observe(
    State(metrics): State<Arc<HttpMetrics>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let trace_id = TraceId::from_headers(request.headers());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED_ROUTE.to_owned(), |path| path.as_str().to_owned());
    let method = bounded_method(request.method());
    request.extensions_mut().insert(trace_id.clone());

    let span = tracing::info_span!("http", %method, %route, trace_id = %trace_id);
    metrics.in_flight.inc();
    let mut response = next.run(request).instrument(span.clone()).await;
    metrics.in_flight.dec();

    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics.requests.get_or_create(&RequestLabels { route: route.clone(), method, status }).inc();
    metrics.duration.get_or_create(&RouteLabels { route, method }).observe(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::debug!(status, latency_ms = elapsed.as_secs_f64() * 1000.0, "request done")
    });
    if let Ok(value) = HeaderValue::from_str(trace_id.as_str()) {
        response.headers_mut().insert(HeaderName::from_static(TRACE_ID_HEADER), value);
    }
    response
}

/// Standard methods by name; anything else as `other` (labels stay bounded).
fn bounded_method(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use axum::{Extension, Router, body::Body, http::StatusCode, routing::get};
    use tower::ServiceExt;

    use super::*;

    fn app(metrics: Arc<HttpMetrics>) -> Router {
        Router::new()
            .route(
                "/items/{id}",
                get(|Extension(trace): Extension<TraceId>| async move { trace.0 }),
            )
            .layer(axum::middleware::from_fn_with_state(metrics, observe))
    }

    fn encode(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template_and_unmatched_paths_stay_bounded() {
        let mut registry = Registry::default();
        let metrics = HttpMetrics::register(&mut registry);
        for path in ["/items/1", "/items/2", "/nowhere/abc", "/nowhere/def"] {
            let _ = app(metrics.clone())
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
        }
        let text = encode(&registry);
        assert!(
            text.contains(
                r#"courier_http_requests_total{route="/items/{id}",method="GET",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"courier_http_requests_total{route="unmatched",method="GET",status="404"} 2"#
            ),
            "{text}"
        );
        assert!(
            !text.contains("/items/1") && !text.contains("abc"),
            "raw paths never become labels: {text}"
        );
        assert!(
            text.contains(
                r#"courier_http_request_duration_seconds_count{route="/items/{id}",method="GET"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains("courier_http_requests_in_flight 0"), "{text}");
    }

    #[tokio::test]
    async fn a_sane_client_trace_id_is_kept_and_echoed_otherwise_a_new_one_is_made() {
        let metrics = HttpMetrics::register(&mut Registry::default());
        let request = Request::get("/items/1")
            .header(TRACE_ID_HEADER, "abc-123")
            .body(Body::empty())
            .unwrap();
        let response = app(metrics.clone()).oneshot(request).await.unwrap();
        assert_eq!(response.headers()[TRACE_ID_HEADER], "abc-123");
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"abc-123", "the handler sees the same id");

        let request = Request::get("/items/1")
            .header(TRACE_ID_HEADER, "bad id with spaces")
            .body(Body::empty())
            .unwrap();
        let response = app(metrics.clone()).oneshot(request).await.unwrap();
        let echoed = response.headers()[TRACE_ID_HEADER].to_str().unwrap().to_owned();
        assert!(is_sane_trace_id(&echoed) && echoed.len() == 32, "{echoed}");

        let response = app(metrics)
            .oneshot(Request::get("/missing").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(response.headers().contains_key(TRACE_ID_HEADER), "errors carry the trace id too");
    }

    #[test]
    fn unusual_methods_share_one_label() {
        assert_eq!(bounded_method(&axum::http::Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(bounded_method(&axum::http::Method::PATCH), "PATCH");
    }
}
