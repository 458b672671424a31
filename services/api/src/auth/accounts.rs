//! Users and refresh tokens in MongoDB (`_users`, `_refresh_tokens`). Refresh tokens are random,
//! stored only as SHA-256 digests, single use, and rotate within a family: presenting a used
//! one revokes the whole family (the token was stolen or replayed).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use mongodb::{
    Collection, IndexModel,
    bson::{self, doc, oid::ObjectId},
    options::{IndexOptions, ReturnDocument},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use courier_store::{Store, is_duplicate_key};

pub const USERS: &str = "_users";
pub const REFRESH_TOKENS: &str = "_refresh_tokens";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Lowercase; unique.
    pub username: String,
    pub password_hash: String,
    pub created_at: bson::DateTime,
}

impl User {
    pub fn public(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id.to_hex(),
            "username": self.username,
            "created_at": self.created_at.try_to_rfc3339_string().unwrap_or_default(),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RefreshToken {
    /// SHA-256 of the token, hex.
    #[serde(rename = "_id")]
    digest: String,
    user_id: ObjectId,
    family: String,
    created_at: bson::DateTime,
    expires_at: bson::DateTime,
    used_at: Option<bson::DateTime>,
}

/// Why a refresh token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshRefusal {
    Unknown,
    Expired,
    /// Already used: the family has been revoked.
    Reused,
}

#[derive(Clone)]
pub struct Accounts {
    users: Collection<User>,
    tokens: Collection<RefreshToken>,
    refresh_ttl: std::time::Duration,
}

/// Whether `username` is acceptable: 3–32 of lowercase letters, digits, `_`, `.`, `-`,
/// starting with a letter or digit (input is lowercased first).
pub fn is_valid_username(username: &str) -> bool {
    (3..=32).contains(&username.len())
        && username.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && username
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
}

fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl Accounts {
    pub fn new(store: &Store, refresh_ttl: std::time::Duration) -> Self {
        Accounts {
            users: store.collection(USERS).clone_with_type(),
            tokens: store.collection(REFRESH_TOKENS).clone_with_type(),
            refresh_ttl,
        }
    }

    pub async fn ensure_indexes(&self) -> mongodb::error::Result<()> {
        let unique =
            IndexOptions::builder().unique(true).name("username_unique".to_owned()).build();
        self.users
            .create_index(IndexModel::builder().keys(doc! {"username": 1}).options(unique).build())
            .await?;
        let family = IndexOptions::builder().name("family".to_owned()).build();
        self.tokens
            .create_index(IndexModel::builder().keys(doc! {"family": 1}).options(family).build())
            .await?;
        let ttl = IndexOptions::builder()
            .name("expiry".to_owned())
            .expire_after(std::time::Duration::ZERO)
            .build();
        self.tokens
            .create_index(IndexModel::builder().keys(doc! {"expires_at": 1}).options(ttl).build())
            .await?;
        Ok(())
    }

    /// Creates a user; `Ok(None)` if the username is taken.
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: String,
    ) -> mongodb::error::Result<Option<User>> {
        let user = User {
            id: ObjectId::new(),
            username: username.to_owned(),
            password_hash,
            created_at: bson::DateTime::now(),
        };
        match self.users.insert_one(&user).await {
            Ok(_) => Ok(Some(user)),
            Err(err) if is_duplicate_key(&err) => Ok(None),
            Err(err) => Err(err),
        }
    }

    pub async fn find_by_username(&self, username: &str) -> mongodb::error::Result<Option<User>> {
        self.users.find_one(doc! {"username": username}).await
    }

    pub async fn find_by_id(&self, id: &str) -> mongodb::error::Result<Option<User>> {
        let Ok(oid) = ObjectId::parse_str(id) else { return Ok(None) };
        self.users.find_one(doc! {"_id": oid}).await
    }

    /// A new refresh token for `user` in `family` (a new family at login).
    pub async fn issue_refresh(
        &self,
        user: &User,
        family: Option<String>,
    ) -> mongodb::error::Result<String> {
        let bytes: [u8; 32] = rand::random();
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let now = bson::DateTime::now();
        let expires_at = bson::DateTime::from_millis(
            now.timestamp_millis() + self.refresh_ttl.as_millis() as i64,
        );
        let record = RefreshToken {
            digest: digest(&token),
            user_id: user.id,
            family: family.unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string()),
            created_at: now,
            expires_at,
            used_at: None,
        };
        self.tokens.insert_one(&record).await?;
        Ok(token)
    }

    /// Uses a refresh token once: the user and the family to continue, or why not.
    pub async fn use_refresh(
        &self,
        token: &str,
    ) -> mongodb::error::Result<Result<(User, String), RefreshRefusal>> {
        let digest = digest(token);
        let now = bson::DateTime::now();
        let claimed = self
            .tokens
            .find_one_and_update(
                doc! {"_id": &digest, "used_at": null},
                doc! {"$set": {"used_at": now}},
            )
            .return_document(ReturnDocument::Before)
            .await?;
        let Some(record) = claimed else {
            return Ok(Err(match self.tokens.find_one(doc! {"_id": &digest}).await? {
                Some(used) => {
                    let revoked =
                        self.tokens.delete_many(doc! {"family": &used.family}).await?.deleted_count;
                    tracing::warn!(user_id = %used.user_id, revoked, "refresh token reused; its family is revoked");
                    RefreshRefusal::Reused
                }
                None => RefreshRefusal::Unknown,
            }));
        };
        if record.expires_at < now {
            return Ok(Err(RefreshRefusal::Expired));
        }
        match self.users.find_one(doc! {"_id": record.user_id}).await? {
            Some(user) => Ok(Ok((user, record.family))),
            None => Ok(Err(RefreshRefusal::Unknown)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_short_lowercase_words() {
        for ok in ["ana", "ana.lopez", "a_1-b", "007"] {
            assert!(is_valid_username(ok), "{ok}");
        }
        for bad in ["", "ab", "Ana", "-ana", "ana lopez", "ana@x", &"a".repeat(33)] {
            assert!(!is_valid_username(bad), "{bad}");
        }
    }

    #[test]
    fn refresh_tokens_are_stored_as_digests() {
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
