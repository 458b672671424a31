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
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false);
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
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
