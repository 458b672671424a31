//! Accounts: `/api/v1/auth/register|login|refresh|logout|logout-all|me`. Passwords are argon2id
//! hashes, access tokens short-lived JWTs carrying the user's roles and sign-in session, refresh
//! tokens single-use and rotating within a session of bounded absolute lifetime; logins are
//! rate-limited. The first admin comes from configuration ([`bootstrap`]) or `courier-api
//! grant-role`, never from a default.

use courier_store::accounts;
pub mod bootstrap;
mod extract;
mod limiter;
mod passwords;

use std::{
    net::{IpAddr, SocketAddr},
    sync::atomic::Ordering,
};

use axum::{
    Json, Router,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::json;

pub use accounts::{Accounts, is_valid_username};
pub use extract::{Admin, AuthUser, Authenticated, Caller, as_object};
pub use limiter::{LoginLimiter, LoginLimits, RateLimiter, WriteLimiter, WriteRefusal};
pub use passwords::hash as hash_password;
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
        .route("/auth/logout", post(logout))
        .route("/auth/logout-all", post(logout_all))
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

fn username_problem() -> FieldError {
    FieldError {
        field: "username".into(),
        reason: "must be 3–32 characters: letters, digits, '_', '.' or '-', starting with a letter or digit".into(),
    }
}

/// `POST /auth/register`: refused (503 `bootstrap_pending`) until the configured first admin is
/// in place; rate-limited per client address (429 past the allowance; refused
/// bodies count too, so probing costs the same), hashed under the hashing limit.
async fn register(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    if state.bootstrapped.as_ref().is_some_and(|done| !done.load(Ordering::Acquire)) {
        return Err(ApiError::BootstrapPending);
    }
    let address = client_address(&state, peer, &headers);
    state
        .register_limiter
        .admit(&address.to_string())
        .map_err(|wait| ApiError::too_many("registrations from this address", wait))?;
    let Credentials { username, password } = credentials(body)?;
    let username = username.trim().to_lowercase();
    let mut problems = Vec::new();
    if !accounts::is_valid_username(&username) {
        problems.push(username_problem());
    }
    problems.extend(passwords::check_password(&password, &username));
    if !problems.is_empty() {
        return Err(ApiError::validation("credentials", problems));
    }
    let hash = passwords::hash(password, &state.password_hashing).await?;
    let user = state
        .accounts
        .create_user(&username, hash)
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("the username '{username}' is taken")))?;
    tracing::info!(user_id = %user.id, %username, "user registered");
    Ok((StatusCode::CREATED, Json(user.public())).into_response())
}

/// The address rate limits apply to (`courier_core::client_addr`: the peer, or the
/// `X-Forwarded-For` entry the trusted proxies vouch for).
pub fn client_address(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    state.trusted_proxies.client_of(peer.ip(), headers)
}

fn token_response(
    state: &AppState,
    user: &accounts::User,
    (refresh_token, session): (String, String),
) -> Result<Response, ApiError> {
    let (access_token, _) = state
        .jwt
        .issue_session(&user.id.to_hex(), &user.username, &user.roles, Some(&session))
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
    // Only well-formed usernames become limiter keys (no user can have another kind).
    if !accounts::is_valid_username(&username) {
        return Err(ApiError::validation("credentials", vec![username_problem()]));
    }
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
    let matches = passwords::verify(password, phc, &state.password_hashing).await;
    let Some(user) = user.filter(|_| matches) else {
        let delay = state.login_limiter.failed(&username, address);
        tracing::info!(%username, %address, "login failed");
        // The guesser waits (progressive delays, when configured), not the owner.
        tokio::time::sleep(delay).await;
        return Err(ApiError::Unauthorized {
            message: "invalid username or password".into(),
            invalid_token: false,
        });
    };
    state.login_limiter.succeeded(&username, address);
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
        Ok(session) => {
            let continued = Some((session.family, session.family_expires_at));
            let next = state.accounts.issue_refresh(&session.user, continued).await?;
            token_response(&state, &session.user, next)
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

/// `POST /auth/logout`: revokes one sign-in session, so its refresh token no longer works. The
/// session is the one of the body's `{"refresh_token"}` (its possession is proof enough; with an
/// access token as well, both must be the same user's), else the one the access token names.
/// The access token itself stays valid until it expires (at most the access lifetime). 204.
async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let bad_body = || {
        ApiError::validation(
            "logout",
            vec![FieldError {
                field: "refresh_token".into(),
                reason: "must be a string (or send no body)".into(),
            }],
        )
    };
    let sent = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let request: RefreshRequest = serde_json::from_slice(&body).map_err(|_| bad_body())?;
        Some(request.refresh_token)
    };
    let user = caller.0.as_ref();
    let session = match (sent, user) {
        (Some(token), _) => match state.accounts.session_of(&token).await? {
            Some((_, owner)) if user.is_some_and(|u| u.id != owner) => {
                return Err(ApiError::Forbidden(
                    "this refresh token belongs to another user".into(),
                ));
            }
            Some((family, _)) => Some(family),
            // Unknown or already revoked: nothing left to end.
            None => None,
        },
        (None, Some(user)) => match &user.session {
            Some(session) => Some(session.clone()),
            None => {
                return Err(ApiError::BadRequest(
                    "this access token names no session: send {\"refresh_token\"} or use /api/v1/auth/logout-all".into(),
                ));
            }
        },
        (None, None) => {
            return Err(ApiError::Unauthorized {
                message:
                    "send the session's refresh token ({\"refresh_token\"}) or an access token"
                        .into(),
                invalid_token: false,
            });
        }
    };
    let revoked = match session {
        Some(session) => state.accounts.revoke_family(&session).await?,
        None => 0,
    };
    tracing::info!(user_id = ?user.map(|u| &u.id), revoked, "logout");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /auth/logout-all`: revokes every sign-in session of the caller. 204.
async fn logout_all(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
) -> Result<StatusCode, ApiError> {
    let revoked = state.accounts.revoke_all(&user.id).await?;
    tracing::info!(user_id = %user.id, revoked, "logout from every session");
    Ok(StatusCode::NO_CONTENT)
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
