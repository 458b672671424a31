//! The collections the api serves and their JSON Schemas, compiled once at start-up.

use std::{collections::HashMap, sync::Arc};

use serde_json::{Value, json};

use crate::error::FieldError;

/// One collection: its name and compiled schema.
pub struct CollectionDef {
    pub name: String,
    pub schema: Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for CollectionDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectionDef").field("name", &self.name).finish_non_exhaustive()
    }
}

impl CollectionDef {
    pub fn new(name: &str, schema: Value) -> Result<Self, String> {
        if !courier_core::subjects::is_valid_collection_name(name) {
            return Err(format!(
                "collection name '{name}' is invalid: lowercase letter first, then lowercase letters, digits or '_'"
            ));
        }
        let validator = jsonschema::validator_for(&schema)
            .map_err(|err| format!("collection '{name}': invalid JSON Schema: {err}"))?;
        Ok(CollectionDef { name: name.to_owned(), schema, validator })
    }

    /// Checks a document body against the schema, listing every failing field.
    pub fn validate(&self, document: &Value) -> Result<(), Vec<FieldError>> {
        let mut fields: Vec<FieldError> = self
            .validator
            .iter_errors(document)
            .flat_map(|err| field_errors(&err))
            .collect();
        if fields.is_empty() {
            return Ok(());
        }
        fields.sort_by(|a, b| a.field.cmp(&b.field));
        fields.dedup();
        Err(fields)
    }
}

/// Turns one schema error into the field(s) it concerns. `required` and `additionalProperties`
/// errors are reported on the missing/unexpected field itself, not on its parent object.
fn field_errors(err: &jsonschema::ValidationError<'_>) -> Vec<FieldError> {
    use jsonschema::error::ValidationErrorKind as Kind;
    let parent = pointer_to_dotted(err.instance_path().as_str());
    let child = |name: &str| if parent.is_empty() { name.to_owned() } else { format!("{parent}.{name}") };
    match err.kind() {
        Kind::Required { property } => {
            let name = property.as_str().map(str::to_owned).unwrap_or_else(|| property.to_string());
            vec![FieldError { field: child(&name), reason: "is required".into() }]
        }
        Kind::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|name| FieldError { field: child(name), reason: "is not a known field".into() })
            .collect(),
        _ => vec![FieldError {
            field: if parent.is_empty() { "(document)".into() } else { parent },
            reason: err.to_string(),
        }],
    }
}

/// `/a/0/b~1c` → `a.0.b/c`.
fn pointer_to_dotted(pointer: &str) -> String {
    pointer
        .split('/')
        .skip(1)
        .map(|segment| segment.replace("~1", "/").replace("~0", "~"))
        .collect::<Vec<_>>()
        .join(".")
}

/// The collections the api serves, by name.
#[derive(Debug, Clone, Default)]
pub struct Collections {
    by_name: HashMap<String, Arc<CollectionDef>>,
}

impl Collections {
    pub fn new(defs: Vec<CollectionDef>) -> Self {
        Collections {
            by_name: defs.into_iter().map(|d| (d.name.clone(), Arc::new(d))).collect(),
        }
    }

    /// The collections Courier ships with.
    pub fn builtin() -> Self {
        Self::new(vec![
            CollectionDef::new("products", products_schema()).expect("built-in schema compiles"),
        ])
    }

    pub fn get(&self, name: &str) -> Option<Arc<CollectionDef>> {
        self.by_name.get(name).cloned()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

/// The seed project's product: `nombre`, `precio`, `talla`.
fn products_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["nombre", "precio"],
        "properties": {
            "nombre": {"type": "string", "minLength": 1, "maxLength": 200},
            "precio": {"type": "number", "minimum": 0},
            "talla": {"type": "string", "minLength": 1, "maxLength": 20}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn products() -> Arc<CollectionDef> {
        Collections::builtin().get("products").unwrap()
    }

    #[test]
    fn a_seed_product_is_valid() {
        assert_eq!(products().validate(&json!({"nombre": "Camiseta", "precio": 25.99, "talla": "M"})), Ok(()));
    }

    #[test]
    fn every_failing_field_is_named() {
        let errors = products()
            .validate(&json!({"precio": "cheap", "colour": "red"}))
            .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["colour", "nombre", "precio"]);
        assert!(errors[1].reason.contains("required"));
        assert!(errors[2].reason.contains("number"), "{}", errors[2].reason);
    }

    #[test]
    fn a_non_object_body_is_reported_on_the_document() {
        let errors = products().validate(&json!([1, 2])).unwrap_err();
        assert_eq!(errors[0].field, "(document)");
    }

    #[test]
    fn nested_pointers_become_dotted_paths() {
        assert_eq!(pointer_to_dotted("/a/0/b~1c"), "a.0.b/c");
        assert_eq!(pointer_to_dotted(""), "");
    }

    #[test]
    fn invalid_definitions_are_refused() {
        assert!(CollectionDef::new("Bad.Name", json!({})).is_err());
        assert!(CollectionDef::new("ok", json!({"type": "no-such-type"})).is_err());
    }
}
