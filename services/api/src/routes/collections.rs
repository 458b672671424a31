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

/// `{"items": [{name, schema, access: {read, write}, tasks: [{kind, on}]}]}`, by name. A webhook
/// task shows `"webhook": true`: its URL (which may carry a token) and secret path stay private.
pub fn describe(collections: &Collections) -> Value {
    let items: Vec<Value> = collections
        .all()
        .iter()
        .map(|def| {
            json!({
                "name": def.spec.name,
                "schema": def.spec.schema,
                "access": def.spec.access,
                "tasks": def.spec.tasks.iter().map(public_task).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "items": items })
}

fn public_task(task: &courier_core::collection_spec::TaskTrigger) -> Value {
    let mut json = serde_json::to_value(task).unwrap_or(Value::Null);
    if let Some(webhook) = json.get_mut("webhook") {
        *webhook = Value::Bool(true);
    }
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_task_is_described_without_its_url_or_secret() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            file.path(),
            "collections: [{name: orders, schema: {type: object}, tasks: [{kind: orders.notify, on: [delete], webhook: {url: 'https://hooks.example.com/t0ken', secret_file: /etc/s}}]}]",
        )
        .unwrap();
        let described = describe(&Collections::load(file.path()).unwrap());
        assert_eq!(
            described["items"][0]["tasks"],
            json!([{"kind": "orders.notify", "on": ["delete"], "webhook": true}])
        );
    }

    #[test]
    fn every_declared_collection_is_described_with_its_schema_and_rules() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../collections.yaml");
        let described = describe(&Collections::load(&path).unwrap());
        let items = described["items"].as_array().unwrap();
        let names: Vec<&str> = items.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["desks", "notes", "pets", "products"]);
        assert_eq!(
            items[1]["access"],
            json!({"read": "owner, field:shared_with", "write": "owner"})
        );
        let pets = &items[2];
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
        let products = &items[3];
        assert_eq!(products["access"], json!({"read": "public", "write": "public"}));
        assert_eq!(products["tasks"], json!([]));
        assert_eq!(products["schema"]["properties"]["precio"]["type"], "number");
    }
}
