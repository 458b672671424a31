//! Request extractors that turn every malformed input into an [`ApiError`] with a JSON body.

use axum::{
    extract::{FromRequest, Request},
    http::header,
};
use serde_json::Value;

use crate::{error::ApiError, state::AppState};

/// A JSON object body: 415 unless `Content-Type` is JSON, 413 over the configured limit,
/// 400 when it does not parse.
pub struct JsonBody(pub Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        read_json(req, state.max_body_bytes).await.map(JsonBody)
    }
}

/// The request's JSON body: 415 unless `Content-Type` is JSON, 413 over `limit` bytes, 400 when
/// it does not parse.
pub async fn read_json(req: Request, limit: usize) -> Result<Value, ApiError> {
    if !has_content_type(&req, is_json) {
        return Err(ApiError::UnsupportedMediaType);
    }
    read_json_body(req, limit).await
}

/// `application/json` or `application/*+json` (lower-cased, without parameters).
pub fn is_json(mime: &str) -> bool {
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Whether the request's `Content-Type` (its media type, lower-cased) satisfies `accepts`.
pub fn has_content_type(req: &Request, accepts: impl Fn(&str) -> bool) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| accepts(&mime.trim().to_ascii_lowercase()))
}

/// The body as JSON, whatever its `Content-Type`: 413 over `limit` bytes, 400 when it does not
/// parse.
pub async fn read_json_body(req: Request, limit: usize) -> Result<Value, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit })?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|err| ApiError::MalformedJson(err.to_string()))?;
    Ok(value)
}
