//! The `Courier` custom resource (`courier.dev/v1alpha1`): one Courier installation (api,
//! broadcaster and worker workloads) and the status the operator reports about it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;

/// Desired state of a Courier installation. The operator creates the api, broadcaster and worker
/// Deployments (with Services, PodDisruptionBudgets, a ServiceAccount and the collections
/// ConfigMap) from it and keeps them in line.
// clippy reads repeated `type_ = …` keys across `printcolumn(…)` groups as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.jwtSecretRef) != has(self.jwtKeyPair)").message("set exactly one of jwtSecretRef (HS256) and jwtKeyPair (RS256)"))]
#[kube(
    group = "courier.dev",
    version = "v1alpha1",
    kind = "Courier",
    namespaced,
    status = "CourierStatus",
    shortname = "cour",
    category = "courier",
    derive = "PartialEq",
    doc = "A Courier installation: api, broadcaster and workers, reconciled by courier-operator.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Api",
        type_ = "integer",
        json_path = ".status.api.readyReplicas",
        description = "Ready api pods"
    ),
    printcolumn(
        name = "Broadcaster",
        type_ = "integer",
        json_path = ".status.broadcaster.readyReplicas",
        description = "Ready broadcaster pods"
    ),
    printcolumn(
        name = "Workers",
        type_ = "integer",
        json_path = ".status.worker.desiredReplicas",
        description = "Desired worker pods"
    ),
    printcolumn(
        name = "Backlog",
        type_ = "integer",
        json_path = ".status.taskBacklog",
        description = "Pending + in-flight tasks"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct CourierSpec {
    /// The Courier image; it holds every binary (`courier-api`, `courier-broadcaster`, …).
    pub image: ImageSpec,
    /// The HTTP api (port 8000).
    #[serde(default)]
    pub api: ComponentSpec,
    /// The WebSocket broadcaster (port 8765).
    #[serde(default)]
    pub broadcaster: ComponentSpec,
    /// The task workers (metrics on port 9100).
    #[serde(default)]
    pub worker: WorkerSpec,
    /// NATS server URL(s), comma separated, as reachable from the pods and from the operator
    /// (the operator reads the task backlog there). Prefer a namespace-qualified host name.
    #[schemars(length(min = 1), regex(pattern = r"^(nats|tls|ws|wss)://"))]
    pub nats_url: String,
    pub mongodb: MongoSpec,
    /// HS256: the Secret key holding the shared key that signs (api) and verifies (api and
    /// broadcaster) access tokens. Set this or `jwtKeyPair`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_secret_ref: Option<SecretKeyRef>,
    /// RS256: only the api gets the private key and signs; the broadcaster gets the public key
    /// and can only verify. Set this or `jwtSecretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_key_pair: Option<JwtKeyPair>,
    /// Which `Collection`s (in this namespace) this Courier serves. Absent: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection_selector: Option<CollectionSelector>,
}

/// The RS256 key pair of access tokens, mounted as files (never as environment variables).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtKeyPair {
    /// PEM RSA private key: mounted into the api only.
    pub private_key_secret_ref: SecretKeyRef,
    /// PEM public key, or a certificate carrying it: mounted into the api and the broadcaster.
    pub public_key_secret_ref: SecretKeyRef,
}

/// A component's NATS user; the server's permissions for it say what the component may do
/// (docs/security.md).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NatsCredentials {
    /// The user name (`COURIER_NATS_USER`), e.g. `courier-api`.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub user: String,
    /// The Secret key holding its password; mounted as a file (`COURIER_NATS_PASSWORD_FILE`).
    pub password_secret_ref: SecretKeyRef,
}

