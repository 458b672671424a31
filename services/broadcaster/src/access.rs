//! Who may subscribe to what: the collections' read rules (from the same `collections.yaml` the
//! api serves) and access-token verification with the api's keys. A channel of a collection
//! with `read: authenticated` needs a valid token in `subscribe`; the subscription ends when
//! that token expires. It fails closed: a collection the file does not declare is refused,
//! unless the broadcaster runs with `--public-channels` (no file, everything public).
//! A subscription's [`View`] (its `filter`, and its reader's grant under a per-document read
//! rule) is decided here too, typed by the same file.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, RwLock},
};

use courier_core::{
    auth::{Claims, JwtKeys, TokenError},
    channel::Channel,
    collection_spec::{AccessRule, CREATED_BY, CollectionsFile, FieldType, Fields, Scope},
    filter::{FieldTypes, Filter, FilterError},
    protocol::error_code,
};

use crate::view::View;

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
    #[error("no collection '{0}' is declared on this broadcaster")]
    Undeclared(String),
    /// The subscription's `filter` is not one of the collection.
    #[error("filter: {0}")]
    BadFilter(FilterError),
}

impl AccessError {
    /// The `error` frame code for this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            AccessError::NotYours(_) | AccessError::Forbidden { .. } => error_code::FORBIDDEN,
            AccessError::Undeclared(_) => error_code::UNKNOWN_COLLECTION,
            AccessError::BadFilter(_) => error_code::BAD_FILTER,
            _ => error_code::UNAUTHORIZED,
        }
    }

    /// The field a refused filter is about.
    pub fn field(&self) -> Option<&str> {
        match self {
            AccessError::BadFilter(err) => Some(&err.field),
            _ => None,
        }
    }
}

/// One collection's read rule and the fields its filters are typed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPolicy {
    pub name: String,
    pub rule: AccessRule,
    pub fields: Fields,
    /// Whether its events carry `created_by` (so a filter may name it).
    pub events_carry_user_ids: bool,
}

impl FieldTypes for ReadPolicy {
    fn field_type(&self, field: &str) -> Option<FieldType> {
        if field == CREATED_BY && !self.events_carry_user_ids {
            return None; // its events do not say, so no event could be matched on it
        }
        self.fields.field_type(field)
    }

    fn collection_name(&self) -> &str {
        &self.name
    }
}

/// The collections' read rules: declared by a file, or (`--public-channels`) none, every
/// collection public.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadRules {
    Declared(HashMap<String, Arc<ReadPolicy>>),
    AllPublic,
}

#[derive(Debug)]
pub struct Access {
    /// Replaced whole when the collections file changes (see [`Access::replace_rules`]).
    read: RwLock<ReadRules>,
    keys: Option<JwtKeys>,
}

impl Access {
    pub fn new(read: ReadRules, keys: Option<JwtKeys>) -> Self {
        Access { read: RwLock::new(read), keys }
    }

    /// New read rules for the subscribes that follow (existing subscriptions keep running).
    pub fn replace_rules(&self, read: HashMap<String, Arc<ReadPolicy>>) {
        *self.read.write().expect("access rules lock poisoned") = ReadRules::Declared(read);
    }

    /// The declared collections anyone may read (what the seed-compat socket broadcasts; none
    /// without a collections file, where no collection is known by name).
    pub fn public_collections(&self) -> Vec<String> {
        let read = self.read.read().expect("access rules lock poisoned");
        let ReadRules::Declared(read) = &*read else { return Vec::new() };
        read.iter().filter(|(_, policy)| policy.rule.is_public()).map(|(n, _)| n.clone()).collect()
    }

