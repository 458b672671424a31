//! `courier-operator render`: read Courier and Collection manifests and print, as multi-document
//! YAML, exactly the objects the reconciler would apply for them — for review, and for
//! validation with `kubernetes-validate` where no cluster is available.

use std::{io::Read, path::Path};

use kube::ResourceExt;
use serde_json::Value;

use crate::{
    Error, Result, collections,
    crd::{Collection, Courier},
    policy::Policy,
    resources::{self, BuildInput},
};

/// Everything read from the manifests.
#[derive(Debug, Default)]
pub struct Manifests {
    pub couriers: Vec<Courier>,
    pub collections: Vec<Collection>,
}

/// Reads every YAML document of `path` (`-` is stdin) into `into`; documents without a
/// namespace get `namespace`.
pub fn read_manifests(path: &Path, namespace: &str, into: &mut Manifests) -> Result<()> {
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| Error::ReadFile { path: path.into(), source })?;
        text
    } else {
        std::fs::read_to_string(path)
            .map_err(|source| Error::ReadFile { path: path.into(), source })?
    };
    let manifest_error = |message: String| Error::Manifest { path: path.into(), message };
    for (index, document) in yaml_serde::Deserializer::from_str(&text).enumerate() {
        let value: Value = serde::Deserialize::deserialize(document)
            .map_err(|err| manifest_error(format!("document {}: {err}", index + 1)))?;
        if value.is_null() {
            continue; // empty document (a leading `---`, or a comment-only one)
        }
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        let api_version = value["apiVersion"].as_str().unwrap_or_default();
        if api_version != "courier.dev/v1alpha1" {
            return Err(manifest_error(format!(
                "document {}: apiVersion {api_version:?} is not courier.dev/v1alpha1",
                index + 1
            )));
        }
        let invalid = |err: serde_json::Error| {
            manifest_error(format!("document {} ({kind}): {err}", index + 1))
        };
        match kind.as_str() {
            "Courier" => {
                let mut courier: Courier = serde_json::from_value(value).map_err(invalid)?;
                courier.metadata.namespace.get_or_insert_with(|| namespace.to_owned());
                into.couriers.push(courier);
            }
            "Collection" => {
                let mut collection: Collection = serde_json::from_value(value).map_err(invalid)?;
                collection.metadata.namespace.get_or_insert_with(|| namespace.to_owned());
                into.collections.push(collection);
            }
            other => {
                return Err(manifest_error(format!(
                    "document {}: kind {other:?} is neither Courier nor Collection",
                    index + 1
                )));
            }
        }
    }
    Ok(())
}

/// The rendered YAML stream and the warnings (rejected collections) to show beside it.
pub struct Rendered {
    pub yaml: String,
    pub warnings: Vec<String>,
}

