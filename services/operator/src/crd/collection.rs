//! The `Collection` custom resource (`courier.dev/v1alpha1`): one collection definition (JSON
//! Schema, access, indexes, tasks), convertible to and from the `collections.yaml` entry
//! (`courier_core::collection_spec::CollectionSpec`) the api loads.

use courier_core::{
    Priority,
    collection_spec::{self as core, CollectionSpec as CoreSpec},
};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A collection the api serves, mirrored field for field from `collections.yaml`.
// clippy reads repeated `type_ = …` keys across `printcolumn(…)` groups as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "courier.dev",
    version = "v1alpha1",
    kind = "Collection",
    namespaced,
    status = "CollectionStatus",
    shortname = "coll",
    category = "courier",
    derive = "PartialEq",
    doc = "A collection definition served by Courier's api (JSON Schema, access, indexes, tasks).",
    printcolumn(name = "Collection", type_ = "string", json_path = ".spec.name"),
    printcolumn(name = "Accepted", type_ = "boolean", json_path = ".status.accepted"),
    printcolumn(name = "Message", type_ = "string", json_path = ".status.message", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct CollectionDefinition {
    /// Collection name (lowercase letter first, then lowercase letters, digits or `_`).
    /// Absent: the resource's `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]{0,63}$"))]
    pub name: Option<String>,
    /// JSON Schema (draft 2020-12) every stored document must satisfy.
    #[schemars(schema_with = "json_schema_object")]
    pub schema: serde_json::Value,
    #[serde(default)]
    pub access: Access,
    /// How often one writer (a user, else a client address) may write documents: `60/min`,
    /// `10/s`, `5/10s`. Absent: the api's default (`COURIER_WRITE_RATE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^[0-9]+/([0-9]+(ms|s|m|h|d)|s|sec|second|m|min|minute|h|hour|d|day)$"
    ))]
    pub rate: Option<String>,
    /// Secondary indexes the api creates at start-up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<IndexSpec>,
    /// Tasks enqueued when documents change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskTrigger>,
    /// Events carry user ids (`created_by`, `actor`) although anonymous clients may read the
    /// collection (spelled as in `collections.yaml`).
    #[serde(default, rename = "expose_creator", skip_serializing_if = "std::ops::Not::not")]
    pub expose_creator: bool,
}

/// Any JSON object, kept as written (`x-kubernetes-preserve-unknown-fields`).
fn json_schema_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "JSON Schema (draft 2020-12) every stored document must satisfy.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Who may read and write: `public`, `authenticated`, `owner`, `field:<name>` or `role:<name>`,
/// or several of them separated by commas (any admits: `owner, field:shared_with`), checked by
/// the same rules as `collections.yaml` (reads default to `public`, writes to `authenticated`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Access {
    #[serde(default = "public")]
    #[schemars(regex(
        pattern = r"^(public|authenticated|owner|role:[a-z][a-z0-9_-]{0,31}|field:[A-Za-z_][A-Za-z0-9_]{0,63})( *, *(public|authenticated|owner|role:[a-z][a-z0-9_-]{0,31}|field:[A-Za-z_][A-Za-z0-9_]{0,63})){0,7}$"
    ))]
    pub read: String,
    #[serde(default = "authenticated")]
    #[schemars(regex(
        pattern = r"^(public|authenticated|owner|role:[a-z][a-z0-9_-]{0,31}|field:[A-Za-z_][A-Za-z0-9_]{0,63})( *, *(public|authenticated|owner|role:[a-z][a-z0-9_-]{0,31}|field:[A-Za-z_][A-Za-z0-9_]{0,63})){0,7}$"
    ))]
    pub write: String,
}

fn public() -> String {
    "public".into()
}

fn authenticated() -> String {
    "authenticated".into()
}

impl Default for Access {
    fn default() -> Self {
        Access { read: public(), write: authenticated() }
    }
}

/// An index over top-level fields: `["species", "-age"]` (a leading `-` means descending).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct IndexSpec {
    #[schemars(length(min = 1), inner(regex(pattern = r"^-?[A-Za-z_][A-Za-z0-9_]*$")))]
    pub fields: Vec<String>,
    #[serde(default)]
    pub unique: bool,
}

