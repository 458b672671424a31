//! Accounts: `/api/v1/auth/register|login|refresh|me`. Passwords are argon2id hashes, access
//! tokens short-lived JWTs, refresh tokens single-use and rotating; logins are rate-limited.

mod accounts;
mod extract;
mod limiter;
mod passwords;

use std::net::{IpAddr, SocketAddr};

use axum::{
    Json, Router,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::json;

pub use accounts::Accounts;
pub use extract::{AuthUser, Authenticated, Caller};
pub use limiter::{LoginLimiter, RateLimiter};
pub use passwords::{MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS};

use crate::{
    error::{ApiError, FieldError},
    extract::JsonBody,
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/register", post(register))
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/me", get(me))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    username: String,
    password: String,
}

/// Parses `{username, password}` with 422s that name the field.
fn credentials(body: serde_json::Value) -> Result<Credentials, ApiError> {
    let mut missing = Vec::new();
    for field in ["username", "password"] {
        if !body.get(field).is_some_and(|v| v.is_string()) {
            missing.push(FieldError {
                field: field.into(),
                reason: "is required and must be a string".into(),
            });
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::validation("credentials", missing));
    }
    serde_json::from_value(body).map_err(|err| {
        ApiError::validation(
            "credentials",
            vec![FieldError { field: "(document)".into(), reason: err.to_string() }],
        )
    })
}

async fn register(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let Credentials { username, password } = credentials(body)?;
    let username = username.trim().to_lowercase();
    let mut problems = Vec::new();
    if !accounts::is_valid_username(&username) {
        problems.push(FieldError {
            field: "username".into(),
            reason: "must be 3–32 characters: letters, digits, '_', '.' or '-', starting with a letter or digit".into(),
        });
    }
    problems.extend(passwords::check_password(&password, &username));
    if !problems.is_empty() {
        return Err(ApiError::validation("credentials", problems));
    }
    let hash = passwords::hash(password).await?;
    let user = state
        .accounts
        .create_user(&username, hash)
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("the username '{username}' is taken")))?;
    tracing::info!(user_id = %user.id, %username, "user registered");
    Ok((StatusCode::CREATED, Json(user.public())).into_response())
}

/// The address rate limits apply to: the peer, or the first `X-Forwarded-For` hop when the
/// api is configured to trust its proxy.
fn client_address(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    if state.trust_forwarded_for
        && let Some(forwarded) = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok())
        && let Some(first) = forwarded.split(',').next().and_then(|a| a.trim().parse().ok())
    {
        return first;
    }
    peer.ip()
}

fn token_response(
    state: &AppState,
    user: &accounts::User,
    refresh_token: String,
) -> Result<Response, ApiError> {
    let (access_token, _) = state
        .jwt
        .issue(&user.id.to_hex(), &user.username)
        .ok_or_else(|| anyhow::anyhow!("this api has no JWT signing key"))?;
    Ok(Json(json!({
        "access_token": access_token,
        "refresh_token": refresh_token,
        "token_type": "Bearer",
        "expires_in": state.jwt.access_ttl.as_secs(),
    }))
    .into_response())
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let Credentials { username, password } = credentials(body)?;
    let username = username.trim().to_lowercase();
    let address = client_address(&state, peer, &headers);
    state
        .login_limiter
        .admit(&username, address)
        .map_err(|wait| ApiError::too_many("login attempts", wait))?;

    let user = state.accounts.find_by_username(&username).await?;
    // Verify against a decoy when the user is unknown: same work, same answer, same time.
    let phc = user
        .as_ref()
        .map_or_else(|| passwords::decoy_hash().to_owned(), |u| u.password_hash.clone());
    let matches = passwords::verify(password, phc).await;
    let Some(user) = user.filter(|_| matches) else {
        state.login_limiter.failed(&username);
        tracing::info!(%username, %address, "login failed");
        return Err(ApiError::Unauthorized {
            message: "invalid username or password".into(),
            invalid_token: false,
        });
    };
    state.login_limiter.succeeded(&username);
    let refresh_token = state.accounts.issue_refresh(&user, None).await?;
    tracing::info!(user_id = %user.id, "login");
    token_response(&state, &user, refresh_token)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    refresh_token: String,
}

async fn refresh(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let RefreshRequest { refresh_token } = serde_json::from_value(body).map_err(|_| {
        ApiError::validation(
            "refresh",
            vec![FieldError {
                field: "refresh_token".into(),
                reason: "is required and must be a string".into(),
            }],
        )
    })?;
    let refused =
        |message: &str| ApiError::Unauthorized { message: message.to_owned(), invalid_token: true };
    match state.accounts.use_refresh(&refresh_token).await? {
        Ok((user, family)) => {
            let next = state.accounts.issue_refresh(&user, Some(family)).await?;
            token_response(&state, &user, next)
        }
        Err(accounts::RefreshRefusal::Reused) => Err(refused(
            "this refresh token was already used; every session it belongs to is signed out — log in again",
        )),
        Err(accounts::RefreshRefusal::Expired) => {
            Err(refused("the refresh token has expired; log in again"))
        }
        Err(accounts::RefreshRefusal::Unknown) => Err(refused("the refresh token is invalid")),
    }
}

async fn me(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
) -> Result<Json<serde_json::Value>, ApiError> {
    let stored =
        state.accounts.find_by_id(&user.id).await?.ok_or_else(|| ApiError::Unauthorized {
            message: "this account no longer exists".into(),
            invalid_token: true,
        })?;
    Ok(Json(stored.public()))
}