    /// Read rules from a `collections.yaml` file, which must pass the same checks as in the api
    /// (`CollectionsFile::load_checked`): a file the api would refuse gives no rules here either.
    pub fn read_rules(path: &Path) -> anyhow::Result<HashMap<String, Arc<ReadPolicy>>> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        let (file, valid) = CollectionsFile::load_checked(&text)
            .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        Ok(file
            .collections
            .into_iter()
            .zip(valid)
            .map(|(spec, valid)| {
                let policy = ReadPolicy {
                    events_carry_user_ids: spec.events_carry_user_ids(),
                    name: spec.name.clone(),
                    rule: spec.access.read,
                    fields: valid.fields,
                };
                (spec.name, Arc::new(policy))
            })
            .collect())
    }

    fn policy(&self, collection: &str) -> Result<Option<Arc<ReadPolicy>>, AccessError> {
        match &*self.read.read().expect("access rules lock poisoned") {
            ReadRules::AllPublic => Ok(None),
            ReadRules::Declared(read) => read
                .get(collection)
                .cloned()
                .map(Some)
                .ok_or_else(|| AccessError::Undeclared(collection.to_owned())),
        }
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
        let rule = match self.policy(channel.collection())? {
            None => return Ok(None),
            Some(policy) if policy.rule.is_public() => return Ok(None),
            Some(policy) => policy.rule.clone(),
        };
        let claims = self.authenticate(channel, token)?;
        // The one rule (courier_core): `role:<name>` needs the role in the token; per-document
        // alternatives admit every signed-in user, to the documents of their grant (`view`).
        rule.admits(Some(&claims.principal())).map_err(|denial| AccessError::Forbidden {
            channel: channel.name(),
            reason: denial.to_string(),
        })?;
        Ok(Some(claims))
    }

    /// The view of an admitted subscription (`claims`: what [`Access::admit`] returned): its
    /// reader's grant under a per-document read rule, and its `filter`, typed by the
    /// collection's schema. `None` when neither limits what it receives.
    pub fn view(
        &self,
        channel: &Channel,
        claims: Option<&Claims>,
        filter: Option<&serde_json::Value>,
    ) -> Result<Option<View>, AccessError> {
        let refuse = |message: &str| {
            AccessError::BadFilter(FilterError { field: "filter".into(), message: message.into() })
        };
        if channel.chat_room().is_some() || channel.user_id().is_some() {
            return match filter {
                Some(_) => Err(refuse("filters apply to collection channels only")),
                None => Ok(None),
            };
        }
        let Some(policy) = self.policy(channel.collection())? else {
            return match filter {
                Some(_) => Err(refuse(
                    "this broadcaster has no collections file, so it cannot type a filter",
                )),
                None => Ok(None),
            };
        };
        let grant = match (claims, policy.rule.is_public()) {
            (Some(claims), false) => match policy.rule.admits(Some(&claims.principal())) {
                Ok(Scope::Documents(grant)) => Some(grant),
                _ => None,
            },
            _ => None,
        };
        let filter = match filter {
            Some(filter) => Filter::from_json(&*policy, filter).map_err(AccessError::BadFilter)?,
            None => Filter::default(),
        };
        Ok(View::new(grant, filter))
    }

    /// Verifies the access token sent for `channel`, whatever the collection's rules (chat and
    /// user channels always need one).
    fn authenticate(&self, channel: &Channel, token: Option<&str>) -> Result<Claims, AccessError> {
        if self.keys.is_none() {
            return Err(AccessError::NoKeys(channel.name()));
        }
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AccessError::TokenRequired(channel.name()))?;
        self.verify(token)
    }

    /// Verifies an access token (an `authenticate` frame's): valid, and not past its `exp`.
    pub fn verify(&self, token: &str) -> Result<Claims, AccessError> {
        let Some(keys) = &self.keys else {
            return Err(AccessError::NoKeys("any channel that needs a token".to_owned()));
        };
        let claims = keys.verify(token).map_err(|err| match err {
            TokenError::Expired => AccessError::Expired,
            TokenError::Invalid => AccessError::Invalid,
        })?;
        // Verification allows a few seconds of clock leeway; a subscription ends at `exp`
        // sharp, so a token already past it would admit nothing but an immediate end.
        if claims.exp <= unix_now() {
            return Err(AccessError::Expired);
        }
        Ok(claims)
    }
}

