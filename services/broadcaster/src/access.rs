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
    /// The collection's read rule names a role the token does not carry.
    #[error("channel '{channel}': {reason}")]
    Forbidden { channel: String, reason: String },
}

impl AccessError {
    /// The `error` frame code for this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            AccessError::NotYours(_) | AccessError::Forbidden { .. } => error_code::FORBIDDEN,
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

    /// Read rules from a `collections.yaml` file, which must pass the same checks as in the api
    /// (`CollectionsFile::load_checked`): a file the api would refuse gives no rules here either.
    pub fn read_rules(path: &Path) -> anyhow::Result<HashMap<String, AccessLevel>> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        let (file, _) = CollectionsFile::load_checked(&text)
            .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        Ok(file.collections.into_iter().map(|c| (c.name, c.access.read)).collect())
    }

    /// Re-reads the rules after the file changed; an invalid file is logged and the current
    /// rules kept. Returns whether the rules were replaced.
    pub fn reload_rules(&self, path: &Path) -> bool {
        match Self::read_rules(path) {
            Ok(rules) => {
                tracing::info!(file = %path.display(), collections = rules.len(), "read rules reloaded");
                self.replace_rules(rules);
                true
            }
            Err(err) => {
                tracing::error!(%err, "collections file changed but is invalid; keeping the previous read rules");
                false
            }
        }
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
            .cloned()
            .unwrap_or(AccessLevel::Public);
        if level == AccessLevel::Public {
            return Ok(None);
        }
        let claims = self.authenticate(channel, token)?;
        // The one rule (courier_core): `role:<name>` needs the role in the token.
        level.admits(Some(&claims.principal())).map_err(|denial| AccessError::Forbidden {
            channel: channel.name(),
            reason: denial.to_string(),
        })?;
        Ok(Some(claims))
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
            ("drafts".to_owned(), AccessLevel::Role("editor".into())),
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
        // A role rule needs the role in the token (admins pass).
        let drafts = Channel::parse("drafts").unwrap();
        let refused = access.admit(&drafts, Some(&token)).unwrap_err();
        assert!(matches!(&refused, AccessError::Forbidden { .. }), "{refused:?}");
        assert_eq!(refused.code(), error_code::FORBIDDEN);
        for role in ["editor", "admin"] {
            let (with_role, _) = keys.issue_with_roles("u1", "ana", &[role.into()]).unwrap();
            assert!(access.admit(&drafts, Some(&with_role)).is_ok(), "{role}");
        }
        let no_keys =
            Access::new(HashMap::from([("secrets".to_owned(), AccessLevel::Authenticated)]), None);
        assert!(matches!(no_keys.admit(&secrets, Some(&token)), Err(AccessError::NoKeys(_))));
    }

    #[test]
    fn rules_are_read_from_a_valid_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("collections.yaml");
        std::fs::write(&path, "collections: [{name: secrets, schema: {type: object}, access: {read: authenticated}}, {name: open, schema: {type: object}}]").unwrap();
        let rules = Access::read_rules(&path).unwrap();
        assert_eq!(
            rules,
            HashMap::from([
                ("secrets".to_owned(), AccessLevel::Authenticated),
                ("open".to_owned(), AccessLevel::Public),
            ])
        );
    }

    #[test]
    fn every_spec_of_the_shared_invalid_table_is_refused_at_start_and_on_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("collections.yaml");
        let (access, _) = access();
        let secrets = Channel::parse("secrets").unwrap();
        for entry in courier_core::collection_spec::fixtures::invalid_specs() {
            std::fs::write(&path, entry.file_text()).unwrap();
            let err = Access::read_rules(&path).expect_err(entry.case).to_string();
            assert!(err.starts_with(&path.display().to_string()), "{err}");
            assert!(err.contains(entry.problem), "{}: {err} lacks {}", entry.case, entry.problem);
            assert!(!access.reload_rules(&path), "{}", entry.case);
            assert_eq!(
                access.admit(&secrets, None),
                Err(AccessError::TokenRequired("secrets".into())),
                "{}: an invalid file keeps the previous rules",
                entry.case
            );
        }
        std::fs::write(&path, "collections: [{name: secrets, schema: {type: object}}]").unwrap();
        assert!(access.reload_rules(&path));
        assert_eq!(access.admit(&secrets, None), Ok(None), "a valid file replaces the rules");
    }

    #[test]
    fn duplicate_collections_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("collections.yaml");
        std::fs::write(
            &path,
            "collections: [{name: a, schema: {type: object}}, {name: a, schema: {type: object}, access: {read: authenticated}}]",
        )
        .unwrap();
        let err = Access::read_rules(&path).unwrap_err().to_string();
        assert!(err.contains("collection 'a' is declared twice"), "{err}");
    }
}
