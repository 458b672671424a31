//! What the web app observes from the browser's side, reported to `POST /api/v1/telemetry/web`
//! (every 30 s and when the page is hidden): its api calls by route template, method and status
//! class with their durations; its WebSocket connects, failures, reconnects, resumes that were
//! not recovered, and time spent disconnected; uncaught errors by kind. Turned into Prometheus
//! metrics (`courier_web_*`) whose labels are bounded: a call's path is counted under the OpenAPI
//! document's path template it matches (`/api/v1/pets/{id}`; anything else is `other`), methods, status classes and error kinds come
//! from fixed lists, and nothing personal is kept (no user, no address, no URL, no message).
//! A report is anonymous, at most [`MAX_REPORT_BYTES`], checked against [`report_schema`] (the
//! same schema `/openapi.json` publishes) and limited per client address.

use std::{
    collections::HashSet,
    sync::{Arc, OnceLock},
};

use courier_core::request_telemetry::LATENCY_BUCKETS;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{auth::RateLimiter, collections::Collections, error::FieldError};

/// Largest report body.
pub const MAX_REPORT_BYTES: usize = 32 * 1024;
/// Most `api` entries, and most durations in one entry.
const MAX_API_ENTRIES: usize = 64;
const MAX_DURATIONS: usize = 256;
/// Error kinds the app reports (`other` for the rest).
pub const ERROR_KINDS: [&str; 9] = [
    "error",
    "type_error",
    "reference_error",
    "range_error",
    "syntax_error",
    "unhandled_rejection",
    "network",
    "chunk_load",
    "other",
];
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// The JSON Schema of a report: the validator's and the OpenAPI document's.
pub fn report_schema() -> Value {
    let count = json!({"type": "integer", "minimum": 0, "maximum": 100_000});
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "api": {"type": "array", "maxItems": MAX_API_ENTRIES, "items": {
                "type": "object", "additionalProperties": false,
                "required": ["route", "method", "status", "durations_ms"],
                "properties": {
                    "route": {"type": "string", "minLength": 1, "maxLength": 300,
                        "description": "The path called, without its query; counted under the OpenAPI path template it matches (`/api/v1/pets/{id}`), or `other`"},
                    "method": {"enum": METHODS},
                    "status": {"type": "integer", "minimum": 0, "maximum": 599,
                        "description": "The answer's status; 0 when the api could not be reached"},
                    "durations_ms": {"type": "array", "maxItems": MAX_DURATIONS,
                        "items": {"type": "number", "minimum": 0, "maximum": 600_000}}
                }
            }},
            "ws": {"type": "object", "additionalProperties": false, "properties": {
                "connects": count, "failures": count, "reconnects": count, "unrecovered_resumes": count,
                "disconnected_ms": {"type": "integer", "minimum": 0, "maximum": 86_400_000}
            }},
            "errors": {"type": "array", "maxItems": ERROR_KINDS.len(), "items": {
                "type": "object", "additionalProperties": false, "required": ["kind", "count"],
                "properties": {"kind": {"enum": ERROR_KINDS}, "count": count}
            }}
        }
    })
}

#[derive(Debug, Deserialize)]
pub struct Report {
    #[serde(default)]
    api: Vec<ApiCalls>,
    #[serde(default)]
    ws: WsCounts,
    #[serde(default)]
    errors: Vec<ErrorCount>,
}

#[derive(Debug, Deserialize)]
struct ApiCalls {
    route: String,
    method: String,
    status: u16,
    durations_ms: Vec<f64>,
}

#[derive(Debug, Default, Deserialize)]
struct WsCounts {
    #[serde(default)]
    connects: u64,
    #[serde(default)]
    failures: u64,
    #[serde(default)]
    reconnects: u64,
    #[serde(default)]
    unrecovered_resumes: u64,
    #[serde(default)]
    disconnected_ms: u64,
}

#[derive(Debug, Deserialize)]
struct ErrorCount {
    kind: String,
    count: u64,
}

