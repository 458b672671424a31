//! The declarative definition of a collection, as written in `collections.yaml` and carried by
//! the operator's `Collection` resources: name, JSON Schema, access rules, indexes, tasks.
//! This is the one definition of that format and of its rules ([`CollectionSpec::validate`],
//! [`CollectionsFile::validate`]): the api, the broadcaster and the operator all check with them,
//! so what one refuses the others refuse too.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    auth::{Principal, is_valid_role_name},
    subjects::is_valid_collection_name,
    task::is_valid_task_kind,
};

/// The field recording who created a document (the creator's user id, `null` for an anonymous
/// write). Courier sets it from the access token; clients cannot.
pub const CREATED_BY: &str = "created_by";

use crate::task::Priority;

/// The whole `collections.yaml` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionsFile {
    pub collections: Vec<CollectionSpec>,
}

/// One collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionSpec {
    /// Lowercase letter first, then lowercase letters, digits or `_` (at most 64).
    pub name: String,
    /// JSON Schema (draft 2020-12) every stored document must satisfy.
    pub schema: serde_json::Value,
    #[serde(default)]
    pub access: Access,
    /// How often one writer (a signed-in user, else a client address) may write documents of
    /// this collection: `60/min`, `10/s`, `5/10s` ([`crate::rate::Rate`]). Absent: the api's
    /// default (`COURIER_WRITE_RATE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// Secondary indexes created at start-up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<IndexSpec>,
    /// Tasks enqueued (through the outbox) when documents change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskTrigger>,
    /// Whether this collection's events carry user ids (`created_by` in `data`, and `actor`)
    /// although anonymous clients may read it. Off: events of a `read: public` collection carry
    /// neither (REST reads still show `created_by`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expose_creator: bool,
}

/// Who may read and who may write a collection. Reads default to `public`, writes to
/// `authenticated`: anonymous writes happen only where a collection says `write: public`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    #[serde(default = "AccessRule::public")]
    pub read: AccessRule,
    #[serde(default = "AccessRule::authenticated")]
    pub write: AccessRule,
}

impl Default for Access {
    fn default() -> Self {
        Access { read: AccessRule::public(), write: AccessRule::authenticated() }
    }
}

/// One alternative of an access rule, written `public`, `authenticated`, `owner`,
/// `field:<name>` or `role:<name>`. A user with the `admin` role passes every rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AccessLevel {
    /// Anyone, including anonymous clients.
    Public,
    /// Only requests carrying a valid access token.
    Authenticated,
    /// Per document: its creator (`created_by`). For a create, any signed-in user (who becomes
    /// the creator).
    Owner,
    /// Per document: the user whose id this field holds, or one of the ids of this array field
    /// (sharing). The field is checked against the schema by [`CollectionSpec::validate`].
    Field(String),
    /// Only users holding this role (`role:editor`). The name is checked by
    /// [`CollectionSpec::validate`].
    Role(String),
}

impl AccessLevel {
    /// Whether this alternative is decided per document (`owner`, `field:<name>`).
    pub fn is_per_document(&self) -> bool {
        matches!(self, AccessLevel::Owner | AccessLevel::Field(_))
    }
}

/// An access rule: alternatives, any of which admits a caller (`read: [owner,
/// field:shared_with]`; a single string is a rule of one; `owner, field:shared_with` is the
/// same rule as text, the form the operator's resources use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RuleText", into = "String")]
pub struct AccessRule(Vec<AccessLevel>);

/// How a rule is written: one string (possibly comma-separated), or a list of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum RuleText {
    One(String),
    Many(Vec<String>),
}

/// Why an access rule refused a caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// Anonymous, and the rule needs a signed-in user (HTTP 401).
    #[error("authentication required: send Authorization: Bearer <access token>")]
    SignInRequired,
    /// Signed in, but the rule does not admit this user (HTTP 403).
    #[error("{0}")]
    Forbidden(String),
}

/// What a rule lets a caller at, before any document is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every document of the collection.
    All,
    /// The documents this grant admits ([`Grant::admits`]).
    Documents(Grant),
}

/// The per-document alternatives of a rule, for one signed-in user: the documents they created
/// (`owner`) and those whose `fields` hold their id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub user_id: String,
    pub owner: bool,
    pub fields: Vec<String>,
}

impl Grant {
    /// Whether the document (its api form, with `created_by`) is one of this user's.
    pub fn admits(&self, document: &serde_json::Map<String, Value>) -> bool {
        let holds = |field: &str| match document.get(field) {
            Some(Value::String(id)) => *id == self.user_id,
            Some(Value::Array(ids)) => ids.iter().any(|id| id.as_str() == Some(&self.user_id)),
            _ => false,
        };
        (self.owner && holds(CREATED_BY)) || self.fields.iter().any(|field| holds(field))
    }
}

impl AccessRule {
    pub fn public() -> Self {
        AccessRule(vec![AccessLevel::Public])
    }

    pub fn authenticated() -> Self {
        AccessRule(vec![AccessLevel::Authenticated])
    }

    /// A rule of these alternatives (at least one).
    pub fn any_of(levels: Vec<AccessLevel>) -> Self {
        assert!(!levels.is_empty(), "a rule has at least one alternative");
        AccessRule(levels)
    }

    pub fn alternatives(&self) -> &[AccessLevel] {
        &self.0
    }

    /// Whether anyone, anonymous clients included, passes it.
    pub fn is_public(&self) -> bool {
        self.0.contains(&AccessLevel::Public)
    }

    /// Whether some callers pass it only for some documents.
    pub fn is_per_document(&self) -> bool {
        self.0.iter().any(AccessLevel::is_per_document)
    }

    /// What `who` (`None`: anonymous) may reach under this rule: every document, only the
    /// documents of a [`Grant`] (per-document alternatives), or nothing (why).
    pub fn admits(&self, who: Option<&Principal<'_>>) -> Result<Scope, Denial> {
        if self.is_public() {
            return Ok(Scope::All);
        }
        let Some(who) = who else { return Err(Denial::SignInRequired) };
        if who.is_admin() {
            return Ok(Scope::All);
        }
        let mut missing_role = None;
        let mut grant = Grant { user_id: who.id.to_owned(), owner: false, fields: Vec::new() };
        for level in &self.0 {
            match level {
                AccessLevel::Public | AccessLevel::Authenticated => return Ok(Scope::All),
                AccessLevel::Role(role) if who.has_role(role) => return Ok(Scope::All),
                AccessLevel::Role(role) => missing_role = missing_role.or(Some(role)),
                AccessLevel::Owner => grant.owner = true,
                AccessLevel::Field(field) => grant.fields.push(field.clone()),
            }
        }
        if grant.owner || !grant.fields.is_empty() {
            return Ok(Scope::Documents(grant));
        }
        Err(Denial::Forbidden(match missing_role {
            Some(role) => format!("this needs the '{role}' role"),
            None => "this rule admits nobody".to_owned(),
        }))
    }

