//! The api's one error type and its single mapping to HTTP: status code plus a JSON body
//! `{"error": {"code", "message", "fields"?}}`. 5xx details are logged, never sent. The same
//! body for the router's and extractors' own refusals (no route, wrong method, a path that does
//! not decode): [`json_rejections`].

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::json;

/// One failing field of a request body: a dotted path (`precio`, `tags.0`) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    BadRequest(String),
    /// A query parameter that cannot be used (400, naming it in `fields`).
    #[error("{parameter} {reason}")]
    InvalidParameter { parameter: &'static str, reason: String },
    /// A list filter that is not one of the collection (400, naming the field in `fields`: the
    /// same refusal a subscription's `bad_filter` frame gives).
    #[error("{reason}")]
    InvalidFilter { field: String, reason: String },
    #[error("request body must be application/json")]
    UnsupportedMediaType,
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the document does not match the '{collection}' schema")]
    Validation { collection: String, fields: Vec<FieldError> },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    Unauthorized { message: String, invalid_token: bool },
    #[error("too many {what}; retry in {retry_after_secs} s")]
    TooManyRequests { what: &'static str, retry_after_secs: u64 },
    /// Signed in, but this user may not do this here.
    #[error("{0}")]
    Forbidden(String),
    #[error("the database is unavailable; nothing was written, retry shortly")]
    StoreUnavailable(#[source] mongodb::error::Error),
    /// A query outlived its server-side limit (`COURIER_MONGODB_QUERY_TIMEOUT`, maxTimeMS).
    #[error(
        "the query took longer than the database's time limit and was stopped; retry shortly, or narrow it"
    )]
    QueryTimeout(#[source] mongodb::error::Error),
    #[error(
        "the database stopped answering while committing: the change may have been applied; read it before retrying"
    )]
    OutcomeUnknown(#[source] mongodb::error::Error),
    /// The write's events or tasks would go to a full stream (`COURIER_EVENTS_MAX_BYTES`,
    /// `COURIER_TASKS_MAX_BYTES`): refused before anything was written.
    #[error("the {stream} stream is full; nothing was written, retry later")]
    StreamFull { stream: &'static str },
    /// More changes wait in the outbox than `COURIER_OUTBOX_MAX_PENDING` (NATS unreachable for
    /// long): refused before anything was written.
    #[error("too many changes are waiting to be published; nothing was written, retry later")]
    OutboxFull,
    /// The request took longer than `COURIER_HTTP_REQUEST_TIMEOUT`.
    #[error(
        "the request took longer than {} and was stopped; a change may have been applied: read it before retrying",
        courier_core::config::display_duration(*after)
    )]
    RequestTimeout { after: std::time::Duration },
    /// `COURIER_HTTP_MAX_CONCURRENT_REQUESTS` requests are in flight already.
    #[error("the api is at its limit of concurrent requests; retry shortly")]
    Overloaded,
    /// A registration before the configured first admin is in place (the name could be taken).
    #[error("registrations open once the api has set up its first admin; retry shortly")]
    BootstrapPending,
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_)
            | ApiError::BadRequest(_)
            | ApiError::InvalidParameter { .. }
            | ApiError::InvalidFilter { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::StoreUnavailable(_)
            | ApiError::OutcomeUnknown(_)
            | ApiError::QueryTimeout(_)
            | ApiError::RequestTimeout { .. }
            | ApiError::Overloaded
            | ApiError::BootstrapPending
            | ApiError::StreamFull { .. }
            | ApiError::OutboxFull => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidParameter { .. } => "invalid_parameter",
            ApiError::InvalidFilter { .. } => "invalid_filter",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::Validation { .. } => "validation_failed",
            ApiError::NotFound(_) => "not_found",
            ApiError::PreconditionFailed(_) => "precondition_failed",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::QueryTimeout(_) => "query_timeout",
            ApiError::RequestTimeout { .. } => "request_timeout",
            ApiError::Overloaded => "overloaded",
            ApiError::BootstrapPending => "bootstrap_pending",
            ApiError::StreamFull { .. } => "stream_full",
            ApiError::OutboxFull => "outbox_full",
            ApiError::OutcomeUnknown(_) => "store_outcome_unknown",
            ApiError::Internal(_) => "internal",
        }
    }

    /// 429 for `what` (e.g. "messages"), retry after `wait` (whole seconds, at least 1).
    pub fn too_many(what: &'static str, wait: std::time::Duration) -> Self {
        let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError::TooManyRequests { what, retry_after_secs: retry_after_secs.max(1) }
    }

    /// 400 for query parameter `parameter`.
    pub fn invalid_parameter(parameter: &'static str, reason: impl Into<String>) -> Self {
        ApiError::InvalidParameter { parameter, reason: reason.into() }
    }

    pub fn validation(collection: &str, fields: Vec<FieldError>) -> Self {
        ApiError::Validation { collection: collection.to_owned(), fields }
    }
}

