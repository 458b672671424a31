//! Password rules and argon2id hashing (on the blocking pool: hashing is deliberately slow and
//! takes ~19 MiB per hash, so at most `COURIER_PASSWORD_HASH_CONCURRENCY` run at once; the rest
//! wait for a permit, which goes with the hash so a cancelled request still holds it until the
//! hash finishes).

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier},
};

use std::sync::Arc;

use tokio::sync::Semaphore;

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

/// argon2id PHC string for `password` with a fresh random salt, once `limit` gives a permit.
pub async fn hash(password: String, limit: &Arc<Semaphore>) -> anyhow::Result<String> {
    let permit = limit.clone().acquire_owned().await?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|err| anyhow::anyhow!("hashing failed: {err}"))
    })
    .await?
}

/// Whether `password` matches `phc`, once `limit` gives a permit. Malformed hashes never match.
pub async fn verify(password: String, phc: String, limit: &Arc<Semaphore>) -> bool {
    let Ok(permit) = limit.clone().acquire_owned().await else { return false };
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
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
        let limit = Arc::new(Semaphore::new(2));
        let a = hash("correct horse".into(), &limit).await.unwrap();
        let b = hash("correct horse".into(), &limit).await.unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify("correct horse".into(), a.clone(), &limit).await);
        assert!(!verify("wrong horse".into(), a, &limit).await);
        assert!(!verify("x".into(), "not a hash".into(), &limit).await);
        assert!(!verify("anything".into(), decoy_hash().to_owned(), &limit).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashes_wait_for_a_permit() {
        let limit = Arc::new(Semaphore::new(1));
        let held = limit.clone().acquire_owned().await.unwrap();
        let waiting = tokio::spawn({
            let limit = limit.clone();
            async move { hash("correct horse".into(), &limit).await }
        });
        // While the only permit is held the hash cannot start; it finishes once it is released.
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(limit.available_permits(), 0);
        drop(held);
        let phc = tokio::time::timeout(std::time::Duration::from_secs(30), waiting)
            .await
            .expect("the hash runs once the permit is free")
            .unwrap()
            .unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert_eq!(limit.available_permits(), 1, "the permit comes back after the hash");
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