/// A task kind to enqueue (`tasks.<priority>.<kind>`) and the changes that trigger it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct TaskTrigger {
    /// E.g. `pets.enrich` (the first word is not a priority).
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$"))]
    pub kind: String,
    #[schemars(length(min = 1))]
    pub on: Vec<TriggerOn>,
    /// The line the task waits in.
    #[serde(default, skip_serializing_if = "TaskPriority::is_normal")]
    pub priority: TaskPriority,
    /// Hold the task back this long after the change: a whole number and a unit (ms, s, m, h,
    /// d), at most 365d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$"))]
    pub delay: Option<String>,
    /// Deliver the task as a signed HTTP POST instead of a built-in handler (docs/workers.md,
    /// "Webhook tasks").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookTarget>,
    /// Leave the task to a worker outside Courier (`tasks.external.<kind>`, consumer
    /// `external-<kind>`; docs/workers.md, "External workers"). No webhook or priority with it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
}

/// Where a webhook task is delivered, spelled as in `collections.yaml`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct WebhookTarget {
    /// `http(s)://…`, within the workers' `COURIER_WEBHOOK_ALLOWED_URLS`.
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// Absolute path of the Standard Webhooks secret file (`whsec_…`) in the workers.
    #[serde(rename = "secret_file")]
    #[schemars(length(min = 1, max = 1024))]
    pub secret_file: String,
    /// Request timeout (`10s` when absent; 100ms to 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$"))]
    pub timeout: Option<String>,
}

impl From<&WebhookTarget> for core::WebhookTarget {
    fn from(target: &WebhookTarget) -> Self {
        core::WebhookTarget {
            url: target.url.clone(),
            secret_file: target.secret_file.clone(),
            timeout: target.timeout.clone(),
        }
    }
}