impl From<mongodb::error::Error> for ApiError {
    fn from(err: mongodb::error::Error) -> Self {
        if courier_store::store::is_query_timeout(&err) {
            return ApiError::QueryTimeout(err);
        }
        // Unreachable, or transient errors that outlasted the retries (write conflicts, elections).
        if courier_store::store::is_unavailable(&err)
            || err.contains_label(mongodb::error::TRANSIENT_TRANSACTION_ERROR)
        {
            ApiError::StoreUnavailable(err)
        } else {
            ApiError::Internal(anyhow::Error::new(err).context("MongoDB operation failed"))
        }
    }
}

impl From<courier_store::StoreError> for ApiError {
    fn from(err: courier_store::StoreError) -> Self {
        match err {
            courier_store::StoreError::VersionConflict => ApiError::PreconditionFailed(
                "the document changed since it was read (If-Match does not match)".into(),
            ),
            courier_store::StoreError::OutcomeUnknown(err) => ApiError::OutcomeUnknown(err),
            courier_store::StoreError::StreamFull { stream } => ApiError::StreamFull { stream },
            courier_store::StoreError::OutboxFull => ApiError::OutboxFull,
            courier_store::StoreError::FieldName { collection, error } => ApiError::validation(
                &collection,
                vec![FieldError {
                    field: error.path,
                    reason: courier_store::documents::FIELD_NAME_RULE.to_owned(),
                }],
            ),
            courier_store::StoreError::Mongo(err) => err.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        match &self {
            ApiError::Internal(err) => tracing::error!(error = ?err, "request failed"),
            ApiError::StoreUnavailable(err) | ApiError::OutcomeUnknown(err) => {
                tracing::warn!(%err, "store unavailable")
            }
            ApiError::QueryTimeout(err) => tracing::warn!(%err, "query stopped by its time limit"),
            _ => {}
        }
        let mut body = json!({"code": self.code(), "message": self.to_string()});
        match &self {
            ApiError::Validation { fields, .. } => body["fields"] = json!(fields),
            ApiError::InvalidParameter { parameter, reason } => {
                body["fields"] = json!([{"field": parameter, "reason": reason}])
            }
            ApiError::InvalidFilter { field, reason } => {
                body["fields"] = json!([{"field": field, "reason": reason}])
            }
            _ => {}
        }
        let mut response = (status, Json(json!({"error": body}))).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized { invalid_token, .. } => {
                let challenge = if *invalid_token {
                    r#"Bearer realm="courier", error="invalid_token""#
                } else {
                    r#"Bearer realm="courier""#
                };
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            }
            ApiError::TooManyRequests { retry_after_secs, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::QueryTimeout(_)
            | ApiError::RequestTimeout { .. }
            | ApiError::Overloaded
            | ApiError::BootstrapPending => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            ApiError::StreamFull { .. } | ApiError::OutboxFull => {
                let wait = courier_store::admission::STREAM_FULL_RETRY_AFTER_SECS;
                headers.insert(header::RETRY_AFTER, HeaderValue::from(wait));
            }
            _ => {}
        }
        response
    }
}

/// Largest plain-text refusal [`json_rejections`] rewrites (axum's are one line).
const MAX_REJECTION_BYTES: usize = 4096;

/// Middleware: the refusals axum makes before a handler runs — an empty 404 (no route) or 405
/// (wrong method; `Allow` kept), a plain-text 400 (a path parameter that is not UTF-8) — get the
/// api's JSON error body, so every error a client sees has the same shape. Handlers' own
/// responses (JSON, or the web app's HTML) pass untouched.
pub async fn json_rejections(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !status.is_client_error() {
        return response;
    }
    let content_type = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let plain = match content_type {
        None => true,
        Some(mime) => mime.starts_with("text/plain"),
    };
    if !plain {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_REJECTION_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let (code, message) = match status {
        StatusCode::NOT_FOUND if text.is_empty() => ("not_found", "no such route".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "this route does not take that method (see Allow)".to_owned())
        }
        StatusCode::BAD_REQUEST => ("bad_request", text),
        _ => ("error", text),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = json!({"error": {"code": code, "message": message}});
    Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{Router, body::Body, extract::Path, http::Request, routing::get};
    use tower::ServiceExt;

    async fn call(
        method: &str,
        uri: &str,
    ) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let app = Router::new()
            .route("/things/{id}", get(|Path(id): Path<String>| async move { id }))
            .route(
                "/html",
                get(|| async {
                    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/html")], "<p>x</p>")
                }),
            )
            .layer(axum::middleware::from_fn(json_rejections));
        let request = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, headers, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    #[tokio::test]
    async fn the_routers_own_refusals_get_the_json_error_body() {
        let (status, _, body) = call("GET", "/things/%FF").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "bad_request");
        assert!(body["error"]["message"].as_str().unwrap().contains("UTF-8"), "{body}");
        let (status, _, body) = call("GET", "/nowhere").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
        let (status, headers, body) = call("DELETE", "/things/1").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body["error"]["code"], "method_not_allowed");
        assert!(headers.contains_key(header::ALLOW));
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        // Handlers' answers are left alone.
        let (status, _, body) = call("GET", "/things/a").await;
        assert_eq!((status, body), (StatusCode::OK, serde_json::Value::Null));
        let (status, headers, _) = call("GET", "/html").await;
        assert_eq!(
            (status, &headers[header::CONTENT_TYPE]),
            (StatusCode::NOT_FOUND, &HeaderValue::from_static("text/html"))
        );
    }
}
