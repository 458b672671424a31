//! Access tokens shared by the api (which signs them) and the broadcaster (which verifies them):
//! JWT with HS256 from a configured secret or RS256 from a key pair. There is no built-in key:
//! a service that needs one and has none refuses to start.

use std::{fmt, path::PathBuf, time::Duration};

use clap::Args;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::config::{MAX_DURATION, duration_in, seconds_or_duration};

/// Issuer and audience of Courier's access tokens.
pub const TOKEN_ISSUER: &str = "courier";
pub const TOKEN_AUDIENCE: &str = "courier";
/// Shortest HS256 secret accepted (bytes).
pub const MIN_SECRET_LEN: usize = 32;
/// The role that passes every access rule and may use the operator endpoints (queues, dead
/// letters). Granted only by configuration (`COURIER_BOOTSTRAP_ADMIN`) or `courier-api
/// grant-role`: there is no default admin.
pub const ADMIN_ROLE: &str = "admin";

/// Whether `role` can name a role: a lowercase letter, then lowercase letters, digits, `_` or
/// `-` (at most 32). Rules name roles as `role:<name>`.
pub fn is_valid_role_name(role: &str) -> bool {
    let mut chars = role.chars();
    matches!(chars.next(), Some('a'..='z'))
        && role.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}

/// Who is asking, as access rules see them: a user id and the user's roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal<'a> {
    pub id: &'a str,
    pub roles: &'a [String],
}

impl Principal<'_> {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    pub fn is_admin(&self) -> bool {
        self.has_role(ADMIN_ROLE)
    }
}

/// A string that never appears in logs or `Debug` output.
#[derive(Clone, Default)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "<empty>" } else { "<redacted>" })
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

#[derive(Debug, Clone, Args)]
pub struct JwtArgs {
    /// HS256 signing secret (at least 32 bytes). Prefer the _FILE form in production.
    #[arg(long = "jwt-secret", env = "COURIER_JWT_SECRET", hide_env_values = true)]
    pub secret: Option<Secret>,
    /// File holding the HS256 secret.
    #[arg(long = "jwt-secret-file", env = "COURIER_JWT_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// RS256 private key (PEM) — the api signs with it.
    #[arg(long = "jwt-private-key-file", env = "COURIER_JWT_PRIVATE_KEY_FILE")]
    pub private_key_file: Option<PathBuf>,
    /// RS256 public key (PEM) — every service verifies with it.
    #[arg(long = "jwt-public-key-file", env = "COURIER_JWT_PUBLIC_KEY_FILE")]
    pub public_key_file: Option<PathBuf>,
    /// Lifetime of access tokens: `900`, `15m`, `1h` (a bare number is seconds; 1 s or more).
    #[arg(
        long = "jwt-access-ttl-secs",
        env = "COURIER_JWT_ACCESS_TTL_SECS",
        default_value = "900",
        value_parser = duration_in(seconds_or_duration, Duration::from_secs(1), MAX_DURATION)
    )]
    pub access_ttl: Duration,
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The username (for display; authorization uses `sub`).
    pub name: String,
    pub iat: u64,
    pub exp: u64,
    /// Unique token id.
    pub jti: String,
    pub iss: String,
    pub aud: String,
    /// The user's roles when the token was issued (`admin`, or any role rules name). A token
    /// without the claim carries no roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// The sign-in session (refresh-token family) the token belongs to: what
    /// `POST /api/v1/auth/logout` revokes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

impl Claims {
    /// The token's user as access rules see it.
    pub fn principal(&self) -> Principal<'_> {
        Principal { id: &self.sub, roles: &self.roles }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is invalid")]
    Invalid,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyConfigError {
    #[error(
        "no JWT key configured: set COURIER_JWT_SECRET / COURIER_JWT_SECRET_FILE (HS256) or COURIER_JWT_PUBLIC_KEY_FILE (+ COURIER_JWT_PRIVATE_KEY_FILE to sign) for RS256"
    )]
    Missing,
    #[error("the JWT secret is {0} bytes; use at least {MIN_SECRET_LEN} random bytes")]
    WeakSecret(usize),
    #[error("configure either an HS256 secret or an RS256 key pair, not both")]
    Ambiguous,
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a usable RSA PEM key: {source}")]
    BadKey { path: PathBuf, source: jsonwebtoken::errors::Error },
    #[error(
        "{private} cannot sign tokens that {public} verifies: not an RSA private key, or not the same key pair"
    )]
    KeyPairMismatch { private: PathBuf, public: PathBuf },
}

