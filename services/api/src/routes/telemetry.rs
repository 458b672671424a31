//! `POST /api/v1/telemetry/web`: the web app's observations from the browser
//! (`crate::web_telemetry` says what they are and how they stay bounded). Anonymous, limited per
//! client address, 204 when recorded; 404 when `COURIER_WEB_TELEMETRY=false`. The body is JSON
//! sent as `application/json` or as `text/plain` (what `navigator.sendBeacon` sends a string as,
//! the one type it sends everywhere without a CORS preflight).

use std::net::SocketAddr;

use axum::{
    Router,
    extract::{ConnectInfo, Request, State},
    http::StatusCode,
    routing::post,
};

use crate::{
    error::ApiError,
    extract::{has_content_type, is_json, read_json_body},
    state::AppState,
    web_telemetry::{self, MAX_REPORT_BYTES},
};

pub fn router() -> Router<AppState> {
    Router::new().route("/telemetry/web", post(report))
}

async fn report(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Result<StatusCode, ApiError> {
    let Some(telemetry) = state.web_telemetry.clone() else {
        return Err(ApiError::NotFound(
            "web telemetry is turned off here (COURIER_WEB_TELEMETRY=false)".into(),
        ));
    };
    let client = crate::auth::client_address(&state, peer, request.headers());
    telemetry
        .admit(&client.to_string())
        .map_err(|wait| ApiError::too_many("telemetry reports", wait))?;
    let accepted = |mime: &str| is_json(mime) || mime == "text/plain";
    if !has_content_type(&request, accepted) {
        telemetry.refused("invalid");
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = read_json_body(request, MAX_REPORT_BYTES)
        .await
        .inspect_err(|_| telemetry.refused("invalid"))?;
    let report = web_telemetry::parse(&body).map_err(|fields| {
        telemetry.refused("invalid");
        ApiError::validation("telemetry report", fields)
    })?;
    let routes = telemetry.routes_for(&state.collections.current());
    telemetry.record(report, &routes);
    Ok(StatusCode::NO_CONTENT)
}
