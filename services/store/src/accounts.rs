//! Users (with their roles) and refresh tokens in MongoDB (`_users`, `_refresh_tokens`). Refresh
//! tokens are random, stored only as SHA-256 digests, single use, and rotate within a family (one
//! sign-in session): presenting a used one revokes the whole family (the token was stolen or
//! replayed). A family lives at most the absolute lifetime from its login, however often it
//! rotates; logout revokes one family, logout-all every family of the user. Every read carries
//! the store's `maxTimeMS` (`COURIER_MONGODB_QUERY_TIMEOUT`), as the store's other queries do.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use mongodb::{
    Collection, IndexModel,
    bson::{self, doc, oid::ObjectId},
    options::{IndexOptions, ReturnDocument},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Store, is_duplicate_key};

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
    /// `admin` and whatever roles collection rules name; none unless granted.
    #[serde(default)]
    pub roles: Vec<String>,
}

impl User {
    pub fn public(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id.to_hex(),
            "username": self.username,
            "roles": self.roles,
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
    /// The family's absolute end (its login plus the absolute lifetime); absent on tokens
    /// issued before it existed (their family then ends one absolute lifetime after the next
    /// rotation).
    #[serde(default)]
    family_expires_at: Option<bson::DateTime>,
    used_at: Option<bson::DateTime>,
}

/// A continued sign-in session: the user, its family, and the family's absolute end.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub family: String,
    pub family_expires_at: bson::DateTime,
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
    absolute_ttl: std::time::Duration,
    /// `maxTimeMS` of every query.
    query_timeout: std::time::Duration,
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
    /// `refresh_ttl` is each token's sliding lifetime, `absolute_ttl` its family's.
    pub fn new(
        store: &Store,
        refresh_ttl: std::time::Duration,
        absolute_ttl: std::time::Duration,
    ) -> Self {
        Accounts {
            users: store.collection(USERS).clone_with_type(),
            tokens: store.collection(REFRESH_TOKENS).clone_with_type(),
            refresh_ttl,
            absolute_ttl,
            query_timeout: store.query_timeout(),
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
        let user = IndexOptions::builder().name("user".to_owned()).build();
        self.tokens
            .create_index(IndexModel::builder().keys(doc! {"user_id": 1}).options(user).build())
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
            roles: Vec::new(),
        };
        match self.users.insert_one(&user).await {
            Ok(_) => Ok(Some(user)),
            Err(err) if is_duplicate_key(&err) => Ok(None),
            Err(err) => Err(err),
        }
    }

    pub async fn find_by_username(&self, username: &str) -> mongodb::error::Result<Option<User>> {
        self.users.find_one(doc! {"username": username}).max_time(self.query_timeout).await
    }

    pub async fn find_by_id(&self, id: &str) -> mongodb::error::Result<Option<User>> {
        let Ok(oid) = ObjectId::parse_str(id) else { return Ok(None) };
        self.users.find_one(doc! {"_id": oid}).max_time(self.query_timeout).await
    }

    /// Adds `role` to the user named `username`: the updated user, `None` if there is none.
    /// It shows in the user's access tokens from the next login or refresh.
    pub async fn grant_role(
        &self,
        username: &str,
        role: &str,
    ) -> mongodb::error::Result<Option<User>> {
        self.users
            .find_one_and_update(doc! {"username": username}, doc! {"$addToSet": {"roles": role}})
            .return_document(ReturnDocument::After)
            .max_time(self.query_timeout)
            .await
    }

    /// A new refresh token for `user`: in a new family at login (`None`), or continuing
    /// `session`'s family (a rotation keeps the family's absolute end). The token and its family.
    pub async fn issue_refresh(
        &self,
        user: &User,
        session: Option<(String, bson::DateTime)>,
    ) -> mongodb::error::Result<(String, String)> {
        let bytes: [u8; 32] = rand::random();
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let now = bson::DateTime::now();
        let after = |ttl: std::time::Duration| {
            bson::DateTime::from_millis(
                now.timestamp_millis()
                    .saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
            )
        };
        let (family, family_expires_at) = session.unwrap_or_else(|| {
            (uuid::Uuid::now_v7().simple().to_string(), after(self.absolute_ttl))
        });
        let record = RefreshToken {
            digest: digest(&token),
            user_id: user.id,
            family: family.clone(),
            created_at: now,
            expires_at: after(self.refresh_ttl).min(family_expires_at),
            family_expires_at: Some(family_expires_at),
            used_at: None,
        };
        self.tokens.insert_one(&record).await?;
        Ok((token, family))
    }

    /// Uses a refresh token once: the session to continue, or why not.
    pub async fn use_refresh(
        &self,
        token: &str,
    ) -> mongodb::error::Result<Result<Session, RefreshRefusal>> {
        let digest = digest(token);
        let now = bson::DateTime::now();
        let claimed = self
            .tokens
            .find_one_and_update(
                doc! {"_id": &digest, "used_at": null},
                doc! {"$set": {"used_at": now}},
            )
            .return_document(ReturnDocument::Before)
            .max_time(self.query_timeout)
            .await?;
        let Some(record) = claimed else {
            return Ok(Err(
                match self
                    .tokens
                    .find_one(doc! {"_id": &digest})
                    .max_time(self.query_timeout)
                    .await?
                {
                    Some(used) => {
                        let revoked = self.revoke_family(&used.family).await?;
                        tracing::warn!(user_id = %used.user_id, revoked, "refresh token reused; its family is revoked");
                        RefreshRefusal::Reused
                    }
                    None => RefreshRefusal::Unknown,
                },
            ));
        };
        let family_expires_at =
            record.family_expires_at.unwrap_or_else(|| {
                bson::DateTime::from_millis(now.timestamp_millis().saturating_add(
                    i64::try_from(self.absolute_ttl.as_millis()).unwrap_or(i64::MAX),
                ))
            });
        if record.expires_at < now || family_expires_at < now {
            return Ok(Err(RefreshRefusal::Expired));
        }
        match self.users.find_one(doc! {"_id": record.user_id}).max_time(self.query_timeout).await?
        {
            Some(user) => Ok(Ok(Session { user, family: record.family, family_expires_at })),
            None => Ok(Err(RefreshRefusal::Unknown)),
        }
    }

    /// Revokes one sign-in session (every refresh token of `family`): how many were removed.
    pub async fn revoke_family(&self, family: &str) -> mongodb::error::Result<u64> {
        Ok(self.tokens.delete_many(doc! {"family": family}).await?.deleted_count)
    }

    /// The session (family) and user of a refresh token, used or not; `None` if unknown.
    pub async fn session_of(
        &self,
        token: &str,
    ) -> mongodb::error::Result<Option<(String, String)>> {
        let record =
            self.tokens.find_one(doc! {"_id": digest(token)}).max_time(self.query_timeout).await?;
        Ok(record.map(|r| (r.family, r.user_id.to_hex())))
    }

    /// Revokes every sign-in session of `user_id`: how many refresh tokens were removed.
    pub async fn revoke_all(&self, user_id: &str) -> mongodb::error::Result<u64> {
        let Ok(user) = ObjectId::parse_str(user_id) else { return Ok(0) };
        Ok(self.tokens.delete_many(doc! {"user_id": user}).await?.deleted_count)
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