/// Checks `body` against [`report_schema`]; every failing field named.
pub fn parse(body: &Value) -> Result<Report, Vec<FieldError>> {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    let validator = VALIDATOR
        .get_or_init(|| jsonschema::validator_for(&report_schema()).expect("a valid schema"));
    let mut fields: Vec<FieldError> = validator
        .iter_errors(body)
        .flat_map(|err| crate::collections::field_errors(&err))
        .collect();
    if !fields.is_empty() {
        fields.sort_by(|a, b| a.field.cmp(&b.field));
        fields.dedup();
        return Err(fields);
    }
    serde_json::from_value(body.clone())
        .map_err(|err| vec![FieldError { field: "(body)".into(), reason: err.to_string() }])
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    route: String,
    method: String,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Route templates, with the collections they were computed for.
type RoutesOf = (Arc<Collections>, Arc<HashSet<String>>);

/// The metrics, and the per-address limit on reports.
pub struct WebTelemetry {
    calls: Family<CallLabels, Counter>,
    durations: Family<RouteLabels, Histogram>,
    ws_events: Family<EventLabels, Counter>,
    disconnected: Counter<f64>,
    errors: Family<KindLabels, Counter>,
    reports: Family<OutcomeLabels, Counter>,
    limiter: RateLimiter,
    /// The OpenAPI path templates, and the collections they were computed for (built once per
    /// collections reload, not per report).
    routes: std::sync::Mutex<Option<RoutesOf>>,
}

impl WebTelemetry {
    /// Registers the `courier_web_*` metrics; `reports_per_minute` per client address.
    pub fn register(registry: &mut Registry, reports_per_minute: u32) -> Arc<Self> {
        let telemetry = WebTelemetry {
            calls: Family::default(),
            durations: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            ws_events: Family::default(),
            disconnected: Counter::default(),
            errors: Family::default(),
            reports: Family::default(),
            limiter: RateLimiter::new(
                reports_per_minute as usize,
                std::time::Duration::from_secs(60),
            ),
            routes: Default::default(),
        };
        registry.register(
            "courier_web_api_requests",
            "api calls the web app made, as the browser saw them: by OpenAPI route template, method and status class (network: no answer)",
            telemetry.calls.clone(),
        );
        registry.register(
            "courier_web_api_request_duration_seconds",
            "api call durations measured in the browser, by OpenAPI route template and method",
            telemetry.durations.clone(),
        );
        registry.register(
            "courier_web_ws_events",
            "The web app's WebSocket as the browser saw it: connects, failures (could not connect or dropped), reconnects, resumes not recovered",
            telemetry.ws_events.clone(),
        );
        registry.register(
            "courier_web_ws_disconnected_seconds",
            "Time web app pages spent without their WebSocket while they wanted it",
            telemetry.disconnected.clone(),
        );
        registry.register(
            "courier_web_errors",
            "Uncaught errors in the web app, by kind",
            telemetry.errors.clone(),
        );
        registry.register(
            "courier_web_telemetry_reports",
            "Web telemetry reports received, by outcome (accepted, invalid, limited)",
            telemetry.reports.clone(),
        );
        Arc::new(telemetry)
    }

    /// Counts one refused report.
    pub fn refused(&self, outcome: &'static str) {
        self.reports.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Admits a report from `client` (its address, or another per-client key).
    pub fn admit(&self, client: &str) -> Result<(), std::time::Duration> {
        self.limiter.admit(client).inspect_err(|_| self.refused("limited"))
    }

    /// The OpenAPI path templates served for `collections`.
    pub fn routes_for(&self, collections: &Arc<Collections>) -> Arc<HashSet<String>> {
        let mut cached = self.routes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((for_collections, routes)) = cached.as_ref()
            && Arc::ptr_eq(for_collections, collections)
        {
            return routes.clone();
        }
        let routes = Arc::new(routes_of(&crate::openapi::document(collections)));
        *cached = Some((collections.clone(), routes.clone()));
        routes
    }

    /// Records a valid report; `routes` are the OpenAPI document's path templates.
    pub fn record(&self, report: Report, routes: &HashSet<String>) {
        self.reports.get_or_create(&OutcomeLabels { outcome: "accepted" }).inc();
        for calls in report.api {
            let route = template_of(&calls.route, routes).unwrap_or("other").to_owned();
            let status_class = match calls.status {
                0 => "network",
                100..=199 => "1xx",
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            };
            let labels =
                CallLabels { route: route.clone(), method: calls.method.clone(), status_class };
            self.calls.get_or_create(&labels).inc_by(calls.durations_ms.len() as u64);
            let histogram =
                self.durations.get_or_create(&RouteLabels { route, method: calls.method });
            for ms in calls.durations_ms {
                histogram.observe(ms / 1000.0);
            }
        }
        let ws = report.ws;
        for (event, count) in [
            ("connect", ws.connects),
            ("failure", ws.failures),
            ("reconnect", ws.reconnects),
            ("unrecovered_resume", ws.unrecovered_resumes),
        ] {
            self.ws_events.get_or_create(&EventLabels { event }).inc_by(count);
        }
        self.disconnected.inc_by(ws.disconnected_ms as f64 / 1000.0);
        for error in report.errors {
            self.errors.get_or_create(&KindLabels { kind: error.kind }).inc_by(error.count);
        }
    }
}

/// The template among `routes` that `path` matches: each `{parameter}` segment stands for one
/// non-empty segment, the others must be equal; the one with the most literal segments wins.
fn template_of<'a>(path: &str, routes: &'a HashSet<String>) -> Option<&'a str> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').collect();
    routes
        .iter()
        .filter_map(|route| {
            let parts: Vec<&str> = route.split('/').collect();
            if parts.len() != segments.len() {
                return None;
            }
            let mut literal = 0;
            for (part, segment) in parts.iter().zip(&segments) {
                if part.starts_with('{') && part.ends_with('}') {
                    if segment.is_empty() {
                        return None;
                    }
                } else if part == segment {
                    literal += 1;
                } else {
                    return None;
                }
            }
            Some((literal, route.as_str()))
        })
        .max()
        .map(|(_, route)| route)
}