impl From<&core::WebhookTarget> for WebhookTarget {
    fn from(target: &core::WebhookTarget) -> Self {
        WebhookTarget {
            url: target.url.clone(),
            secret_file: target.secret_file.clone(),
            timeout: target.timeout.clone(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskPriority {
    High,
    #[default]
    Normal,
    Low,
}

impl TaskPriority {
    fn is_normal(&self) -> bool {
        *self == TaskPriority::Normal
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TriggerOn {
    Create,
    Update,
    Delete,
}

/// Whether the operator accepted the definition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectionStatus {
    /// True when the definition passes the checks the api makes on `collections.yaml` (name,
    /// JSON Schema, fields, indexes, tasks) and is served.
    pub accepted: bool,
    /// "schema compiled" or what is wrong.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl CollectionDefinition {
    /// The `collections.yaml` entry; `resource_name` names it when `spec.name` is absent.
    pub fn to_core(&self, resource_name: &str) -> CoreSpec {
        CoreSpec {
            name: self.name.clone().unwrap_or_else(|| resource_name.to_owned()),
            schema: self.schema.clone(),
            access: core::Access {
                read: access_rule(&self.access.read),
                write: access_rule(&self.access.write),
            },
            rate: self.rate.clone(),
            indexes: self
                .indexes
                .iter()
                .map(|i| core::IndexSpec { fields: i.fields.clone(), unique: i.unique })
                .collect(),
            tasks: self
                .tasks
                .iter()
                .map(|t| core::TaskTrigger {
                    kind: t.kind.clone(),
                    on: t.on.iter().map(|&o| o.into()).collect(),
                    priority: t.priority.into(),
                    delay: t.delay.clone(),
                    webhook: t.webhook.as_ref().map(Into::into),
                    external: t.external,
                })
                .collect(),
            expose_creator: self.expose_creator,
        }
    }

    /// The resource spec carrying a `collections.yaml` entry (always with an explicit name).
    pub fn from_core(spec: &CoreSpec) -> Self {
        CollectionDefinition {
            name: Some(spec.name.clone()),
            schema: spec.schema.clone(),
            access: Access {
                read: spec.access.read.to_string(),
                write: spec.access.write.to_string(),
            },
            rate: spec.rate.clone(),
            indexes: spec
                .indexes
                .iter()
                .map(|i| IndexSpec { fields: i.fields.clone(), unique: i.unique })
                .collect(),
            tasks: spec
                .tasks
                .iter()
                .map(|t| TaskTrigger {
                    kind: t.kind.clone(),
                    on: t.on.iter().map(|&o| o.into()).collect(),
                    priority: t.priority.into(),
                    delay: t.delay.clone(),
                    webhook: t.webhook.as_ref().map(Into::into),
                    external: t.external,
                })
                .collect(),
            expose_creator: spec.expose_creator,
        }
    }
}

/// The rule a resource's access string names. The CRD's pattern admits only the rule forms;
/// anything else (the API server skipped validation) becomes a role name that
/// `CollectionSpec::validate` refuses (`?` is never in one), so the resource is reported, never
/// served.
fn access_rule(text: &str) -> core::AccessRule {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .unwrap_or_else(|_| core::AccessLevel::Role(format!("?{text}")).into())
}

impl From<TriggerOn> for core::TriggerOn {
    fn from(on: TriggerOn) -> Self {
        match on {
            TriggerOn::Create => core::TriggerOn::Create,
            TriggerOn::Update => core::TriggerOn::Update,
            TriggerOn::Delete => core::TriggerOn::Delete,
        }
    }
}

impl From<core::TriggerOn> for TriggerOn {
    fn from(on: core::TriggerOn) -> Self {
        match on {
            core::TriggerOn::Create => TriggerOn::Create,
            core::TriggerOn::Update => TriggerOn::Update,
            core::TriggerOn::Delete => TriggerOn::Delete,
        }
    }
}

impl From<TaskPriority> for Priority {
    fn from(priority: TaskPriority) -> Self {
        match priority {
            TaskPriority::High => Priority::High,
            TaskPriority::Normal => Priority::Normal,
            TaskPriority::Low => Priority::Low,
        }
    }
}

impl From<Priority> for TaskPriority {
    fn from(priority: Priority) -> Self {
        match priority {
            Priority::High => TaskPriority::High,
            Priority::Normal => TaskPriority::Normal,
            Priority::Low => TaskPriority::Low,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pets_core() -> CoreSpec {
        CoreSpec {
            name: "pets".into(),
            schema: json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}),
            access: core::Access {
                read: core::AccessRule::public(),
                write: core::AccessLevel::Owner.into(),
            },
            rate: Some("30/min".into()),
            indexes: vec![core::IndexSpec {
                fields: vec!["species".into(), "-age".into()],
                unique: false,
            }],
            tasks: vec![
                core::TaskTrigger {
                    kind: "pets.enrich".into(),
                    on: vec![core::TriggerOn::Create, core::TriggerOn::Update],
                    priority: Priority::High,
                    delay: None,
                    webhook: None,
                    external: false,
                },
                core::TaskTrigger {
                    kind: "pets.recheck".into(),
                    on: vec![core::TriggerOn::Create],
                    priority: Priority::Low,
                    delay: Some("7d".into()),
                    webhook: None,
                    external: false,
                },
            ],
            expose_creator: true,
        }
    }

    #[test]
    fn a_webhook_task_on_delete_round_trips_through_the_resource_spec() {
        let mut core_spec = pets_core();
        core_spec.tasks.push(core::TaskTrigger {
            kind: "pets.notify".into(),
            on: vec![core::TriggerOn::Delete],
            priority: Priority::Normal,
            delay: None,
            webhook: Some(core::WebhookTarget {
                url: "https://hooks.example.com/pets".into(),
                secret_file: "/etc/courier/webhooks/pets/secret".into(),
                timeout: Some("5s".into()),
            }),
            external: false,
        });
        let resource = CollectionDefinition::from_core(&core_spec);
        let json = serde_json::to_value(&resource).unwrap();
        assert_eq!(json["tasks"][2]["webhook"]["secret_file"], "/etc/courier/webhooks/pets/secret");
        assert_eq!(json["tasks"][2]["on"], json!(["delete"]));
        assert_eq!(resource.to_core("pets"), core_spec);
    }

    #[test]
    fn core_spec_round_trips_through_the_resource_spec() {
        let core_spec = pets_core();
        let resource = CollectionDefinition::from_core(&core_spec);
        assert_eq!(resource.to_core("ignored-because-spec-names-it"), core_spec);
    }

    #[test]
    fn resource_and_core_serialize_the_same_fields() {
        // The resource spec is a mirror of the file format: the same JSON, field for field.
        let core_spec = pets_core();
        let resource = CollectionDefinition::from_core(&core_spec);
        assert_eq!(
            serde_json::to_value(&resource).unwrap(),
            serde_json::to_value(&core_spec).unwrap()
        );
    }

    #[test]
    fn name_defaults_to_the_resource_name() {
        let resource: CollectionDefinition =
            serde_json::from_value(json!({"schema": {"type": "object"}})).unwrap();
        let core_spec = resource.to_core("desks");
        assert_eq!(core_spec.name, "desks");
        assert_eq!(core_spec.access, core::Access::default());
    }
}