    /// Whether `who` may create `document` (its api form, `created_by` set to the creator):
    /// `owner` admits every signed-in user, `field:<name>` a document naming them there.
    pub fn admits_create(
        &self,
        who: Option<&Principal<'_>>,
        document: &serde_json::Map<String, Value>,
    ) -> Result<(), Denial> {
        match self.admits(who)? {
            Scope::Documents(grant) if !grant.owner && !grant.admits(document) => {
                Err(Denial::Forbidden(format!(
                    "a document you create must name you in {}",
                    grant.fields.join(" or ")
                )))
            }
            _ => Ok(()),
        }
    }

    /// Whether `who` may change or delete `document` (its stored api form, with `created_by`;
    /// a document without a creator, written anonymously, only admits `owner` for admins).
    pub fn admits_change(
        &self,
        who: Option<&Principal<'_>>,
        document: &serde_json::Map<String, Value>,
    ) -> Result<(), Denial> {
        match self.admits(who)? {
            Scope::Documents(grant) if !grant.admits(document) => Err(Denial::Forbidden(
                "only the document's creator, a user it names, or an admin may change or delete it"
                    .into(),
            )),
            _ => Ok(()),
        }
    }
}

impl TryFrom<RuleText> for AccessRule {
    type Error = String;

    fn try_from(text: RuleText) -> Result<Self, Self::Error> {
        let parts: Vec<String> = match text {
            RuleText::One(text) => text.split(',').map(|p| p.trim().to_owned()).collect(),
            RuleText::Many(parts) => parts,
        };
        if parts.is_empty() || parts.iter().any(String::is_empty) {
            return Err("an access rule names at least one alternative, none empty".into());
        }
        if parts.len() > MAX_ALTERNATIVES {
            return Err(format!("an access rule has at most {MAX_ALTERNATIVES} alternatives"));
        }
        let levels = parts.into_iter().map(AccessLevel::try_from).collect::<Result<_, _>>()?;
        Ok(AccessRule(levels))
    }
}

/// Most alternatives in one rule.
const MAX_ALTERNATIVES: usize = 8;

impl From<AccessRule> for String {
    fn from(rule: AccessRule) -> Self {
        rule.to_string()
    }
}

impl std::fmt::Display for AccessRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, level) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            level.fmt(f)?;
        }
        Ok(())
    }
}

impl From<AccessLevel> for AccessRule {
    fn from(level: AccessLevel) -> Self {
        AccessRule(vec![level])
    }
}

impl TryFrom<String> for AccessLevel {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        match text.as_str() {
            "public" => Ok(AccessLevel::Public),
            "authenticated" => Ok(AccessLevel::Authenticated),
            "owner" => Ok(AccessLevel::Owner),
            _ => {
                if let Some(role) = text.strip_prefix("role:") {
                    Ok(AccessLevel::Role(role.to_owned()))
                } else if let Some(field) = text.strip_prefix("field:") {
                    Ok(AccessLevel::Field(field.to_owned()))
                } else {
                    Err(format!(
                        "unknown access rule `{text}`: use public, authenticated, owner, field:<name> or role:<name>"
                    ))
                }
            }
        }
    }
}

impl From<AccessLevel> for String {
    fn from(level: AccessLevel) -> Self {
        level.to_string()
    }
}

impl std::fmt::Display for AccessLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccessLevel::Public => f.write_str("public"),
            AccessLevel::Authenticated => f.write_str("authenticated"),
            AccessLevel::Owner => f.write_str("owner"),
            AccessLevel::Field(field) => write!(f, "field:{field}"),
            AccessLevel::Role(role) => write!(f, "role:{role}"),
        }
    }
}

/// An index over top-level fields: `["species", "-age"]` (a leading `-` means descending).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexSpec {
    pub fields: Vec<String>,
    #[serde(default)]
    pub unique: bool,
}

/// A task kind to enqueue and the changes that trigger it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskTrigger {
    /// E.g. `pets.enrich`: published on `tasks.<priority>.<kind>`.
    pub kind: String,
    pub on: Vec<TriggerOn>,
    /// The line the task waits in (default `normal`).
    #[serde(default, skip_serializing_if = "Priority::is_normal")]
    pub priority: Priority,
    /// Hold the task back this long after the change (`90s`, `7d`; see [`TaskTrigger::delay`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    /// Deliver the task to this HTTP endpoint (a signed POST) instead of a built-in handler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookTarget>,
    /// Leave the task to a worker outside Courier, in any language: published on
    /// `tasks.external.<kind>` and pulled from the consumer `external-<kind>` (docs/workers.md,
    /// "External workers"). Neither a webhook nor a priority goes with it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
}

/// Where a webhook task is delivered and how it is signed (docs/workers.md, "Webhook tasks").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookTarget {
    /// `http(s)://…`; it must also match the workers' `COURIER_WEBHOOK_ALLOWED_URLS`.
    pub url: String,
    /// Absolute path of the file holding the Standard Webhooks secret (`whsec_…`; two,
    /// whitespace-separated, during a rotation). Read by the workers, never logged.
    pub secret_file: String,
    /// How long one request may take (`10s` when absent; 100ms to 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// A webhook's request timeout when `timeout` is absent.
pub const DEFAULT_WEBHOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The bounds of a webhook's `timeout`.
pub const WEBHOOK_TIMEOUT_RANGE: std::ops::RangeInclusive<std::time::Duration> =
    std::time::Duration::from_millis(100)..=std::time::Duration::from_secs(300);
/// Longest `secret_file` path.
const MAX_SECRET_PATH: usize = 1024;