/// Renders every Courier with the Collections it selects; a Courier that `policy` refuses is
/// an error (the operator would apply nothing for it).
pub fn render(
    manifests: &Manifests,
    worker_replicas: Option<i32>,
    policy: &Policy,
) -> Result<Rendered> {
    let mut yaml = String::new();
    let mut warnings = Vec::new();
    for courier in &manifests.couriers {
        let reasons = policy.violations(courier);
        if !reasons.is_empty() {
            return Err(Error::Refused { courier: courier.name_any(), reasons });
        }
        let namespace = courier.namespace();
        let selector = courier.spec.collection_selector.clone().unwrap_or_default();
        let aggregate = collections::aggregate(
            manifests
                .collections
                .iter()
                .filter(|c| c.namespace() == namespace && selector.matches(c.labels())),
        );
        for (resource, reason) in &aggregate.rejected {
            warnings.push(format!(
                "Courier {}: Collection {resource} not served: {reason}",
                courier.name_any()
            ));
        }
        let autoscaling = &courier.spec.worker.autoscaling;
        let workers = if autoscaling.enabled {
            worker_replicas
                .unwrap_or(autoscaling.min_replicas)
                .clamp(autoscaling.min_replicas, autoscaling.max_replicas)
        } else {
            courier.spec.worker.component.replicas
        };
        let input = BuildInput {
            collections_yaml: collections::to_yaml(&aggregate.file),
            worker_replicas: workers,
        };
        yaml.push_str(&format!(
            "# Courier {}/{}\n",
            namespace.unwrap_or_default(),
            courier.name_any()
        ));
        for child in resources::build(courier, &input)? {
            yaml.push_str("---\n");
            let value = child.to_value()?;
            yaml.push_str(
                &crate::yaml::to_string(&value)
                    .map_err(|source| Error::Serialize { what: child.describe(), source })?,
            );
        }
    }
    Ok(Rendered { yaml, warnings })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const MANIFEST: &str = r#"
---
apiVersion: courier.dev/v1alpha1
kind: Courier
metadata: {name: demo}
spec:
  image: {repository: ghcr.io/example/courier, tag: "1.0"}
  natsUrl: nats://nats:4222
  mongodb: {uriSecretRef: {name: mongo, key: uri}}
  jwtSecretRef: {name: jwt, key: secret}
  worker: {autoscaling: {enabled: true, minReplicas: 2, maxReplicas: 4}}
---
apiVersion: courier.dev/v1alpha1
kind: Collection
metadata: {name: desks}
spec:
  schema: {type: object, properties: {width: {type: number}}}
  tasks: [{kind: desks.measure, "on": [create]}]
---
apiVersion: courier.dev/v1alpha1
kind: Collection
metadata: {name: elsewhere, namespace: other}
spec: {schema: {type: object}}
"#;

    /// A policy allowing the test manifest's image.
    fn example() -> Policy {
        Policy::allowing(&["ghcr.io/example/courier"])
    }

    fn read(text: &str) -> Manifests {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        let mut manifests = Manifests::default();
        read_manifests(file.path(), "team", &mut manifests).unwrap();
        manifests
    }

    #[test]
    fn renders_a_courier_with_its_collections() {
        let manifests = read(MANIFEST);
        assert_eq!(manifests.couriers[0].namespace().as_deref(), Some("team"));
        let rendered = render(&manifests, None, &example()).unwrap();
        assert!(rendered.warnings.is_empty());
        let docs: Vec<Value> = yaml_serde::Deserializer::from_str(&rendered.yaml)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|v: &Value| !v.is_null())
            .collect();
        assert_eq!(docs.len(), 11);
        let worker = docs
            .iter()
            .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "demo-worker")
            .unwrap();
        assert_eq!(worker["spec"]["replicas"], 2, "autoscaling on: starts at minReplicas");
        let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
        let (file, _) = courier_core::collection_spec::CollectionsFile::load_checked(
            cm["data"]["collections.yaml"].as_str().unwrap(),
        )
        .unwrap();
        assert_eq!(file.collections.len(), 1, "the Collection in another namespace is not served");
        assert_eq!(file.collections[0].tasks[0].kind, "desks.measure");
        assert!(docs.iter().all(|d| d["metadata"].get("ownerReferences").is_none()));
        assert_eq!(
            render(&manifests, Some(9), &example()).unwrap().yaml.matches("replicas: 4").count(),
            1,
            "clamped to maxReplicas"
        );
    }

    #[test]
    fn the_shipped_samples_render_with_all_three_collections() {
        let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../k8s/samples");
        let mut manifests = Manifests::default();
        for name in [
            "courier.yaml",
            "collection-products.yaml",
            "collection-desks.yaml",
            "collection-pets.yaml",
        ] {
            read_manifests(&samples.join(name), "default", &mut manifests).unwrap();
        }
        let defaults = crate::policy::PolicyArgs {
            allowed_images: vec![crate::policy::DEFAULT_ALLOWED_IMAGES.into()],
            allow_env_value_from: false,
        };
        let rendered = render(&manifests, None, &Policy::from_args(&defaults).unwrap()).unwrap();
        assert!(rendered.warnings.is_empty(), "{:?}", rendered.warnings);
        let cm: Value = yaml_serde::Deserializer::from_str(&rendered.yaml)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .find(|v: &Value| v["kind"] == "ConfigMap")
            .unwrap();
        let (file, _) = courier_core::collection_spec::CollectionsFile::load_checked(
            cm["data"]["collections.yaml"].as_str().unwrap(),
        )
        .unwrap();
        let names: Vec<&str> = file.collections.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["desks", "pets", "products"]);
        let pets = &file.collections[1];
        assert_eq!(pets.access.write, courier_core::collection_spec::AccessLevel::Owner.into());
        assert_eq!(pets.tasks[0].kind, "pets.enrich");
        assert_eq!(pets.tasks[0].on.len(), 2);
    }

    #[test]
    fn rejects_foreign_kinds_and_reports_bad_collections() {
        let mut manifests = Manifests::default();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n").unwrap();
        let err = read_manifests(file.path(), "default", &mut manifests).unwrap_err();
        assert!(err.to_string().contains("not courier.dev/v1alpha1"), "{err}");

        let manifests =
            read(&MANIFEST.replace("type: object, properties", "type: objekt, properties"));
        let rendered = render(&manifests, None, &example()).unwrap();
        assert_eq!(rendered.warnings.len(), 1);
        assert!(rendered.warnings[0].contains("desks not served"), "{:?}", rendered.warnings);
    }

    #[test]
    fn a_courier_the_operator_would_refuse_fails_the_render_and_says_why() {
        let manifests = read(MANIFEST);
        let err = render(&manifests, None, &Policy::allowing(&["ghcr.io/courier-dev/courier"]))
            .err()
            .expect("refused");
        let message = err.to_string();
        assert!(message.starts_with("Courier demo is refused:"), "{message}");
        assert!(message.contains("spec.image.repository \"ghcr.io/example/courier\""), "{message}");
    }
}
