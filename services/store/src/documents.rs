//! The stored form of documents (`{_id: ObjectId, _v: version, ...}`) and the api form
//! (`{"id": "<hex>", ...}`), and conversions between them.

use mongodb::bson::{self, Bson, Document, oid::ObjectId};
use serde_json::Value;

/// Field holding the document's version (1 on create, +1 per change): ETags and event order.
pub const VERSION_FIELD: &str = "_v";

/// The stored form of a JSON object body.
pub fn to_stored(id: ObjectId, version: i64, body: &Value) -> Result<Document, bson::ser::Error> {
    let mut doc = bson::to_document(body)?;
    doc.insert("_id", id);
    doc.insert(VERSION_FIELD, version);
    Ok(doc)
}

/// The api form of a stored document: `_id` becomes `id`, internal fields are dropped.
pub fn to_api(mut doc: Document) -> Value {
    let id = match doc.remove("_id") {
        Some(Bson::ObjectId(oid)) => Value::String(oid.to_hex()),
        Some(other) => other.into_relaxed_extjson(),
        None => Value::Null,
    };
    doc.remove(VERSION_FIELD);
    let mut object = serde_json::Map::with_capacity(doc.len() + 1);
    object.insert("id".into(), id);
    for (key, value) in doc {
        object.insert(key, value.into_relaxed_extjson());
    }
    Value::Object(object)
}

/// The stored version of a document (0 if absent).
pub fn version_of(doc: &Document) -> i64 {
    match doc.get(VERSION_FIELD) {
        Some(Bson::Int64(v)) => *v,
        Some(Bson::Int32(v)) => i64::from(*v),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_and_api_forms_round_trip() {
        let id = ObjectId::new();
        let body = json!({"nombre": "Camiseta", "precio": 25.99, "stock": 3, "tags": ["a"]});
        let stored = to_stored(id, 1, &body).unwrap();
        assert_eq!(version_of(&stored), 1);
        assert_eq!(
            to_api(stored),
            json!({"id": id.to_hex(), "nombre": "Camiseta", "precio": 25.99, "stock": 3, "tags": ["a"]})
        );
    }
}