/// The path templates of an OpenAPI document (`paths`' keys).
fn routes_of(openapi: &Value) -> HashSet<String> {
    openapi["paths"].as_object().map(|paths| paths.keys().cloned().collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn a_valid_report_becomes_bounded_metrics() {
        let mut registry = Registry::default();
        let telemetry = WebTelemetry::register(&mut registry, 10);
        let report = parse(&json!({
            "api": [
                {"route": "/api/v1/pets/6f1c0ffee0123456789abcd0", "method": "GET", "status": 200, "durations_ms": [12.5, 30]},
                {"route": "/api/v1/pets/collections/extra", "method": "GET", "status": 0, "durations_ms": [5]},
                {"route": "/api/v1/collections?x=1", "method": "GET", "status": 503, "durations_ms": [7]}
            ],
            "ws": {"connects": 1, "failures": 3, "reconnects": 2, "unrecovered_resumes": 1, "disconnected_ms": 1500},
            "errors": [{"kind": "type_error", "count": 2}]
        }))
        .unwrap();
        let routes: HashSet<String> =
            ["/api/v1/pets/{id}", "/api/v1/collections", "/api/v1/{collection}"]
                .map(str::to_owned)
                .into();
        telemetry.record(report, &routes);
        let text = encoded(&registry);
        for line in [
            r#"courier_web_api_requests_total{route="/api/v1/pets/{id}",method="GET",status_class="2xx"} 2"#,
            r#"courier_web_api_requests_total{route="other",method="GET",status_class="network"} 1"#,
            r#"courier_web_api_requests_total{route="/api/v1/collections",method="GET",status_class="5xx"} 1"#,
            r#"courier_web_ws_events_total{event="failure"} 3"#,
            r#"courier_web_ws_disconnected_seconds_total 1.5"#,
            r#"courier_web_errors_total{kind="type_error"} 2"#,
            r#"courier_web_telemetry_reports_total{outcome="accepted"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("6f1c0ffee"), "a raw URL became a label");
    }

    #[test]
    fn bad_reports_name_their_fields() {
        let cases = [
            (
                json!({"api": [{"route": "/x", "method": "TRACE", "status": 200, "durations_ms": []}]}),
                "api.0.method",
            ),
            (
                json!({"api": [{"route": "/x", "method": "GET", "status": 700, "durations_ms": []}]}),
                "api.0.status",
            ),
            (json!({"errors": [{"kind": "user 42 said hi", "count": 1}]}), "errors.0.kind"),
            (json!({"ws": {"failures": -1}}), "ws.failures"),
            (json!({"user_id": "u1"}), "user_id"),
            (
                json!({"api": [{"route": "/x", "method": "GET", "status": 200, "durations_ms": vec![1; MAX_DURATIONS + 1]}]}),
                "api.0.durations_ms",
            ),
        ];
        for (body, field) in cases {
            let fields = parse(&body).expect_err(field);
            assert!(fields.iter().any(|f| f.field == field), "{field}: {fields:?}");
        }
    }

    #[test]
    fn reports_are_limited_per_client() {
        let mut registry = Registry::default();
        let telemetry = WebTelemetry::register(&mut registry, 2);
        assert!(telemetry.admit("10.0.0.1").is_ok());
        assert!(telemetry.admit("10.0.0.1").is_ok());
        assert!(telemetry.admit("10.0.0.1").is_err());
        assert!(telemetry.admit("10.0.0.2").is_ok(), "another client has its own allowance");
        assert!(
            encoded(&registry)
                .contains(r#"courier_web_telemetry_reports_total{outcome="limited"} 1"#)
        );
    }
}
