//! `POST /api/v1/telemetry/web`: the web app's observations from the browser
//! (`crate::web_telemetry` says what they are and how they stay bounded). Anonymous, limited per
//! client address, 204 when recorded; 404 when `COURIER_WEB_TELEMETRY=false`. The body is JSON
//! sent as `application/json` or as `text/plain` (what `navigator.sendBeacon` sends a string as,
//! the one type it sends everywhere without a CORS preflight).

use std::net::SocketAddr;

use axum::{
    Router,
    extract::{ConnectInfo, Request, State},
    http::{HeaderValue, StatusCode, header},
    routing::post,
};

use crate::{
    error::ApiError,
    extract::read_json,
    state::AppState,
    web_telemetry::{self, MAX_REPORT_BYTES},
};

pub fn router() -> Router<AppState> {
    Router::new().route("/telemetry/web", post(report))
}

async fn report(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
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
    let plain_text = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("text/plain"));
    if plain_text {
        request
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    let body =
        read_json(request, MAX_REPORT_BYTES).await.inspect_err(|_| telemetry.refused("invalid"))?;
    let report = web_telemetry::parse(&body).map_err(|fields| {
        telemetry.refused("invalid");
        ApiError::validation("telemetry report", fields)
    })?;
    let routes = web_telemetry::routes_of(&crate::openapi::document(&state.collections.current()));
    telemetry.record(report, &routes);
    Ok(StatusCode::NO_CONTENT)
}