/// Signing (when configured) and verification keys.
#[derive(Clone)]
pub struct JwtKeys {
    algorithm: Algorithm,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    validation: Validation,
    pub access_ttl: Duration,
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeys")
            .field("algorithm", &self.algorithm)
            .field("can_sign", &self.encoding.is_some())
            .finish()
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, KeyConfigError> {
    std::fs::read(path).map_err(|source| KeyConfigError::Read { path: path.clone(), source })
}

impl JwtKeys {
    pub fn from_args(args: &JwtArgs) -> Result<Self, KeyConfigError> {
        let secret = match (&args.secret, &args.secret_file) {
            (Some(s), _) if !s.0.is_empty() => Some(s.0.clone().into_bytes()),
            (_, Some(path)) => {
                let mut bytes = read(path)?;
                while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
                    bytes.pop();
                }
                Some(bytes)
            }
            _ => None,
        };
        let ttl = args.access_ttl.max(Duration::from_secs(1));
        match (secret, &args.public_key_file) {
            (Some(_), Some(_)) => Err(KeyConfigError::Ambiguous),
            (Some(secret), None) => {
                if secret.len() < MIN_SECRET_LEN {
                    return Err(KeyConfigError::WeakSecret(secret.len()));
                }
                Ok(Self::hs256(&secret, ttl))
            }
            (None, Some(public)) => {
                let decoding = DecodingKey::from_rsa_pem(&read(public)?)
                    .map_err(|source| KeyConfigError::BadKey { path: public.clone(), source })?;
                let encoding = match &args.private_key_file {
                    Some(private) => {
                        Some(EncodingKey::from_rsa_pem(&read(private)?).map_err(|source| {
                            KeyConfigError::BadKey { path: private.clone(), source }
                        })?)
                    }
                    None => None,
                };
                let keys = Self::new(Algorithm::RS256, encoding, decoding, ttl);
                if let Some(private) = &args.private_key_file {
                    // A certificate passed as the private key parses, a key of another pair
                    // signs: only a round trip shows the pair works.
                    let works = keys
                        .issue("key-check", "key-check")
                        .is_some_and(|(token, _)| keys.verify(&token).is_ok());
                    if !works {
                        return Err(KeyConfigError::KeyPairMismatch {
                            private: private.clone(),
                            public: public.clone(),
                        });
                    }
                }
                Ok(keys)
            }
            (None, None) => Err(KeyConfigError::Missing),
        }
    }

    /// HS256 keys from a secret (tests and tools; services go through [`JwtKeys::from_args`]).
    pub fn hs256(secret: &[u8], access_ttl: Duration) -> Self {
        Self::new(
            Algorithm::HS256,
            Some(EncodingKey::from_secret(secret)),
            DecodingKey::from_secret(secret),
            access_ttl,
        )
    }