/// Seconds since the Unix epoch (token `exp` is in these).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policies(rules: &[(&str, &str)]) -> HashMap<String, Arc<ReadPolicy>> {
        rules
            .iter()
            .map(|(name, rule)| {
                let rule: AccessRule = serde_json::from_value(serde_json::json!(rule)).unwrap();
                let policy = ReadPolicy {
                    name: (*name).to_owned(),
                    events_carry_user_ids: !rule.is_public(),
                    rule,
                    fields: Fields { open: true, ..Default::default() },
                };
                ((*name).to_owned(), Arc::new(policy))
            })
            .collect()
    }

    fn access() -> (Access, JwtKeys) {
        let keys = JwtKeys::hs256(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        let read = policies(&[
            ("secrets", "authenticated"),
            ("products", "public"),
            ("drafts", "role:editor"),
            ("notes", "owner, field:shared_with"),
        ]);
        (Access::new(ReadRules::Declared(read), Some(keys.clone())), keys)
    }

    #[test]
    fn a_per_document_rule_admits_signed_in_readers_to_their_documents_only() {
        let (access, keys) = access();
        let notes = Channel::parse("notes").unwrap();
        assert_eq!(access.admit(&notes, None), Err(AccessError::TokenRequired("notes".into())));
        let (token, claims) = keys.issue("u1", "ana").unwrap();
        assert_eq!(access.admit(&notes, Some(&token)), Ok(Some(claims.clone())));
        let view = access.view(&notes, Some(&claims), None).unwrap();
        assert!(view.is_some(), "a reader of some documents has a view");
        let (_, root) = keys.issue_with_roles("u9", "root", &["admin".into()]).unwrap();
        assert_eq!(access.view(&notes, Some(&root), None), Ok(None), "admins read all");
        let products = Channel::parse("products").unwrap();
        assert_eq!(access.view(&products, None, None), Ok(None));
        let filter = serde_json::json!({"title": "x"});
        assert!(access.view(&products, None, Some(&filter)).unwrap().is_some());
        let bad = serde_json::json!({"title": {"near": 1}});
        let refused = access.view(&products, None, Some(&bad)).unwrap_err();
        assert_eq!((refused.code(), refused.field()), (error_code::BAD_FILTER, Some("title")));
        let by_creator = serde_json::json!({"created_by": "u1"});
        let refused = access.view(&products, None, Some(&by_creator)).unwrap_err();
        assert_eq!(refused.field(), Some("created_by"), "public events do not carry it");
        let room = Channel::parse("chat:r1").unwrap();
        assert!(access.view(&room, Some(&claims), Some(&filter)).is_err());
    }

    #[test]
    fn public_channels_need_nothing_and_protected_ones_a_valid_token() {
        let (access, keys) = access();
        let secrets = Channel::parse("secrets:abc").unwrap();
        assert_eq!(access.admit(&Channel::parse("products").unwrap(), None), Ok(None));
        let undeclared = access.admit(&Channel::parse("unknown:x1").unwrap(), None).unwrap_err();
        assert_eq!(undeclared, AccessError::Undeclared("unknown".into()), "fails closed");
        assert_eq!(undeclared.code(), error_code::UNKNOWN_COLLECTION);
        let (open, _) = (Access::new(ReadRules::AllPublic, None), ());
        assert_eq!(open.admit(&Channel::parse("unknown").unwrap(), None), Ok(None));
        assert!(open.public_collections().is_empty());
        assert_eq!(
            access.admit(&secrets, None),
            Err(AccessError::TokenRequired("secrets:abc".into()))
        );
        assert_eq!(access.admit(&secrets, Some("forged")), Err(AccessError::Invalid));
        let (token, claims) = keys.issue("u1", "ana").unwrap();
        assert_eq!(access.admit(&secrets, Some(&token)), Ok(Some(claims.clone())));
        let expired = keys.sign(&Claims { exp: claims.iat - 600, ..claims.clone() }).unwrap();
        assert_eq!(access.admit(&secrets, Some(&expired)), Err(AccessError::Expired));
        // Within the verifier's clock leeway, but past `exp`: refused too.
        let just_past = keys.sign(&Claims { exp: unix_now() - 1, ..claims.clone() }).unwrap();
        assert_eq!(access.admit(&secrets, Some(&just_past)), Err(AccessError::Expired));
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
            Access::new(ReadRules::Declared(policies(&[("secrets", "authenticated")])), None);
        assert!(matches!(no_keys.admit(&secrets, Some(&token)), Err(AccessError::NoKeys(_))));
    }

    #[test]
    fn rules_are_read_from_a_valid_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("collections.yaml");
        std::fs::write(&path, "collections: [{name: secrets, schema: {type: object}, access: {read: authenticated}}, {name: open, schema: {type: object}}]").unwrap();
        let rules = Access::read_rules(&path).unwrap();
        assert_eq!(rules["secrets"].rule, AccessRule::authenticated());
        assert_eq!(rules["open"].rule, AccessRule::public());
        assert_eq!(rules.len(), 2);
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
