//! Checking `Collection` definitions (the name, and the JSON Schema compiles) and aggregating the
//! accepted ones into the `collections.yaml` the api loads.

use std::collections::BTreeMap;

use courier_core::collection_spec::{CollectionSpec, CollectionsFile};
use kube::ResourceExt;

use crate::crd::Collection;

/// The status message of an accepted collection.
pub const ACCEPTED_MESSAGE: &str = "schema compiled";

/// Converts and checks one resource: the `collections.yaml` entry, or why it is rejected.
pub fn validate(collection: &Collection) -> Result<CollectionSpec, String> {
    let spec = collection.spec.to_core(&collection.name_any());
    if !courier_core::subjects::is_valid_collection_name(&spec.name) {
        return Err(format!(
            "collection name '{}' is invalid: lowercase letter first, then lowercase letters, digits or '_' (at most 64); set spec.name",
            spec.name
        ));
    }
    if !spec.schema.is_object() {
        return Err("schema must be a JSON Schema object".to_owned());
    }
    if let Err(err) = jsonschema::validator_for(&spec.schema) {
        return Err(format!("invalid JSON Schema: {err}"));
    }
    for index in &spec.indexes {
        if index.fields.is_empty() {
            return Err("an index needs at least one field".to_owned());
        }
    }
    for task in &spec.tasks {
        if task.on.is_empty() {
            return Err(format!("task {} has an empty 'on' list", task.kind));
        }
        task.delay()?;
    }
    Ok(spec)
}

/// What a Courier serves: the accepted collections, and the resources left out with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub file: CollectionsFile,
    /// `(resource name, reason)`, sorted by resource name.
    pub rejected: Vec<(String, String)>,
}

/// Validates every resource and merges the accepted ones, sorted by collection name so the
/// output (and its hash) does not depend on list order. When two resources define the same
/// collection the one whose resource name sorts first wins.
pub fn aggregate<'a>(collections: impl IntoIterator<Item = &'a Collection>) -> Aggregate {
    let mut sorted: Vec<&Collection> = collections.into_iter().collect();
    sorted.sort_by_key(|c| c.name_any());
    let mut accepted: BTreeMap<String, (String, CollectionSpec)> = BTreeMap::new();
    let mut rejected = Vec::new();
    for collection in sorted {
        let resource = collection.name_any();
        match validate(collection) {
            Ok(spec) => {
                if let Some((winner, _)) = accepted.get(&spec.name) {
                    rejected.push((
                        resource,
                        format!("collection '{}' is already defined by {winner}", spec.name),
                    ));
                } else {
                    accepted.insert(spec.name.clone(), (resource, spec));
                }
            }
            Err(reason) => rejected.push((resource, reason)),
        }
    }
    Aggregate {
        file: CollectionsFile {
            collections: accepted.into_values().map(|(_, spec)| spec).collect(),
        },
        rejected,
    }
}

/// The `collections.yaml` text for the ConfigMap.
pub fn to_yaml(file: &CollectionsFile) -> String {
    let body = crate::yaml::to_string(file).expect("a CollectionsFile always serializes");
    format!(
        "# Rendered by courier-operator from the Collection resources; edits are overwritten.\n{body}"
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;
    use crate::crd::CollectionDefinition;

    pub(crate) fn collection(resource: &str, spec: serde_json::Value) -> Collection {
        let spec: CollectionDefinition = serde_json::from_value(spec).unwrap();
        let mut c = Collection::new(resource, spec);
        c.metadata.namespace = Some("shop".into());
        c
    }

    pub(crate) fn pets() -> Collection {
        collection(
            "pets",
            json!({
                "schema": {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}}, "required": ["name"]},
                "access": {"read": "public", "write": "authenticated"},
                "indexes": [{"fields": ["species", "-age"]}],
                "tasks": [{"kind": "pets.enrich", "on": ["create", "update"]}]
            }),
        )
    }

    #[test]
    fn a_valid_definition_is_accepted() {
        let spec = validate(&pets()).unwrap();
        assert_eq!(spec.name, "pets");
        assert_eq!(spec.tasks[0].kind, "pets.enrich");
    }

    #[test]
    fn a_task_keeps_its_priority_and_delay_and_a_bad_delay_is_rejected() {
        let later = |delay: &str| {
            collection(
                "later",
                json!({"schema": {"type": "object"}, "tasks": [{"kind": "a.b", "on": ["create"], "priority": "low", "delay": delay}]}),
            )
        };
        let spec = validate(&later("7d")).unwrap();
        assert_eq!(spec.tasks[0].priority, courier_core::Priority::Low);
        assert_eq!(spec.tasks[0].delay(), Ok(Some(std::time::Duration::from_secs(7 * 86_400))));
        let reason = validate(&later("400d")).unwrap_err();
        assert!(reason.contains("task 'a.b': '400d' is not a delay of at most 366d"), "{reason}");
    }

    #[test]
    fn a_schema_that_does_not_compile_is_rejected_with_the_reason() {
        let bad = collection("broken", json!({"schema": {"type": "no-such-type"}}));
        let reason = validate(&bad).unwrap_err();
        assert!(reason.starts_with("invalid JSON Schema"), "{reason}");
    }

    #[test]
    fn a_resource_name_that_is_no_collection_name_needs_spec_name() {
        let bad = collection("pet-shop", json!({"schema": {"type": "object"}}));
        assert!(validate(&bad).unwrap_err().contains("set spec.name"));
        let good =
            collection("pet-shop", json!({"name": "pet_shop", "schema": {"type": "object"}}));
        assert_eq!(validate(&good).unwrap().name, "pet_shop");
    }

    #[test]
    fn aggregate_sorts_by_name_and_rejects_duplicates_and_invalid_ones() {
        let desks = collection("desks", json!({"schema": {"type": "object"}}));
        let desks_again =
            collection("zz-desks", json!({"name": "desks", "schema": {"type": "object"}}));
        let broken = collection("broken", json!({"schema": {"type": 5}}));
        let result = aggregate([&pets(), &desks_again, &broken, &desks]);
        let names: Vec<&str> = result.file.collections.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["desks", "pets"]);
        let rejected: Vec<&str> = result.rejected.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(rejected, ["broken", "zz-desks"]);
        assert!(result.rejected[1].1.contains("already defined by desks"));
    }

    #[test]
    fn rendered_collections_yaml_parses_back_into_the_core_format() {
        let result =
            aggregate([&pets(), &collection("desks", json!({"schema": {"type": "object"}}))]);
        let text = to_yaml(&result.file);
        // `on` must be quoted: YAML 1.1 readers (kubectl, PyYAML) read a bare `on` as `true`.
        assert!(text.contains("\"on\":"), "{text}");
        let parsed: CollectionsFile = serde_yaml::from_str(&text).unwrap();
        assert_eq!(parsed, result.file);
    }
}