impl WebhookTarget {
    /// The parsed URL, request timeout, or what is wrong with them or with `secret_file`.
    pub fn check(&self) -> Result<(url::Url, std::time::Duration), String> {
        let url = crate::webhook::check_url(&self.url)?;
        let path = std::path::Path::new(&self.secret_file);
        if !path.is_absolute() || self.secret_file.len() > MAX_SECRET_PATH {
            return Err(format!(
                "secret_file must be an absolute path (at most {MAX_SECRET_PATH} characters)"
            ));
        }
        let timeout = match &self.timeout {
            None => DEFAULT_WEBHOOK_TIMEOUT,
            Some(text) => {
                let timeout = crate::config::parse_duration(text)
                    .map_err(|problem| format!("timeout {problem}"))?;
                if !WEBHOOK_TIMEOUT_RANGE.contains(&timeout) {
                    return Err(format!("timeout '{text}' is outside 100ms..5m"));
                }
                timeout
            }
        };
        Ok((url, timeout))
    }
}

impl TaskTrigger {
    /// The parsed `delay` (`None`: at once), or why it is not one.
    pub fn delay(&self) -> Result<Option<std::time::Duration>, SpecError> {
        self.delay
            .as_deref()
            .map(|text| {
                crate::config::parse_duration(text)
                    .map_err(|problem| SpecError::InvalidDelay { kind: self.kind.clone(), problem })
            })
            .transpose()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerOn {
    Create,
    Update,
    /// The task carries the deleted document's last state (in its event).
    Delete,
}

/// Names under `/api/v1/` that belong to Courier itself.
pub const RESERVED_NAMES: [&str; 4] = ["auth", "queues", "chat", "collections"];

/// Whether `name` can be a document field used in filters, sorts and indexes.
pub fn is_valid_field_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | 'A'..='Z' | '_'))
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What is wrong with one collection definition. The message does not name the collection:
/// [`FileError::Invalid`] (and the operator's status) add that.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(
        "invalid name: use a lowercase letter, then lowercase letters, digits or '_' (at most 64)"
    )]
    InvalidName,
    #[error("the name is reserved for Courier's own endpoints ({})", RESERVED_NAMES.join(", "))]
    ReservedName,
    #[error("schema must have \"type\": \"object\" (documents are JSON objects)")]
    SchemaNotObject,
    /// The JSON Schema compiler's own message.
    #[error("schema does not compile: {0}")]
    SchemaDoesNotCompile(String),
    #[error("schema property '{0}': field names are letters, digits and '_'")]
    InvalidPropertyName(String),
    #[error("schema property 'id' is reserved: Courier assigns every document its id")]
    IdReserved,
    #[error("schema property 'created_by' is reserved: Courier records every document's creator")]
    CreatedByReserved,
    #[error(
        "access: 'role:{0}' is not a role name (a lowercase letter, then lowercase letters, digits, '_' or '-'; at most 32)"
    )]
    InvalidRole(String),
    #[error(
        "access: 'field:{0}' must name a declared property holding a user id: a string, or an array of strings"
    )]
    InvalidRuleField(String),
    /// `index` counts from 1.
    #[error("index {index}: 'fields' is empty")]
    EmptyIndex { index: usize },
    #[error("index {index}: '{field}' is not a field name ('-' prefix for descending)")]
    InvalidIndexField { index: usize, field: String },
    #[error("index {index}: field '{field}' is not declared in the schema")]
    UndeclaredIndexField { index: usize, field: String },
    #[error(
        "task kind '{0}' is invalid: dot-separated lowercase words, the first neither a priority \
         (high, normal, low) nor 'external', e.g. pets.enrich"
    )]
    InvalidTaskKind(String),
    #[error("task '{0}': 'on' lists no trigger (create, update, delete)")]
    NoTrigger(String),
    #[error("task '{kind}': delay {problem}")]
    InvalidDelay { kind: String, problem: String },
    #[error("task '{kind}': webhook {problem}")]
    InvalidWebhook { kind: String, problem: String },
    #[error("task '{0}': an external task has neither a webhook nor a priority")]
    InvalidExternal(String),
    /// The rate parser's message.
    #[error("rate: {0}")]
    InvalidRate(String),
}

/// What is wrong with a whole `collections.yaml`; the caller prefixes the file's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// Not YAML, or not this format (unknown field, unknown access level, …).
    #[error("{0}")]
    Syntax(String),
    #[error("collection '{0}' is declared twice")]
    Duplicate(String),
    /// `position` counts from 1; it names a collection whose name is empty.
    #[error("{}: {error}", describe(*.position, .name))]
    Invalid { position: usize, name: String, error: SpecError },
    /// A webhook URL outside the workers' allow-list.
    #[error(
        "collection '{collection}': task '{kind}': webhook url '{url}' is not allowed by COURIER_WEBHOOK_ALLOWED_URLS"
    )]
    WebhookNotAllowed { collection: String, kind: String, url: String },
}

fn describe(position: usize, name: &str) -> String {
    if name.is_empty() { format!("collection #{position}") } else { format!("collection '{name}'") }
}

/// The JSON type of a top-level field, from its schema (used to type query filters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Integer,
    Number,
    Boolean,
    /// Objects, arrays or anything without one clear scalar type: matched as a string.
    Other,
}

impl FieldType {
    fn of(property: &Value) -> Self {
        let types: Vec<&str> = match property.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => {
                ts.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect()
            }
            _ => vec![],
        };
        match types.as_slice() {
            ["string"] => FieldType::String,
            ["integer"] => FieldType::Integer,
            ["number"] | ["integer", "number"] | ["number", "integer"] => FieldType::Number,
            ["boolean"] => FieldType::Boolean,
            _ => FieldType::Other,
        }
    }
}

/// A top-level property the schema declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeclaredField {
    pub ty: FieldType,
    /// `readOnly` in the schema: Courier manages it, clients cannot set it.
    pub read_only: bool,
}

/// The fields of a collection, as its schema declares them: what filters, sorts and rules are
/// typed by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    /// Declared top-level properties.
    pub declared: HashMap<String, DeclaredField>,
    /// Whether documents may carry fields the schema does not declare.
    pub open: bool,
}

impl Fields {
    /// The type of a top-level field: `None` when the schema forbids undeclared fields and this
    /// one is not declared. `created_by` (every document's creator) is a string.
    pub fn field_type(&self, name: &str) -> Option<FieldType> {
        if name == CREATED_BY {
            return Some(FieldType::String);
        }
        match self.declared.get(name) {
            Some(field) => Some(field.ty),
            None if self.open => Some(FieldType::Other),
            None => None,
        }
    }
}

