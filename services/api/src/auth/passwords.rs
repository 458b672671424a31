//! Password rules and argon2id hashing (on the blocking pool: hashing is deliberately slow).

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier},
};

use crate::error::FieldError;

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 256;
const COMMON: [&str; 12] = [
    "password",
    "password1",
    "12345678",
    "123456789",
    "1234567890",
    "qwertyuiop",
    "11111111",
    "iloveyou",
    "letmein1",
    "welcome1",
    "courier1",
    "abc12345",
];

/// Why a password is refused, if it is.
pub fn check_password(password: &str, username: &str) -> Option<FieldError> {
    let chars = password.chars().count();
    let reason = if chars < MIN_PASSWORD_CHARS {
        format!("must be at least {MIN_PASSWORD_CHARS} characters")
    } else if chars > MAX_PASSWORD_CHARS {
        format!("must be at most {MAX_PASSWORD_CHARS} characters")
    } else if password.to_lowercase() == username.to_lowercase() {
        "must differ from the username".to_owned()
    } else if COMMON.contains(&password.to_lowercase().as_str()) {
        "is too common".to_owned()
    } else if password.chars().all(|c| password.starts_with(c)) {
        "must not repeat one character".to_owned()
    } else {
        return None;
    };
    Some(FieldError { field: "password".into(), reason })
}

/// argon2id PHC string for `password` with a fresh random salt.
pub async fn hash(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|err| anyhow::anyhow!("hashing failed: {err}"))
    })
    .await?
}

/// Whether `password` matches `phc`. Malformed hashes never match.
pub async fn verify(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || {
        Argon2::default().verify_password(password.as_bytes(), phc.as_str()).is_ok()
    })
    .await
    .unwrap_or(false)
}

/// A valid hash of a random password: verified against when the user does not exist, so a
/// login takes as long for unknown users as for wrong passwords.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let random: [u8; 16] = rand::random();
        let password: String = random.iter().map(|b| format!("{b:02x}")).collect();
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verify() {
        let a = hash("correct horse".into()).await.unwrap();
        let b = hash("correct horse".into()).await.unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify("correct horse".into(), a.clone()).await);
        assert!(!verify("wrong horse".into(), a).await);
        assert!(!verify("x".into(), "not a hash".into()).await);
        assert!(!verify("anything".into(), decoy_hash().to_owned()).await);
    }

    #[test]
    fn weak_passwords_are_refused_with_a_reason() {
        assert_eq!(check_password("short", "ana").unwrap().reason, "must be at least 8 characters");
        assert_eq!(
            check_password("ana-lopez", "ANA-LOPEZ").unwrap().reason,
            "must differ from the username"
        );
        assert_eq!(check_password("Password", "ana").unwrap().reason, "is too common");
        assert_eq!(
            check_password("aaaaaaaaaa", "ana").unwrap().reason,
            "must not repeat one character"
        );
        assert_eq!(
            check_password(&"x1".repeat(200), "ana").unwrap().reason,
            "must be at most 256 characters"
        );
        assert_eq!(check_password("correct horse battery", "ana"), None);
    }
}
