//! The Kubernetes objects a `Courier` owns, built from typed Rust (k8s-openapi): names, labels,
//! the change-detection hash, and the ordered set the reconciler applies and `render` prints.

mod supporting;
mod workloads;

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, Service, ServiceAccount},
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{Resource, ResourceExt};
use serde_json::Value;

use crate::crd::Courier;
use crate::error::{Error, Result};

/// The field manager named in every server-side apply.
pub const FIELD_MANAGER: &str = "courier-operator";
/// Annotation holding the hash of what the operator last applied; unchanged hash, no patch.
pub const HASH_ANNOTATION: &str = "courier.dev/applied-hash";
/// Label selecting every object the operator manages (its watches filter on it).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "courier-operator");
/// Where the api finds `collections.yaml`.
pub const COLLECTIONS_DIR: &str = "/etc/courier";
pub const COLLECTIONS_KEY: &str = "collections.yaml";
/// The image's non-root user.
pub const RUN_AS_USER: i64 = 65532;

/// One of the three workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    Api,
    Broadcaster,
    Worker,
}

impl Component {
    pub const ALL: [Component; 3] = [Component::Api, Component::Broadcaster, Component::Worker];

    pub fn as_str(self) -> &'static str {
        match self {
            Component::Api => "api",
            Component::Broadcaster => "broadcaster",
            Component::Worker => "worker",
        }
    }

    /// The binary in the image.
    pub fn binary(self) -> &'static str {
        match self {
            Component::Api => "courier-api",
            Component::Broadcaster => "courier-broadcaster",
            Component::Worker => "courier-worker",
        }
    }

    /// The port serving `/healthz`, `/readyz` and `/metrics` (and the component's traffic).
    pub fn port(self) -> i32 {
        match self {
            Component::Api => 8000,
            Component::Broadcaster => 8765,
            Component::Worker => 9100,
        }
    }

    pub fn port_name(self) -> &'static str {
        match self {
            Component::Api => "http",
            Component::Broadcaster => "ws",
            Component::Worker => "metrics",
        }
    }

    /// Whether the component checks access tokens: the api (it also signs them) and the
    /// broadcaster (channels that need a token).
    pub fn verifies_tokens(self) -> bool {
        matches!(self, Component::Api | Component::Broadcaster)
    }

    /// Whether the component reads the collections file: the api serves the collections, the
    /// broadcaster enforces their read rules on subscribe (both reload it when it changes), the
    /// workers deliver its webhook tasks (read at start: a change rolls the workers).
    pub fn reads_collections(self) -> bool {
        matches!(self, Component::Api | Component::Broadcaster | Component::Worker)
    }

    /// `<courier>-<component>`: the Deployment, Service and PodDisruptionBudget name.
    pub fn object_name(self, courier: &Courier) -> String {
        format!("{}-{}", courier.name_any(), self.as_str())
    }
}

/// `<courier>-collections`.
pub fn config_map_name(courier: &Courier) -> String {
    format!("{}-collections", courier.name_any())
}

/// The ServiceAccount the pods run as: the Courier's name.
pub fn service_account_name(courier: &Courier) -> String {
    courier.name_any()
}

/// Labels on every object of a Courier (and its pods); `component` narrows to one workload.
pub fn labels(courier: &Courier, component: Option<Component>) -> BTreeMap<String, String> {
    let mut labels = selector_labels(courier, component);
    labels.insert("app.kubernetes.io/part-of".into(), "courier".into());
    labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    labels
}

/// The immutable subset used in Deployment and PDB selectors.
pub fn selector_labels(
    courier: &Courier,
    component: Option<Component>,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "courier".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), courier.name_any()),
    ]);
    if let Some(component) = component {
        labels.insert("app.kubernetes.io/component".into(), component.as_str().into());
    }
    labels
}

/// Metadata for an owned object: name, namespace, labels, and the controller owner reference
/// (present once the Courier exists in a cluster, i.e. has a uid; `render` of a file has none).
pub fn metadata(courier: &Courier, name: String, component: Option<Component>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: courier.namespace(),
        labels: Some(labels(courier, component)),
        owner_references: owner_reference(courier).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

fn owner_reference(courier: &Courier) -> Option<OwnerReference> {
    courier.controller_owner_ref(&())
}

/// One object the operator applies. (Eleven per Courier, built per reconcile: boxing the big
/// Deployment variant would buy nothing measurable.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Child {
    ServiceAccount(ServiceAccount),
    ConfigMap(ConfigMap),
    Deployment(Deployment),
    Service(Service),
    PodDisruptionBudget(PodDisruptionBudget),
}