    fn new(
        algorithm: Algorithm,
        encoding: Option<EncodingKey>,
        decoding: DecodingKey,
        access_ttl: Duration,
    ) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[TOKEN_ISSUER]);
        validation.set_audience(&[TOKEN_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        validation.leeway = 5;
        JwtKeys { algorithm, encoding, decoding, validation, access_ttl }
    }

    /// Signs an access token for a user without roles; `None` if this service only verifies.
    pub fn issue(&self, user_id: &str, username: &str) -> Option<(String, Claims)> {
        self.issue_with_roles(user_id, username, &[])
    }

    /// Signs an access token for a user with `roles`; `None` if this service only verifies.
    pub fn issue_with_roles(
        &self,
        user_id: &str,
        username: &str,
        roles: &[String],
    ) -> Option<(String, Claims)> {
        self.issue_session(user_id, username, roles, None)
    }

    /// Signs an access token for a user with `roles` in sign-in session `sid`; `None` if this
    /// service only verifies.
    pub fn issue_session(
        &self,
        user_id: &str,
        username: &str,
        roles: &[String],
        sid: Option<&str>,
    ) -> Option<(String, Claims)> {
        let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
        let claims = Claims {
            sub: user_id.to_owned(),
            name: username.to_owned(),
            iat: now,
            exp: now + self.access_ttl.as_secs(),
            jti: uuid::Uuid::now_v7().to_string(),
            iss: TOKEN_ISSUER.to_owned(),
            aud: TOKEN_AUDIENCE.to_owned(),
            roles: roles.to_vec(),
            sid: sid.map(str::to_owned),
        };
        self.sign(&claims).map(|token| (token, claims))
    }

    /// Signs arbitrary claims (tests use it for expired or foreign tokens).
    pub fn sign(&self, claims: &Claims) -> Option<String> {
        let key = self.encoding.as_ref()?;
        jsonwebtoken::encode(&Header::new(self.algorithm), claims, key).ok()
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        jsonwebtoken::decode::<Claims>(token.as_bytes(), &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn issued_tokens_verify_and_carry_the_user() {
        let keys = JwtKeys::hs256(SECRET, Duration::from_secs(60));
        let (token, claims) = keys.issue("u1", "ana").unwrap();
        assert_eq!(keys.verify(&token), Ok(claims.clone()));
        assert_eq!((claims.sub.as_str(), claims.exp - claims.iat), ("u1", 60));
    }

    #[test]
    fn roles_travel_in_the_token_and_a_token_without_them_has_none() {
        let keys = JwtKeys::hs256(SECRET, Duration::from_secs(60));
        let (token, claims) = keys.issue_with_roles("u1", "ana", &["admin".into()]).unwrap();
        let verified = keys.verify(&token).unwrap();
        assert_eq!(verified.roles, ["admin"]);
        assert!(verified.principal().is_admin());
        assert_eq!(verified, claims);
        // A token signed before roles existed (no `roles` claim) verifies with no roles.
        let (plain, plain_claims) = keys.issue("u2", "bob").unwrap();
        let json = serde_json::to_value(&plain_claims).unwrap();
        assert!(json.get("roles").is_none(), "no roles, no claim: {json}");
        let bob = keys.verify(&plain).unwrap();
        assert!(bob.roles.is_empty() && !bob.principal().is_admin());
    }

    #[test]
    fn role_names_are_short_lowercase_words() {
        for ok in ["admin", "editor", "ops-team", "a1_b"] {
            assert!(is_valid_role_name(ok), "{ok}");
        }
        for bad in ["", "Admin", "1x", "a b", "a:b", &"a".repeat(33)] {
            assert!(!is_valid_role_name(bad), "{bad}");
        }
    }

    #[test]
    fn expired_forged_and_foreign_tokens_are_refused() {
        let keys = JwtKeys::hs256(SECRET, Duration::from_secs(60));
        let (_, mut claims) = keys.issue("u1", "ana").unwrap();
        claims.exp = claims.iat - 120;
        assert_eq!(keys.verify(&keys.sign(&claims).unwrap()), Err(TokenError::Expired));

        let other = JwtKeys::hs256(b"another secret, also 32 bytes long!", Duration::from_secs(60));
        let (foreign, _) = other.issue("u1", "ana").unwrap();
        assert_eq!(keys.verify(&foreign), Err(TokenError::Invalid));

        let (token, _) = keys.issue("u1", "ana").unwrap();
        let mut tampered = token.clone();
        tampered.insert(token.find('.').unwrap() + 5, 'x');
        assert_eq!(keys.verify(&tampered), Err(TokenError::Invalid));
        assert_eq!(keys.verify("not a token"), Err(TokenError::Invalid));

        // alg=none is never accepted.
        let unsigned =
            format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", token.split('.').nth(1).unwrap());
        assert_eq!(keys.verify(&unsigned), Err(TokenError::Invalid));
    }

    #[test]
    fn configuration_has_no_default_and_refuses_weak_or_ambiguous_keys() {
        let args = |secret: Option<&str>, public: Option<&str>| JwtArgs {
            secret: secret.map(|s| Secret(s.into())),
            secret_file: None,
            private_key_file: None,
            public_key_file: public.map(PathBuf::from),
            access_ttl: Duration::from_secs(900),
        };
        assert!(matches!(JwtKeys::from_args(&args(None, None)), Err(KeyConfigError::Missing)));
        assert!(matches!(
            JwtKeys::from_args(&args(Some("short"), None)),
            Err(KeyConfigError::WeakSecret(5))
        ));
        assert!(matches!(
            JwtKeys::from_args(&args(Some(std::str::from_utf8(SECRET).unwrap()), Some("/k.pem"))),
            Err(KeyConfigError::Ambiguous)
        ));
        assert!(
            JwtKeys::from_args(&args(Some(std::str::from_utf8(SECRET).unwrap()), None)).is_ok()
        );
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "<redacted>");
    }

    /// `testdata/`: an RSA key in the PKCS#1 form Helm's `genPrivateKey "rsa"` writes, its
    /// self-signed certificate (what the chart gives the broadcaster: Helm cannot print a bare
    /// public key), the same public key as a `PUBLIC KEY` PEM, and another key's certificate.
    fn testdata(name: &str) -> Option<PathBuf> {
        Some(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata")).join(name))
    }

    fn rs256(private: Option<&str>, public: &str) -> Result<JwtKeys, KeyConfigError> {
        JwtKeys::from_args(&JwtArgs {
            secret: None,
            secret_file: None,
            private_key_file: private.and_then(testdata),
            public_key_file: testdata(public),
            access_ttl: std::time::Duration::from_secs(900),
        })
    }

    #[test]
    fn rs256_the_api_signs_and_a_verifier_with_only_the_public_key_or_certificate_cannot() {
        let api = rs256(Some("jwt-rsa-private.pem"), "jwt-rsa-cert.pem").unwrap();
        let (token, claims) = api.issue("u1", "ana").expect("the private key signs");
        assert_eq!(jsonwebtoken::decode_header(&token).unwrap().alg, Algorithm::RS256);
        assert_eq!(api.verify(&token), Ok(claims.clone()));

        for public in ["jwt-rsa-cert.pem", "jwt-rsa-public.pem"] {
            let broadcaster = rs256(None, public).unwrap();
            assert_eq!(broadcaster.verify(&token), Ok(claims.clone()), "{public}");
            assert!(broadcaster.issue("u1", "ana").is_none(), "{public}: no key, no signing");
        }
        let stranger = rs256(None, "other-rsa-cert.pem").unwrap();
        assert_eq!(stranger.verify(&token), Err(TokenError::Invalid));

        // An HS256 token made with the public key as its secret (the classic confusion attack)
        // is refused: the algorithm is fixed by the configuration, not by the token.
        let public = std::fs::read(testdata("jwt-rsa-cert.pem").unwrap()).unwrap();
        let forged = JwtKeys::hs256(&public, Duration::from_secs(60)).issue("u1", "ana").unwrap();
        assert_eq!(
            rs256(None, "jwt-rsa-cert.pem").unwrap().verify(&forged.0),
            Err(TokenError::Invalid)
        );

        assert!(matches!(
            rs256(Some("jwt-rsa-cert.pem"), "jwt-rsa-cert.pem"),
            Err(KeyConfigError::KeyPairMismatch { .. })
        ));
        assert!(matches!(
            rs256(Some("jwt-rsa-private.pem"), "other-rsa-cert.pem"),
            Err(KeyConfigError::KeyPairMismatch { .. })
        ));
        assert!(matches!(rs256(None, "absent.pem"), Err(KeyConfigError::Read { .. })));
    }
}