/// Where the image comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// E.g. `ghcr.io/courier/courier`; must be allowed by the operator
    /// (`COURIER_OPERATOR_ALLOWED_IMAGES`).
    #[schemars(length(min = 1))]
    pub repository: String,
    #[schemars(length(min = 1))]
    pub tag: String,
    #[serde(default)]
    pub pull_policy: PullPolicy,
    /// Names of Secrets (type `kubernetes.io/dockerconfigjson`, in this namespace) for pulling
    /// the image from a private registry; set on every pod the operator creates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_secrets: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Settings every component has.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    /// Pod count (for the worker: used when autoscaling is disabled).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Container resources; absent: the operator's defaults (requests 100m CPU / 128Mi, limit 512Mi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = super::without_nested_descriptions)]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment variables; one named like an operator-set `COURIER_*` variable replaces
    /// it. `valueFrom` is refused unless the operator allows it
    /// (`COURIER_OPERATOR_ALLOW_ENV_VALUE_FROM`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = super::without_nested_descriptions)]
    pub env: Vec<EnvVar>,
    /// This component's NATS user and password. Absent: it connects without credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_credentials: Option<NatsCredentials>,
    /// Annotations added to the pods (not to the Deployment).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub placement: Placement,
}

fn default_replicas() -> i32 {
    2
}

impl Default for ComponentSpec {
    fn default() -> Self {
        ComponentSpec {
            replicas: default_replicas(),
            resources: None,
            env: Vec::new(),
            nats_credentials: None,
            pod_annotations: BTreeMap::new(),
            placement: Placement::default(),
        }
    }
}

/// Where pods may run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = super::without_nested_descriptions)]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = super::without_nested_descriptions)]
    pub affinity: Option<Affinity>,
    /// Replaces the default spread (across nodes and zones, `ScheduleAnyway`). An empty list
    /// turns spreading off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = super::without_nested_descriptions)]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
}

/// The worker: a component plus backlog-driven autoscaling.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSpec {
    #[serde(flatten)]
    pub component: ComponentSpec,
    #[serde(default)]
    pub autoscaling: AutoscalingSpec,
}

/// Scale workers on the JetStream task backlog, every priority (the `workers-<priority>`
/// consumers' pending + ack-pending):
/// desired = clamp(ceil(backlog / targetPendingPerReplica), minReplicas, maxReplicas); scaling
/// up is immediate, scaling down waits for the stabilization window.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.maxReplicas >= self.minReplicas").message("maxReplicas must be at least minReplicas"))]
pub struct AutoscalingSpec {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: i32,
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Backlog one worker replica is expected to handle.
    #[serde(default = "default_target_pending")]
    #[schemars(range(min = 1))]
    pub target_pending_per_replica: i32,
    /// A lower replica count must have been recommended for this long before workers are
    /// removed (the highest recommendation inside the window wins).
    #[serde(default = "default_stabilization")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_down_stabilization_seconds: i32,
}

fn default_min_replicas() -> i32 {
    1
}
fn default_max_replicas() -> i32 {
    10
}
fn default_target_pending() -> i32 {
    100
}
fn default_stabilization() -> i32 {
    300
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        AutoscalingSpec {
            enabled: false,
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            target_pending_per_replica: default_target_pending(),
            scale_down_stabilization_seconds: default_stabilization(),
        }
    }
}

/// MongoDB connection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MongoSpec {
    /// Secret key holding the connection URI (`mongodb://…`).
    pub uri_secret_ref: SecretKeyRef,
    #[serde(default = "default_database")]
    #[schemars(length(min = 1, max = 63))]
    pub database: String,
}

fn default_database() -> String {
    "courier".to_owned()
}

/// A key of a Secret in the Courier's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Label selector over `Collection`s.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectionSelector {
    /// Every label listed must match.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

impl CollectionSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// What the operator observed and decided.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CourierStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub api: ComponentStatus,
    #[serde(default)]
    pub broadcaster: ComponentStatus,
    #[serde(default)]
    pub worker: ComponentStatus,
    /// Tasks pending plus in flight, every priority together, when last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_backlog: Option<i64>,
    /// Names of the collections in the served `collections.yaml`.
    #[serde(default)]
    pub collections: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_decision: Option<ScaleDecision>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    pub desired_replicas: i32,
    pub ready_replicas: i32,
}

/// The last change the autoscaler made to the worker replica count.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleDecision {
    /// RFC 3339.
    pub time: String,
    pub from_replicas: i32,
    pub to_replicas: i32,
    pub backlog: i64,
    pub reason: String,
}
