//! The declarative definition of a collection, as written in `collections.yaml` and carried by
//! the operator's `Collection` resources: name, JSON Schema, access rules, indexes, tasks.
//! This is the one definition of that format; the api loads it and the operator renders it.

use serde::{Deserialize, Serialize};

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
    /// Secondary indexes created at start-up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<IndexSpec>,
    /// Tasks enqueued (through the outbox) when documents change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskTrigger>,
}

/// Who may read and who may write a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    #[serde(default)]
    pub read: AccessLevel,
    #[serde(default)]
    pub write: AccessLevel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLevel {
    /// Anyone, including anonymous clients.
    #[default]
    Public,
    /// Only requests carrying a valid access token.
    Authenticated,
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
}

impl TaskTrigger {
    /// The parsed `delay` (`None`: at once), or why it is not one.
    pub fn delay(&self) -> Result<Option<std::time::Duration>, String> {
        self.delay
            .as_deref()
            .map(|text| {
                crate::task::parse_delay(text).map_err(|err| format!("task '{}': {err}", self.kind))
            })
            .transpose()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerOn {
    Create,
    Update,
}