/// What checking a valid spec produced: the compiled schema and what it declares.
pub struct ValidSpec {
    /// Checks documents against the spec's JSON Schema.
    pub validator: jsonschema::Validator,
    pub fields: Fields,
}

impl std::fmt::Debug for ValidSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidSpec").field("fields", &self.fields).finish_non_exhaustive()
    }
}

impl CollectionSpec {
    /// The parsed `rate` (`None`: the api's default), or why it is not one.
    pub fn rate(&self) -> Result<Option<crate::rate::Rate>, SpecError> {
        self.rate.as_deref().map(|text| text.parse().map_err(SpecError::InvalidRate)).transpose()
    }

    /// Every rule a collection must satisfy: its name, access rules naming valid roles and
    /// user-id fields (`field:<name>`), a compiling `type: object` schema whose
    /// property names are field names (and not `id` or `created_by`), index fields the schema allows, valid task
    /// kinds each with at least one trigger, a well-formed `rate`.
    pub fn validate(&self) -> Result<ValidSpec, SpecError> {
        if !is_valid_collection_name(&self.name) {
            return Err(SpecError::InvalidName);
        }
        if RESERVED_NAMES.contains(&self.name.as_str()) {
            return Err(SpecError::ReservedName);
        }
        let schema = &self.schema;
        for level in self.access.read.alternatives().iter().chain(self.access.write.alternatives())
        {
            match level {
                AccessLevel::Role(role) if !is_valid_role_name(role) => {
                    return Err(SpecError::InvalidRole(role.clone()));
                }
                AccessLevel::Field(field) if !holds_user_ids(schema, field) => {
                    return Err(SpecError::InvalidRuleField(field.clone()));
                }
                _ => {}
            }
        }
        if schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err(SpecError::SchemaNotObject);
        }
        let validator = jsonschema::validator_for(schema)
            .map_err(|err| SpecError::SchemaDoesNotCompile(err.to_string()))?;
        let mut fields = HashMap::new();
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, property) in properties {
                if !is_valid_field_name(name) {
                    return Err(SpecError::InvalidPropertyName(name.clone()));
                }
                if name == "id" {
                    return Err(SpecError::IdReserved);
                }
                if name == CREATED_BY {
                    return Err(SpecError::CreatedByReserved);
                }
                let read_only = property.get("readOnly").and_then(Value::as_bool).unwrap_or(false);
                fields
                    .insert(name.clone(), DeclaredField { ty: FieldType::of(property), read_only });
            }
        }
        let open = schema.get("additionalProperties") != Some(&Value::Bool(false));
        for (i, index) in self.indexes.iter().enumerate() {
            let index_no = i + 1;
            if index.fields.is_empty() {
                return Err(SpecError::EmptyIndex { index: index_no });
            }
            for field in &index.fields {
                let name = field.strip_prefix('-').unwrap_or(field);
                if !is_valid_field_name(name) {
                    return Err(SpecError::InvalidIndexField {
                        index: index_no,
                        field: field.clone(),
                    });
                }
                if !open && !fields.contains_key(name) && name != CREATED_BY {
                    return Err(SpecError::UndeclaredIndexField {
                        index: index_no,
                        field: name.to_owned(),
                    });
                }
            }
        }
        for task in &self.tasks {
            if !is_valid_task_kind(&task.kind) {
                return Err(SpecError::InvalidTaskKind(task.kind.clone()));
            }
            if task.on.is_empty() {
                return Err(SpecError::NoTrigger(task.kind.clone()));
            }
            task.delay()?;
            if let Some(webhook) = &task.webhook {
                webhook.check().map_err(|problem| SpecError::InvalidWebhook {
                    kind: task.kind.clone(),
                    problem,
                })?;
            }
            if task.external && (task.webhook.is_some() || !task.priority.is_normal()) {
                return Err(SpecError::InvalidExternal(task.kind.clone()));
            }
        }
        self.rate()?;
        Ok(ValidSpec { validator, fields: Fields { declared: fields, open } })
    }

    /// Whether this collection's events keep user ids (`created_by`, `actor`): when anonymous
    /// clients cannot read it, or when it says `expose_creator: true`.
    pub fn events_carry_user_ids(&self) -> bool {
        self.expose_creator || !self.access.read.is_public()
    }
}

/// Whether the schema declares `field` as a user id or a list of them (what `field:<name>`
/// rules compare with the caller's id).
fn holds_user_ids(schema: &Value, field: &str) -> bool {
    let Some(property) = schema.get("properties").and_then(|p| p.get(field)) else {
        return false;
    };
    let is = |value: &Value, ty: &str| match value.get("type") {
        Some(Value::String(t)) => t == ty,
        Some(Value::Array(types)) => {
            types.iter().any(|t| t == ty) && types.iter().all(|t| t == ty || t == "null")
        }
        _ => false,
    };
    is_valid_field_name(field)
        && field != CREATED_BY
        && (is(property, "string")
            || (is(property, "array") && property.get("items").is_some_and(|i| is(i, "string"))))
}

impl CollectionsFile {
    /// Parses a `collections.yaml` text (without checking the rules: see [`Self::validate`]).
    pub fn from_yaml(text: &str) -> Result<Self, FileError> {
        yaml_serde::from_str(text).map_err(|err| FileError::Syntax(err.to_string()))
    }

    /// Checks every collection ([`CollectionSpec::validate`]) and that no name is declared
    /// twice; the results are in the file's order.
    pub fn validate(&self) -> Result<Vec<ValidSpec>, FileError> {
        let mut seen = HashSet::new();
        let mut valid = Vec::with_capacity(self.collections.len());
        for (i, spec) in self.collections.iter().enumerate() {
            if !seen.insert(spec.name.as_str()) {
                return Err(FileError::Duplicate(spec.name.clone()));
            }
            let checked = spec.validate().map_err(|error| FileError::Invalid {
                position: i + 1,
                name: spec.name.clone(),
                error,
            })?;
            valid.push(checked);
        }
        Ok(valid)
    }

    /// Every webhook task with its collection's name, in the file's order.
    pub fn webhooks(&self) -> impl Iterator<Item = (&str, &TaskTrigger, &WebhookTarget)> {
        self.collections.iter().flat_map(|spec| {
            spec.tasks.iter().filter_map(move |task| {
                task.webhook.as_ref().map(|webhook| (spec.name.as_str(), task, webhook))
            })
        })
    }

