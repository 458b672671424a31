//! The stored form of documents (`{_id: ObjectId, _v: version, ...}`) and the api form
//! (`{"id": "<hex>", ...}`), conversions between them, and [`StoredDocument`]: what a read
//! returns.

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

/// A document as read: its id, its version and its api form.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDocument {
    pub id: ObjectId,
    /// The `_v` field: the `ETag`, and the version a change must be based on.
    pub version: i64,
    /// The api form (`{"id": "<hex>", ...}`, internal fields dropped).
    pub body: Value,
}

impl StoredDocument {
    /// From the stored form; `None` for a document whose `_id` is not an `ObjectId` (Courier
    /// never writes one).
    pub fn from_stored(doc: Document) -> Option<Self> {
        let id = doc.get_object_id("_id").ok()?;
        let version = version_of(&doc);
        Some(StoredDocument { id, version, body: to_api(doc) })
    }

    /// The api form without its `id`: the fields a change starts from.
    pub fn fields(&self) -> serde_json::Map<String, Value> {
        let mut fields = match &self.body {
            Value::Object(object) => object.clone(),
            _ => serde_json::Map::new(),
        };
        fields.remove("id");
        fields
    }
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

    #[test]
    fn a_read_document_carries_its_id_version_and_api_form() {
        let id = ObjectId::new();
        let read =
            StoredDocument::from_stored(to_stored(id, 4, &json!({"a": 1})).unwrap()).unwrap();
        assert_eq!((read.id, read.version), (id, 4));
        assert_eq!(read.body, json!({"id": id.to_hex(), "a": 1}));
        assert_eq!(Value::Object(read.fields()), json!({"a": 1}));
        let foreign = mongodb::bson::doc! {"_id": "not-an-object-id", "_v": 1_i64};
        assert_eq!(StoredDocument::from_stored(foreign), None);
    }
}