impl Child {
    pub fn kind(&self) -> &'static str {
        match self {
            Child::ServiceAccount(_) => "ServiceAccount",
            Child::ConfigMap(_) => "ConfigMap",
            Child::Deployment(_) => "Deployment",
            Child::Service(_) => "Service",
            Child::PodDisruptionBudget(_) => "PodDisruptionBudget",
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Child::ServiceAccount(o) => o.meta(),
            Child::ConfigMap(o) => o.meta(),
            Child::Deployment(o) => o.meta(),
            Child::Service(o) => o.meta(),
            Child::PodDisruptionBudget(o) => o.meta(),
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Child::ServiceAccount(o) => o.meta_mut(),
            Child::ConfigMap(o) => o.meta_mut(),
            Child::Deployment(o) => o.meta_mut(),
            Child::Service(o) => o.meta_mut(),
            Child::PodDisruptionBudget(o) => o.meta_mut(),
        }
    }

    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or_default()
    }

    /// `Kind/name`, for logs and Events.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.kind(), self.name())
    }

    /// The object as JSON (with `apiVersion` and `kind`), as sent in the apply patch.
    pub fn to_value(&self) -> Result<Value> {
        let result = match self {
            Child::ServiceAccount(o) => serde_json::to_value(o),
            Child::ConfigMap(o) => serde_json::to_value(o),
            Child::Deployment(o) => serde_json::to_value(o),
            Child::Service(o) => serde_json::to_value(o),
            Child::PodDisruptionBudget(o) => serde_json::to_value(o),
        };
        result.map_err(|source| Error::Serialize { what: self.describe(), source })
    }

    /// The hash this object carries in [`HASH_ANNOTATION`].
    pub fn applied_hash(&self) -> Option<&str> {
        self.meta().annotations.as_ref()?.get(HASH_ANNOTATION).map(String::as_str)
    }

    /// Stamps the object with the hash of its own content (taken without the annotation).
    fn stamp_hash(&mut self) -> Result<()> {
        if let Some(annotations) = self.meta_mut().annotations.as_mut() {
            annotations.remove(HASH_ANNOTATION);
        }
        let hash = format!("{:016x}", fnv1a(self.to_value()?.to_string().as_bytes()));
        self.meta_mut()
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_ANNOTATION.into(), hash);
        Ok(())
    }
}

/// FNV-1a: stable across Rust releases and processes (std's hasher is not promised to be).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Where the workers find the Secrets that webhook tasks name: a webhook's `secret_file`
/// `/etc/courier/webhooks/<secret>/<key>` mounts Secret `<secret>` (of the Courier's namespace)
/// into the workers at `/etc/courier/webhooks/<secret>`.
pub const WEBHOOK_SECRETS_DIR: &str = "/etc/courier/webhooks";

/// Inputs the reconciler decides; everything else comes from the Courier's spec.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildInput {
    /// `collections.yaml` content for the ConfigMap.
    pub collections_yaml: String,
    /// Worker replicas (the autoscaler's decision, or `spec.worker.replicas`).
    pub worker_replicas: i32,
}

impl BuildInput {
    /// The Secrets the served collections' webhooks read ([`WEBHOOK_SECRETS_DIR`]), sorted and
    /// unique; names that are not Secret names are left out (the worker then reports the file
    /// missing).
    pub fn webhook_secrets(&self) -> Vec<String> {
        let Ok(file) =
            courier_core::collection_spec::CollectionsFile::from_yaml(&self.collections_yaml)
        else {
            return Vec::new();
        };
        let prefix = format!("{WEBHOOK_SECRETS_DIR}/");
        let mut names: Vec<String> = file
            .webhooks()
            .filter_map(|(_, _, webhook)| {
                let (name, key) = webhook.secret_file.strip_prefix(&prefix)?.split_once('/')?;
                let dns_label = !name.is_empty()
                    && name.len() <= 63
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !name.starts_with('-')
                    && !name.ends_with('-');
                (dns_label && !key.is_empty()).then(|| name.to_owned())
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// A hash of the collections file: a worker pod annotation, so workers (which read the file
    /// at start) roll when it changes.
    pub fn collections_hash(&self) -> String {
        format!("{:016x}", fnv1a(self.collections_yaml.as_bytes()))
    }
}

/// Every object of a Courier in apply order: ServiceAccount and ConfigMap first (pods need
/// them), then Deployments, Services and PodDisruptionBudgets; each stamped with its hash.
pub fn build(courier: &Courier, input: &BuildInput) -> Result<Vec<Child>> {
    if courier.namespace().is_none() {
        return Err(Error::MissingNamespace { kind: "Courier", name: courier.name_any() });
    }
    let mut children = vec![
        Child::ServiceAccount(supporting::service_account(courier)),
        Child::ConfigMap(supporting::config_map(courier, &input.collections_yaml)),
    ];
    for component in Component::ALL {
        let replicas = match component {
            Component::Worker => input.worker_replicas,
            Component::Api => courier.spec.api.replicas,
            Component::Broadcaster => courier.spec.broadcaster.replicas,
        };
        children
            .push(Child::Deployment(workloads::deployment(courier, component, replicas, input)));
    }
    for component in Component::ALL {
        children.push(Child::Service(supporting::service(courier, component)));
    }
    for component in Component::ALL {
        children.push(Child::PodDisruptionBudget(supporting::pod_disruption_budget(
            courier, component,
        )));
    }
    for child in &mut children {
        child.stamp_hash()?;
    }
    Ok(children)
}

#[cfg(test)]
pub(crate) mod tests;