    /// Every external task's kind (`external: true`), in the file's order.
    pub fn external_kinds(&self) -> impl Iterator<Item = &str> {
        self.collections
            .iter()
            .flat_map(|spec| spec.tasks.iter().filter(|t| t.external).map(|t| t.kind.as_str()))
    }

    /// Whether every webhook URL matches `allowed` (run by the workers, which deliver them).
    /// Call after [`Self::validate`].
    pub fn check_webhooks(&self, allowed: &crate::webhook::AllowList) -> Result<(), FileError> {
        for (collection, task, webhook) in self.webhooks() {
            let permitted =
                crate::webhook::check_url(&webhook.url).is_ok_and(|url| allowed.allows(&url));
            if !permitted {
                return Err(FileError::WebhookNotAllowed {
                    collection: collection.to_owned(),
                    kind: task.kind.clone(),
                    url: webhook.url.clone(),
                });
            }
        }
        Ok(())
    }

    /// [`Self::from_yaml`] then [`Self::validate`]: what a service loading the file runs.
    pub fn load_checked(text: &str) -> Result<(Self, Vec<ValidSpec>), FileError> {
        let file = Self::from_yaml(text)?;
        let valid = file.validate()?;
        Ok((file, valid))
    }
}

/// Specs every service must refuse, shared by the tests of core, the api, the operator and the
/// broadcaster so that all of them check the same list.
#[cfg(any(test, feature = "test-fixtures"))]
pub mod fixtures {
    use serde_json::{Value, json};

    use super::CollectionSpec;

    /// One definition that breaks one rule.
    #[derive(Debug, Clone)]
    pub struct InvalidSpec {
        /// The rule it breaks, for test output.
        pub case: &'static str,
        /// The spec as JSON (it deserializes into [`CollectionSpec`]: it is well-formed, just
        /// invalid), with an explicit `name`.
        pub json: Value,
        /// The start of the [`super::SpecError`] message it must produce.
        pub problem: &'static str,
    }

    impl InvalidSpec {
        pub fn spec(&self) -> CollectionSpec {
            serde_json::from_value(self.json.clone()).expect("fixture specs are well-formed")
        }

        /// The name the spec declares.
        pub fn name(&self) -> &str {
            self.json["name"].as_str().expect("fixture specs name themselves")
        }

        /// A whole `collections.yaml` holding only this spec (JSON is YAML).
        pub fn file_text(&self) -> String {
            json!({ "collections": [self.json] }).to_string()
        }
    }

