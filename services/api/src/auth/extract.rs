//! Who is calling: the `Authorization: Bearer <access token>` of a request, verified. A request
//! without the header is anonymous; one with a bad or expired token is refused (401), never
//! silently treated as anonymous.

use axum::{extract::FromRequestParts, http::request::Parts};
use courier_core::{auth::TokenError, collection_spec::AccessLevel};

use crate::{error::ApiError, state::AppState};

/// A verified user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    pub id: String,
    pub username: String,
}

/// The caller, if authenticated.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<AuthUser>);

impl Caller {
    /// The user, or 401 when `level` requires one.
    pub fn require(&self, level: AccessLevel) -> Result<Option<&AuthUser>, ApiError> {
        match (level, &self.0) {
            (AccessLevel::Authenticated, None) => Err(ApiError::Unauthorized {
                message: "authentication required: send Authorization: Bearer <access token>"
                    .into(),
                invalid_token: false,
            }),
            (_, user) => Ok(user.as_ref()),
        }
    }

    pub fn actor(&self) -> Option<String> {
        self.0.as_ref().map(|u| u.id.clone())
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            return Ok(Caller(None));
        };
        let invalid = |message: &str| ApiError::Unauthorized {
            message: message.to_owned(),
            invalid_token: true,
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid("the Authorization header must be 'Bearer <access token>'"))?;
        match state.jwt.verify(token) {
            Ok(claims) => Ok(Caller(Some(AuthUser { id: claims.sub, username: claims.name }))),
            Err(TokenError::Expired) => Err(invalid("the access token has expired; refresh it")),
            Err(TokenError::Invalid) => Err(invalid("the access token is invalid")),
        }
    }
}

/// A caller that must be authenticated (for endpoints that are never public).
#[derive(Debug, Clone)]
pub struct Authenticated(pub AuthUser);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(AccessLevel::Authenticated)?;
        Ok(Authenticated(caller.0.expect("required above")))
    }
}
