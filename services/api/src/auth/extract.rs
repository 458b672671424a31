//! Who is calling: the `Authorization: Bearer <access token>` of a request, verified. A request
//! without the header is anonymous; one with a bad or expired token is refused (401), never
//! silently treated as anonymous. Access rules themselves are `courier_core`'s
//! ([`AccessRule::admits`]); this maps their refusals to 401 (anonymous) and 403 (signed in).

use axum::{extract::FromRequestParts, http::request::Parts};
use courier_core::{
    auth::{ADMIN_ROLE, Principal, TokenError},
    collection_spec::{AccessRule, Denial, Scope},
};

use serde_json::Value;

use crate::{error::ApiError, state::AppState};

/// A document's fields (documents are JSON objects; anything else has none).
pub fn as_object(document: &Value) -> &serde_json::Map<String, Value> {
    static EMPTY: std::sync::LazyLock<serde_json::Map<String, Value>> =
        std::sync::LazyLock::new(serde_json::Map::new);
    document.as_object().unwrap_or(&EMPTY)
}

/// A verified user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    pub id: String,
    pub username: String,
    /// The roles in the access token.
    pub roles: Vec<String>,
    /// The sign-in session (refresh-token family) of the token, if it names one.
    pub session: Option<String>,
}

impl AuthUser {
    pub fn principal(&self) -> Principal<'_> {
        Principal { id: &self.id, roles: &self.roles }
    }
}

/// The caller, if authenticated.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<AuthUser>);

/// A rule's refusal as HTTP: 401 for anonymous callers, 403 (with the reason) for users.
pub fn denied(denial: Denial) -> ApiError {
    match denial {
        Denial::SignInRequired => {
            ApiError::Unauthorized { message: denial.to_string(), invalid_token: false }
        }
        Denial::Forbidden(reason) => ApiError::Forbidden(reason),
    }
}

impl Caller {
    fn principal(&self) -> Option<Principal<'_>> {
        self.0.as_ref().map(AuthUser::principal)
    }

    /// What `rule` lets the caller reach (every document, or a grant's), or 401/403 when it
    /// admits nothing.
    pub fn require(&self, rule: &AccessRule) -> Result<Scope, ApiError> {
        rule.admits(self.principal().as_ref()).map_err(denied)
    }

    /// 401/403 unless `rule` lets the caller create `document` (its api form).
    pub fn require_create(&self, rule: &AccessRule, document: &Value) -> Result<(), ApiError> {
        rule.admits_create(self.principal().as_ref(), as_object(document)).map_err(denied)
    }

    /// 401/403 unless `rule` lets the caller change or delete `document` (as stored, with
    /// `created_by`).
    pub fn require_change(&self, rule: &AccessRule, document: &Value) -> Result<(), ApiError> {
        rule.admits_change(self.principal().as_ref(), as_object(document)).map_err(denied)
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
            Ok(claims) => Ok(Caller(Some(AuthUser {
                id: claims.sub,
                username: claims.name,
                roles: claims.roles,
                session: claims.sid,
            }))),
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
        caller.require(&AccessRule::authenticated())?;
        Ok(Authenticated(caller.0.expect("required above")))
    }
}

/// A caller with the `admin` role: 401 when anonymous, 403 for other users.
#[derive(Debug, Clone)]
pub struct Admin(pub AuthUser);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Authenticated(user) = Authenticated::from_request_parts(parts, state).await?;
        if !user.principal().is_admin() {
            return Err(ApiError::Forbidden(format!(
                "this endpoint is for users with the '{ADMIN_ROLE}' role"
            )));
        }
        Ok(Admin(user))
    }
}