    /// The table: at least one entry per rule of [`CollectionSpec::validate`].
    pub fn invalid_specs() -> Vec<InvalidSpec> {
        let object = json!({"type": "object"});
        let closed = json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {"name": {"type": "string"}}
        });
        let mut table = vec![
            case("uppercase name", json!({"name": "Pets", "schema": object}), "invalid name"),
            case("dotted name", json!({"name": "bad.name", "schema": object}), "invalid name"),
            case("dashed name", json!({"name": "pet-shop", "schema": object}), "invalid name"),
            case("empty name", json!({"name": "", "schema": object}), "invalid name"),
            case("name of 65", json!({"name": "a".repeat(65), "schema": object}), "invalid name"),
            case(
                "array schema",
                json!({"name": "a", "schema": {"type": "array"}}),
                "schema must have \"type\": \"object\"",
            ),
            case(
                "schema without type",
                json!({"name": "a", "schema": {"properties": {}}}),
                "schema must have \"type\": \"object\"",
            ),
            case(
                "schema that is not an object",
                json!({"name": "a", "schema": true}),
                "schema must have \"type\": \"object\"",
            ),
            case(
                "nullable object schema",
                json!({"name": "a", "schema": {"type": ["object", "null"]}}),
                "schema must have \"type\": \"object\"",
            ),
            case(
                "unknown property type",
                json!({"name": "a", "schema": {"type": "object", "properties": {"x": {"type": "nope"}}}}),
                "schema does not compile",
            ),
            case(
                "negative minProperties",
                json!({"name": "a", "schema": {"type": "object", "minProperties": -1}}),
                "schema does not compile",
            ),
            case(
                "dashed property",
                json!({"name": "a", "schema": {"type": "object", "properties": {"a-b": {}}}}),
                "schema property 'a-b': field names",
            ),
            case(
                "property starting with a digit",
                json!({"name": "a", "schema": {"type": "object", "properties": {"1x": {}}}}),
                "schema property '1x': field names",
            ),
            case(
                "property id",
                json!({"name": "a", "schema": {"type": "object", "properties": {"id": {"type": "string"}}}}),
                "schema property 'id' is reserved",
            ),
            case(
                "property created_by",
                json!({"name": "a", "schema": {"type": "object", "properties": {"created_by": {"type": "string"}}}}),
                "schema property 'created_by' is reserved",
            ),
            case(
                "role with an uppercase name",
                json!({"name": "a", "schema": object, "access": {"write": "role:Editor"}}),
                "access: 'role:Editor' is not a role name",
            ),
            case(
                "role without a name",
                json!({"name": "a", "schema": object, "access": {"read": "role:"}}),
                "access: 'role:' is not a role name",
            ),
            case(
                "field rule on an undeclared field",
                json!({"name": "a", "schema": object, "access": {"read": "owner, field:shared_with"}}),
                "access: 'field:shared_with' must name a declared property",
            ),
            case(
                "field rule on a number field",
                json!({"name": "a", "schema": {"type": "object", "properties": {"n": {"type": "integer"}}}, "access": {"write": "field:n"}}),
                "access: 'field:n' must name a declared property",
            ),
            case(
                "field rule on an array of numbers",
                json!({"name": "a", "schema": {"type": "object", "properties": {"n": {"type": "array", "items": {"type": "number"}}}}, "access": {"read": "field:n"}}),
                "access: 'field:n' must name a declared property",
            ),
            case(
                "index without fields",
                json!({"name": "a", "schema": object, "indexes": [{"fields": []}]}),
                "index 1: 'fields' is empty",
            ),
            case(
                "dotted index field",
                json!({"name": "a", "schema": object, "indexes": [{"fields": ["name"]}, {"fields": ["a.b"]}]}),
                "index 2: 'a.b' is not a field name",
            ),
            case(
                "bare dash index field",
                json!({"name": "a", "schema": object, "indexes": [{"fields": ["-"]}]}),
                "index 1: '-' is not a field name",
            ),
            case(
                "index field a closed schema does not declare",
                json!({"name": "a", "schema": closed, "indexes": [{"fields": ["name", "-ghost"]}]}),
                "index 1: field 'ghost' is not declared in the schema",
            ),
            case(
                "task kind with spaces",
                json!({"name": "a", "schema": object, "tasks": [{"kind": "Do It", "on": ["create"]}]}),
                "task kind 'Do It' is invalid",
            ),
            case(
                "empty task kind",
                json!({"name": "a", "schema": object, "tasks": [{"kind": "", "on": ["create"]}]}),
                "task kind '' is invalid",
            ),
            case(
                "task kind with an empty word",
                json!({"name": "a", "schema": object, "tasks": [{"kind": "a..b", "on": ["update"]}]}),
                "task kind 'a..b' is invalid",
            ),
            case(
                "task without triggers",
                json!({"name": "a", "schema": object, "tasks": [{"kind": "a.b", "on": []}]}),
                "task 'a.b': 'on' lists no trigger",
            ),
            case(
                "task kind named like a priority",
                json!({"name": "a", "schema": object, "tasks": [{"kind": "high.b", "on": ["create"]}]}),
                "task kind 'high.b' is invalid",
            ),
            case(
                "task delay without a unit",
                json!({"name": "a", "schema": object, "tasks": [{"kind": "a.b", "on": ["create"], "delay": "soon"}]}),
                "task 'a.b': delay 'soon' is not a duration",
            ),
            case(
                "webhook url that is not http",
                json!({"name": "a", "schema": object, "tasks": [{"kind": "a.b", "on": ["delete"], "webhook": {"url": "ftp://x/", "secret_file": "/s"}}]}),
                "task 'a.b': webhook url 'ftp://x/' must start with http",
            ),
            case(
                "webhook with a relative secret file",
                json!({"name": "a", "schema": object, "tasks": [{"kind": "a.b", "on": ["create"], "webhook": {"url": "https://x/", "secret_file": "secret"}}]}),
                "task 'a.b': webhook secret_file must be an absolute path",
            ),
            case(
                "webhook timeout too long",
                json!({"name": "a", "schema": object, "tasks": [{"kind": "a.b", "on": ["create"], "webhook": {"url": "https://x/", "secret_file": "/s", "timeout": "1h"}}]}),
                "task 'a.b': webhook timeout '1h' is outside",
            ),
            case(
                "external task with a webhook",
                json!({"name": "a", "schema": object, "tasks": [{"kind": "a.b", "on": ["create"], "external": true, "webhook": {"url": "https://x/", "secret_file": "/s"}}]}),
                "task 'a.b': an external task has neither a webhook nor a priority",
            ),
            case(
                "external task with a priority",
                json!({"name": "a", "schema": object, "tasks": [{"kind": "a.b", "on": ["create"], "external": true, "priority": "high"}]}),
                "task 'a.b': an external task has neither",
            ),
            case(
                "task delay too long",
                json!({"name": "a", "schema": object, "tasks": [{"kind": "a.b", "on": ["create"], "delay": "400d"}]}),
                "task 'a.b': delay '400d' is too long",
            ),
            case(
                "rate without a period",
                json!({"name": "a", "schema": object, "rate": "60"}),
                "rate: '60' is not a rate",
            ),
            case(
                "rate of zero",
                json!({"name": "a", "schema": object, "rate": "0/min"}),
                "rate: '0/min': the count must be",
            ),
        ];
        for reserved in super::RESERVED_NAMES {
            table.push(case(
                "reserved name",
                json!({"name": reserved, "schema": object}),
                "the name is reserved",
            ));
        }
        table
    }

    fn case(case: &'static str, json: Value, problem: &'static str) -> InvalidSpec {
        InvalidSpec { case, json, problem }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{fixtures::invalid_specs, *};

    /// Which rule an error reports; exhaustive, so a new rule without a table entry fails
    /// `every_rule_has_an_entry_in_the_table`.
    fn rule(err: &SpecError) -> &'static str {
        match err {
            SpecError::InvalidName => "name",
            SpecError::ReservedName => "reserved",
            SpecError::SchemaNotObject => "object",
            SpecError::SchemaDoesNotCompile(_) => "compiles",
            SpecError::InvalidPropertyName(_) => "property",
            SpecError::IdReserved => "id",
            SpecError::CreatedByReserved => "created_by",
            SpecError::InvalidRole(_) => "role",
            SpecError::InvalidRuleField(_) => "rule field",
            SpecError::EmptyIndex { .. } => "empty index",
            SpecError::InvalidIndexField { .. } => "index field",
            SpecError::UndeclaredIndexField { .. } => "undeclared index field",
            SpecError::InvalidTaskKind(_) => "task kind",
            SpecError::NoTrigger(_) => "trigger",
            SpecError::InvalidDelay { .. } => "delay",
            SpecError::InvalidWebhook { .. } => "webhook",
            SpecError::InvalidExternal(_) => "external",
            SpecError::InvalidRate(_) => "rate",
        }
    }

    #[test]
    fn every_entry_of_the_table_is_refused_with_its_problem() {
        for entry in invalid_specs() {
            let err = entry.spec().validate().expect_err(entry.case);
            assert!(
                err.to_string().starts_with(entry.problem),
                "{}: {err} does not start with {}",
                entry.case,
                entry.problem
            );
        }
    }

    #[test]
    fn every_rule_has_an_entry_in_the_table() {
        let covered: HashSet<&str> =
            invalid_specs().iter().map(|e| rule(&e.spec().validate().unwrap_err())).collect();
        let samples = [
            SpecError::InvalidName,
            SpecError::ReservedName,
            SpecError::SchemaNotObject,
            SpecError::SchemaDoesNotCompile(String::new()),
            SpecError::InvalidPropertyName(String::new()),
            SpecError::IdReserved,
            SpecError::CreatedByReserved,
            SpecError::InvalidRole(String::new()),
            SpecError::InvalidRuleField(String::new()),
            SpecError::EmptyIndex { index: 1 },
            SpecError::InvalidIndexField { index: 1, field: String::new() },
            SpecError::UndeclaredIndexField { index: 1, field: String::new() },
            SpecError::InvalidTaskKind(String::new()),
            SpecError::NoTrigger(String::new()),
            SpecError::InvalidDelay { kind: String::new(), problem: String::new() },
            SpecError::InvalidWebhook { kind: String::new(), problem: String::new() },
            SpecError::InvalidRate(String::new()),
        ];
        for sample in samples {
            assert!(covered.contains(rule(&sample)), "no table entry breaks {:?}", sample);
        }
    }

    #[test]
    fn a_valid_spec_yields_its_fields_and_compiled_schema() {
        let spec: CollectionSpec = serde_json::from_value(json!({
            "name": "pets",
            "schema": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "name": {"type": "string"},
                    "age": {"type": ["integer", "null"]},
                    "weight": {"type": ["number", "integer"]},
                    "tags": {"type": "array"},
                    "enrichment": {"type": "object", "readOnly": true}
                },
                "required": ["name"]
            },
            "indexes": [{"fields": ["name", "-age"], "unique": true}],
            "tasks": [{"kind": "pets.enrich", "on": ["create"]}]
        }))
        .unwrap();
        let valid = spec.validate().unwrap();
        assert!(!valid.fields.open);
        let ty = |name: &str| valid.fields.declared.get(name).map(|f| f.ty);
        assert_eq!(ty("name"), Some(FieldType::String));
        assert_eq!(ty("age"), Some(FieldType::Integer));
        assert_eq!(ty("weight"), Some(FieldType::Number));
        assert_eq!(ty("tags"), Some(FieldType::Other));
        assert_eq!(ty("colour"), None);
        assert!(valid.fields.declared["enrichment"].read_only);
        assert!(!valid.fields.declared["name"].read_only);
        assert!(valid.validator.is_valid(&json!({"name": "Rex"})));
        assert!(!valid.validator.is_valid(&json!({"age": 3})));
    }

    #[test]
    fn an_open_schema_allows_indexes_on_undeclared_fields() {
        let spec: CollectionSpec = serde_json::from_value(json!({
            "name": "a", "schema": {"type": "object"}, "indexes": [{"fields": ["-anything"]}]
        }))
        .unwrap();
        assert!(spec.validate().unwrap().fields.open);
    }

    #[test]
    fn file_errors_name_the_collection_and_duplicates() {
        let file = |text: &str| CollectionsFile::load_checked(text).map(|_| ()).unwrap_err();
        assert_eq!(
            file(
                "collections: [{name: a, schema: {type: object}}, {name: a, schema: {type: object}}]"
            ),
            FileError::Duplicate("a".into())
        );
        assert_eq!(
            file("collections: [{name: a, schema: {type: object}}, {name: B, schema: {type: object}}]")
                .to_string(),
            "collection 'B': invalid name: use a lowercase letter, then lowercase letters, digits or '_' (at most 64)"
        );
        assert!(
            file("collections: [{name: '', schema: {type: object}}]")
                .to_string()
                .starts_with("collection #1: invalid name"),
        );
        assert!(matches!(
            file("collections: [{name: a, schema: {type: object}, acess: {}}]"),
            FileError::Syntax(message) if message.contains("unknown field `acess`")
        ));
        assert!(matches!(
            file("collections: [{name: a, schema: {type: object}, access: {write: admins}}]"),
            FileError::Syntax(message) if message.contains("unknown access rule `admins`")
        ));
        assert!(matches!(file("collections: {"), FileError::Syntax(_)));
    }

    #[test]
    fn a_valid_file_yields_one_result_per_collection_in_order() {
        let (file, valid) = CollectionsFile::load_checked(
            "collections:\n- {name: b, schema: {type: object, properties: {x: {type: boolean}}}}\n- {name: a, schema: {type: object}}\n",
        )
        .unwrap();
        assert_eq!(file.collections.len(), 2);
        assert_eq!(valid[0].fields.declared["x"].ty, FieldType::Boolean);
        assert!(valid[1].fields.declared.is_empty());
    }

    #[test]
    fn access_rules_read_and_write_as_their_names_with_safe_defaults() {
        let (file, _) = CollectionsFile::load_checked(
            "collections: [{name: a, schema: {type: object}}, {name: b, schema: {type: object}, expose_creator: true, access: {read: authenticated, write: role:editor}}, {name: c, schema: {type: object}, access: {write: owner}}]",
        )
        .unwrap();
        let [a, b, c] = &file.collections[..] else { panic!("three collections") };
        assert_eq!(
            a.access,
            Access { read: AccessRule::public(), write: AccessRule::authenticated() }
        );
        assert!(!a.expose_creator && b.expose_creator);
        assert_eq!(b.access.write, AccessLevel::Role("editor".into()).into());
        assert_eq!(c.access.write, AccessLevel::Owner.into());
        let json = serde_json::to_value(&b.access).unwrap();
        assert_eq!(json, json!({"read": "authenticated", "write": "role:editor"}));
    }

    #[test]
    fn a_rule_is_a_list_of_alternatives_or_the_same_as_text() {
        let (file, _) = CollectionsFile::load_checked(
            "collections:\n- {name: notes, schema: {type: object, properties: {shared_with: {type: array, items: {type: string}}, editor: {type: [string, 'null']}}}, access: {read: [owner, field:shared_with], write: 'owner, field:editor'}}\n",
        )
        .unwrap();
        let access = &file.collections[0].access;
        let expected =
            AccessRule::any_of(vec![AccessLevel::Owner, AccessLevel::Field("shared_with".into())]);
        assert_eq!(access.read, expected);
        assert!(access.read.is_per_document() && !access.read.is_public());
        let text: AccessRule = serde_json::from_value(json!("owner , field:shared_with")).unwrap();
        assert_eq!(text, expected);
        assert_eq!(serde_json::to_value(&expected).unwrap(), json!("owner, field:shared_with"));
        for bad in [json!([]), json!("owner,,public"), json!(["owner", "everyone"])] {
            assert!(serde_json::from_value::<AccessRule>(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn per_document_alternatives_grant_the_documents_that_name_the_caller() {
        let none: Vec<String> = vec![];
        let admin = vec!["admin".to_owned()];
        let ana = Principal { id: "ana", roles: &none };
        let root = Principal { id: "root", roles: &admin };
        let rule =
            AccessRule::any_of(vec![AccessLevel::Owner, AccessLevel::Field("shared_with".into())]);
        assert_eq!(rule.admits(None), Err(Denial::SignInRequired));
        assert_eq!(rule.admits(Some(&root)), Ok(Scope::All), "admins read everything");
        let Ok(Scope::Documents(grant)) = rule.admits(Some(&ana)) else { panic!("a grant") };
        let doc = |value: Value| value.as_object().unwrap().clone();
        assert!(grant.admits(&doc(json!({"created_by": "ana"}))));
        assert!(grant.admits(&doc(json!({"created_by": "bob", "shared_with": ["eve", "ana"]}))));
        assert!(!grant.admits(&doc(json!({"created_by": "bob", "shared_with": ["eve"]}))));
        assert!(!grant.admits(&doc(json!({"shared_with": "anabel"}))));
        let field_only = AccessRule::from(AccessLevel::Field("shared_with".into()));
        let sharing = doc(json!({"shared_with": ["ana"]}));
        assert_eq!(field_only.admits_create(Some(&ana), &sharing), Ok(()));
        assert!(matches!(
            field_only.admits_create(Some(&ana), &doc(json!({}))),
            Err(Denial::Forbidden(m)) if m.contains("shared_with")
        ));
        assert_eq!(rule.admits_create(Some(&ana), &doc(json!({}))), Ok(()), "owner: any creator");
    }

    #[test]
    fn rules_admit_by_sign_in_role_and_ownership_and_admins_pass_all() {
        let none: Vec<String> = vec![];
        let editor = vec!["editor".to_owned()];
        let admin = vec!["admin".to_owned()];
        let ana = Principal { id: "ana", roles: &none };
        let eve = Principal { id: "eve", roles: &editor };
        let root = Principal { id: "root", roles: &admin };
        let role = AccessRule::from(AccessLevel::Role("editor".into()));
        let authenticated = AccessRule::authenticated();
        assert_eq!(AccessRule::public().admits(None), Ok(Scope::All));
        assert_eq!(authenticated.admits(None), Err(Denial::SignInRequired));
        assert_eq!(authenticated.admits(Some(&ana)), Ok(Scope::All));
        assert_eq!(role.admits(None), Err(Denial::SignInRequired));
        assert!(
            matches!(role.admits(Some(&ana)), Err(Denial::Forbidden(m)) if m.contains("'editor'"))
        );
        assert_eq!(role.admits(Some(&eve)), Ok(Scope::All));
        assert_eq!(role.admits(Some(&root)), Ok(Scope::All), "admins pass every rule");
        let owner = AccessRule::from(AccessLevel::Owner);
        let by = |creator: Option<&str>| {
            let mut doc = serde_json::Map::new();
            if let Some(creator) = creator {
                doc.insert(CREATED_BY.into(), json!(creator));
            }
            doc
        };
        assert_eq!(owner.admits(None), Err(Denial::SignInRequired));
        assert_eq!(
            owner.admits_create(Some(&ana), &by(None)),
            Ok(()),
            "anyone signed in may create"
        );
        assert_eq!(owner.admits_change(Some(&ana), &by(Some("ana"))), Ok(()));
        assert!(matches!(
            owner.admits_change(Some(&eve), &by(Some("ana"))),
            Err(Denial::Forbidden(_))
        ));
        assert!(matches!(owner.admits_change(Some(&ana), &by(None)), Err(Denial::Forbidden(_))));
        assert_eq!(owner.admits_change(Some(&root), &by(Some("ana"))), Ok(()));
        assert_eq!(owner.admits_change(None, &by(Some("ana"))), Err(Denial::SignInRequired));
        assert_eq!(authenticated.admits_change(Some(&eve), &by(Some("ana"))), Ok(()));
    }

    #[test]
    fn an_unquoted_on_key_still_reads_as_on() {
        // YAML 1.1 readers take a bare `on` for `true`; the file format must not depend on that.
        let (file, _) = CollectionsFile::load_checked(
            "collections: [{name: a, schema: {type: object}, tasks: [{kind: a.b, on: [create]}]}]",
        )
        .unwrap();
        assert_eq!(file.collections[0].tasks[0].on, [TriggerOn::Create]);
    }

    #[test]
    fn a_rate_is_optional_and_read_as_a_rate() {
        let (file, _) = CollectionsFile::load_checked(
            "collections: [{name: a, schema: {type: object}}, {name: b, schema: {type: object}, rate: 10/s}]",
        )
        .unwrap();
        assert_eq!(file.collections[0].rate().unwrap(), None);
        let rate = file.collections[1].rate().unwrap().unwrap();
        assert_eq!((rate.count, rate.per), (10, std::time::Duration::from_secs(1)));
    }
}

#[cfg(test)]
mod webhook_tests {
    use super::*;
    use crate::webhook::AllowList;

    const FILE: &str = "collections: [{name: orders, schema: {type: object}, tasks: [{kind: orders.notify, on: [create, update, delete], webhook: {url: 'https://hooks.example.com/orders', secret_file: /etc/courier/webhooks/orders, timeout: 5s}}]}]";

    #[test]
    fn a_webhook_task_reads_with_every_trigger_and_its_timeout() {
        let (file, _) = CollectionsFile::load_checked(FILE).unwrap();
        let task = &file.collections[0].tasks[0];
        assert_eq!(task.on, [TriggerOn::Create, TriggerOn::Update, TriggerOn::Delete]);
        let webhook = task.webhook.as_ref().unwrap();
        assert_eq!(webhook.check().unwrap().1, std::time::Duration::from_secs(5));
        assert_eq!(file.webhooks().count(), 1);
    }

    #[test]
    fn a_url_outside_the_allow_list_is_refused_naming_the_collection_and_the_task() {
        let (file, _) = CollectionsFile::load_checked(FILE).unwrap();
        let err = file.check_webhooks(&AllowList::parse("https://other.example.com/").unwrap());
        assert_eq!(
            err.unwrap_err().to_string(),
            "collection 'orders': task 'orders.notify': webhook url 'https://hooks.example.com/orders' is not allowed by COURIER_WEBHOOK_ALLOWED_URLS"
        );
        assert!(file.check_webhooks(&AllowList::default()).is_err(), "empty allows none");
        assert!(file.check_webhooks(&AllowList::parse("hooks.example.com").unwrap()).is_ok());
    }
}
