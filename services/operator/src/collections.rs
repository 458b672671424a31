//! Checking `Collection` definitions with the rules the api applies
//! (`courier_core::collection_spec`), and aggregating the accepted ones into the
//! `collections.yaml` the api loads.

use std::collections::BTreeMap;

use courier_core::collection_spec::{CollectionSpec, CollectionsFile, SpecError};
use kube::ResourceExt;

use crate::crd::Collection;

/// The status message of an accepted collection.
pub const ACCEPTED_MESSAGE: &str = "schema compiled";

/// Converts and checks one resource: the `collections.yaml` entry, or why it is rejected. The
/// check is `CollectionSpec::validate`, the one the api runs on the file, so a rejected
/// resource is exactly one that would stop the api; the message is the api's, naming the
/// collection the same way.
pub fn validate(collection: &Collection) -> Result<CollectionSpec, String> {
    let spec = collection.spec.to_core(&collection.name_any());
    match spec.validate() {
        Ok(_) => Ok(spec),
        Err(err @ (SpecError::InvalidName | SpecError::ReservedName))
            if collection.spec.name.is_none() =>
        {
            Err(format!(
                "collection '{}': {err}; the resource name is used when spec.name is absent: set spec.name",
                spec.name
            ))
        }
        Err(err) => Err(format!("collection '{}': {err}", spec.name)),
    }
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
        assert!(reason.contains("task 'a.b': delay '400d' is too long"), "{reason}");
    }

    #[test]
    fn a_schema_that_does_not_compile_is_rejected_with_the_reason() {
        let bad = collection(
            "broken",
            json!({"schema": {"type": "object", "properties": {"x": {"type": "no-such-type"}}}}),
        );
        let reason = validate(&bad).unwrap_err();
        assert!(reason.starts_with("collection 'broken': schema does not compile"), "{reason}");
    }

    #[test]
    fn every_spec_of_the_shared_invalid_table_is_refused_like_the_api_does() {
        for entry in courier_core::collection_spec::fixtures::invalid_specs() {
            let resource = collection("fixture", entry.json.clone());
            let reason = validate(&resource).expect_err(entry.case);
            let expected = format!("collection '{}': {}", entry.name(), entry.problem);
            assert!(reason.starts_with(&expected), "{}: {reason}\n  lacks {expected}", entry.case);
            let result = aggregate([&resource]);
            assert!(result.file.collections.is_empty(), "{}", entry.case);
            assert_eq!(result.rejected, [("fixture".to_owned(), reason)], "{}", entry.case);
        }
    }

    #[test]
    fn an_invalid_resource_name_or_a_reserved_one_asks_for_spec_name() {
        for resource in ["pet-shop", "auth"] {
            let reason =
                validate(&collection(resource, json!({"schema": {"type": "object"}}))).unwrap_err();
            assert!(reason.starts_with(&format!("collection '{resource}': ")), "{reason}");
            assert!(reason.ends_with("set spec.name"), "{reason}");
        }
        let explicit = collection("shop", json!({"name": "auth", "schema": {"type": "object"}}));
        assert!(!validate(&explicit).unwrap_err().contains("spec.name"));
    }

    #[test]
    fn what_the_operator_serves_the_api_loads() {
        let good = [pets(), collection("desks", json!({"schema": {"type": "object"}}))];
        let bad: Vec<Collection> = courier_core::collection_spec::fixtures::invalid_specs()
            .into_iter()
            .enumerate()
            .map(|(i, entry)| collection(&format!("bad-{i:02}"), entry.json))
            .collect();
        let result = aggregate(good.iter().chain(&bad));
        assert_eq!(result.rejected.len(), bad.len());
        let parsed = CollectionsFile::from_yaml(&to_yaml(&result.file)).unwrap();
        assert_eq!(
            parsed.validate().unwrap().len(),
            2,
            "the rendered file passes the api's checks"
        );
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
        assert!(validate(&broken).unwrap_err().contains("\"type\": \"object\""));
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
        let parsed = CollectionsFile::from_yaml(&text).unwrap();
        assert_eq!(parsed, result.file);
    }
}
