//! `GET /api/v1/collections`: the declared collections as clients need them to build a UI —
//! name, JSON Schema, access rules and triggered tasks — read-only and public (the same facts
//! `/openapi.json` publishes), always the currently loaded `collections.yaml`.

use axum::{Json, Router, extract::State, routing::get};
use serde_json::{Value, json};

use crate::{collections::Collections, state::AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/collections", get(list))
}

async fn list(State(state): State<AppState>) -> Json<Value> {
    Json(describe(&state.collections.current()))
}

/// `{"items": [{name, schema, access: {read, write}, tasks: [{kind, on}]}]}`, by name.
pub fn describe(collections: &Collections) -> Value {
    let items: Vec<Value> = collections
        .all()
        .iter()
        .map(|def| {
            json!({
                "name": def.spec.name,
                "schema": def.spec.schema,
                "access": def.spec.access,
                "tasks": def.spec.tasks,
            })
        })
        .collect();
    json!({ "items": items })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_collection_is_described_with_its_schema_and_rules() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../collections.yaml");
        let described = describe(&Collections::load(&path).unwrap());
        let items = described["items"].as_array().unwrap();
        let names: Vec<&str> = items.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["desks", "pets", "products"]);
        let pets = &items[1];
        assert_eq!(pets["access"], json!({"read": "public", "write": "owner"}));
        assert_eq!(
            pets["tasks"],
            json!([
                {"kind": "pets.enrich", "on": ["create", "update"]},
                {"kind": "pets.recheck", "on": ["create"], "priority": "low", "delay": "7d"}
            ])
        );
        assert_eq!(pets["schema"]["properties"]["enrichment"]["readOnly"], true);
        assert_eq!(pets["schema"]["required"], json!(["name", "species", "age"]));
        let products = &items[2];
        assert_eq!(products["access"], json!({"read": "public", "write": "public"}));
        assert_eq!(products["tasks"], json!([]));
        assert_eq!(products["schema"]["properties"]["precio"]["type"], "number");
    }
}
