//! Who may subscribe to what: the collections' read rules (from the same `collections.yaml` the
//! api serves) and access-token verification with the api's keys. A channel of a collection
//! with `read: authenticated` needs a valid token in `subscribe`; the subscription ends when
//! that token expires.

use std::{collections::HashMap, path::Path, sync::RwLock};

use courier_core::{
    auth::{Claims, JwtKeys, TokenError},
    channel::Channel,
    collection_spec::{AccessLevel, CollectionsFile},
    protocol::error_code,
};

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("channel '{0}' requires an access token: send token in subscribe")]
    TokenRequired(String),
    #[error("the access token has expired; get a fresh one and subscribe again")]
    Expired,
    #[error("the access token is invalid")]
    Invalid,
    #[error("this broadcaster has no token keys configured, so it cannot admit '{0}'")]
    NoKeys(String),
    #[error("'{0}' is another user's channel")]
    NotYours(String),
}

impl AccessError {
    /// The `error` frame code for this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            AccessError::NotYours(_) => error_code::FORBIDDEN,
            _ => error_code::UNAUTHORIZED,
        }
    }
}

#[derive(Debug, Default)]
pub struct Access {
    /// Replaced whole when the collections file changes (see [`Access::replace_rules`]).
    read: RwLock<HashMap<String, AccessLevel>>,
    keys: Option<JwtKeys>,
}

impl Access {
    pub fn new(read: HashMap<String, AccessLevel>, keys: Option<JwtKeys>) -> Self {
        Access { read: RwLock::new(read), keys }
    }

    /// New read rules for the subscribes that follow (existing subscriptions keep running).
    pub fn replace_rules(&self, read: HashMap<String, AccessLevel>) {
        *self.read.write().expect("access rules lock poisoned") = read;
    }

    /// The collections anyone may read (what the seed-compat socket broadcasts).
    pub fn public_collections(&self) -> Vec<String> {
        let read = self.read.read().expect("access rules lock poisoned");
        read.iter()
            .filter(|(_, level)| **level == AccessLevel::Public)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Read rules from a `collections.yaml` file.
    pub fn read_rules(path: &Path) -> anyhow::Result<HashMap<String, AccessLevel>> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        let file: CollectionsFile = serde_yaml::from_str(&text)
            .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        Ok(file.collections.into_iter().map(|c| (c.name, c.access.read)).collect())
    }

    /// Admits a subscription: `Ok(None)` for a public channel, `Ok(Some(claims))` when a token
    /// was required and is valid (its `exp` bounds the subscription).
    pub fn admit(
        &self,
        channel: &Channel,
        token: Option<&str>,
    ) -> Result<Option<Claims>, AccessError> {
        // Chat rooms and user channels always need a token, whatever collections.yaml says; a
        // `user:<id>` channel is its user's alone (room membership is checked by `chat`).
        if channel.chat_room().is_some() {
            return self.authenticate(channel, token).map(Some);
        }
        if let Some(owner) = channel.user_id() {
            let claims = self.authenticate(channel, token)?;
            if claims.sub != owner {
                return Err(AccessError::NotYours(channel.name()));
            }
            return Ok(Some(claims));
        }
        let level = self
            .read
            .read()
            .expect("access rules lock poisoned")
            .get(channel.collection())
            .copied()
            .unwrap_or_default();
        if level == AccessLevel::Public {
            return Ok(None);
        }
        self.authenticate(channel, token).map(Some)
    }

    /// Verifies the access token sent for `channel`, whatever the collection's rules (chat and
    /// user channels always need one).
    fn authenticate(&self, channel: &Channel, token: Option<&str>) -> Result<Claims, AccessError> {
        let Some(keys) = &self.keys else {
            return Err(AccessError::NoKeys(channel.name()));
        };
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AccessError::TokenRequired(channel.name()))?;
        keys.verify(token).map_err(|err| match err {
            TokenError::Expired => AccessError::Expired,
            TokenError::Invalid => AccessError::Invalid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn access() -> (Access, JwtKeys) {
        let keys = JwtKeys::hs256(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        let read = HashMap::from([
            ("secrets".to_owned(), AccessLevel::Authenticated),
            ("products".to_owned(), AccessLevel::Public),
        ]);
        (Access::new(read, Some(keys.clone())), keys)
    }

    #[test]
    fn public_channels_need_nothing_and_protected_ones_a_valid_token() {
        let (access, keys) = access();
        let secrets = Channel::parse("secrets:abc").unwrap();
        assert_eq!(access.admit(&Channel::parse("products").unwrap(), None), Ok(None));
        assert_eq!(
            access.admit(&Channel::parse("unknown").unwrap(), None),
            Ok(None),
            "undeclared collections are public"
        );
        assert_eq!(
            access.admit(&secrets, None),
            Err(AccessError::TokenRequired("secrets:abc".into()))
        );
        assert_eq!(access.admit(&secrets, Some("forged")), Err(AccessError::Invalid));
        let (token, claims) = keys.issue("u1", "ana").unwrap();
        assert_eq!(access.admit(&secrets, Some(&token)), Ok(Some(claims.clone())));
        let expired = keys.sign(&Claims { exp: claims.iat - 600, ..claims.clone() }).unwrap();
        assert_eq!(access.admit(&secrets, Some(&expired)), Err(AccessError::Expired));
        // Chat and user channels need a token even though no collection declares them.
        let room = Channel::parse("chat:r1").unwrap();
        assert_eq!(access.admit(&room, None), Err(AccessError::TokenRequired("chat:r1".into())));
        assert_eq!(access.admit(&room, Some(&token)), Ok(Some(claims.clone())));
        let mine = Channel::parse("user:u1").unwrap();
        let theirs = Channel::parse("user:u2").unwrap();
        assert_eq!(access.admit(&mine, Some(&token)), Ok(Some(claims.clone())));
        assert_eq!(access.admit(&mine, None), Err(AccessError::TokenRequired("user:u1".into())));
        let refused = access.admit(&theirs, Some(&token)).unwrap_err();
        assert_eq!(refused, AccessError::NotYours("user:u2".into()));
        assert_eq!(refused.code(), error_code::FORBIDDEN);
        let no_keys =
            Access::new(HashMap::from([("secrets".to_owned(), AccessLevel::Authenticated)]), None);
        assert!(matches!(no_keys.admit(&secrets, Some(&token)), Err(AccessError::NoKeys(_))));
    }
}
