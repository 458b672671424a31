//! The stored form of documents (`{_id: ObjectId, _v: version, ...}`) and the api form
//! (`{"id": "<hex>", ...}`), conversions between them, [`StoredDocument`]: what a read
//! returns, and the one rule on stored field names ([`check_field_names`]).

use mongodb::bson::{self, Bson, Document, oid::ObjectId};
use serde_json::Value;

/// Field holding the document's version (1 on create, +1 per change): ETags and event order.
pub const VERSION_FIELD: &str = "_v";

/// Why a stored field name is refused: MongoDB reads a leading `$` as an operator and a `.` as
/// a path, so such names cannot be queried, updated or even round-tripped reliably.
pub const FIELD_NAME_RULE: &str =
    "is not a storable field name: names may not start with '$' or contain '.'";

/// A field whose name breaks the rule ([`FIELD_NAME_RULE`]): its path, parents dotted
/// (`meta.$ne`, `tags.0.a.b`), as the api names failing fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field '{path}' {FIELD_NAME_RULE}")]
pub struct FieldNameError {
    pub path: String,
}

/// Whether `name` may be a stored field name (not empty-checked: MongoDB stores `""`).
pub fn is_storable_field_name(name: &str) -> bool {
    !name.starts_with('$') && !name.contains('.')
}

/// Checks every field name of `document`, at any depth (inside arrays too): the first one that
/// starts with `$` or contains `.` is the error. [`Store::commit`](crate::Store::commit) runs it
/// on everything it writes, so no write path can store such a name.
pub fn check_field_names(document: &Document) -> Result<(), FieldNameError> {
    check_document(document, "")
}

/// Checks the values of an update operator document (`{"$set": {"a.b": v}}`): its operators and
/// the paths they name are Courier's own; the values written are checked like documents.
pub fn check_update_values(update: &Document) -> Result<(), FieldNameError> {
    for (_operator, argument) in update {
        if let Bson::Document(fields) = argument {
            for (path, value) in fields {
                check_value(value, path)?;
            }
        }
    }
    Ok(())
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_owned() } else { format!("{parent}.{name}") }
}

fn check_document(document: &Document, parent: &str) -> Result<(), FieldNameError> {
    for (name, value) in document {
        let path = join(parent, name);
        if !is_storable_field_name(name) {
            return Err(FieldNameError { path });
        }
        check_value(value, &path)?;
    }
    Ok(())
}

fn check_value(value: &Bson, path: &str) -> Result<(), FieldNameError> {
    match value {
        Bson::Document(document) => check_document(document, path),
        Bson::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(index, item)| check_value(item, &join(path, &index.to_string()))),
        _ => Ok(()),
    }
}

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
    fn operator_and_path_names_are_refused_at_any_depth() {
        let id = ObjectId::new();
        for (body, path) in [
            (json!({"$where": "1"}), "$where"),
            (json!({"a.b": 1}), "a.b"),
            (json!({"meta": {"$ne": null}}), "meta.$ne"),
            (json!({"tags": [1, {"x": {"y.z": 2}}]}), "tags.1.x.y.z"),
            (json!({"ok": [[{"$gt": ""}]]}), "ok.0.0.$gt"),
        ] {
            let stored = to_stored(id, 1, &body).unwrap();
            assert_eq!(
                check_field_names(&stored),
                Err(FieldNameError { path: path.into() }),
                "{body}"
            );
        }
        // Values may hold anything; names with '$' or '.' inside (not leading) are fine… for '$'.
        let fine = json!({"price$": "$1.00", "a": {"b": ["$ne", "x.y"]}, "": 1});
        assert_eq!(check_field_names(&to_stored(id, 1, &fine).unwrap()), Ok(()));
        // Updates: operators and their paths are Courier's; the values they write are checked.
        let update = mongodb::bson::doc! {"$set": {"reactions.x": 1, "meta": {"$ne": 1}}};
        assert_eq!(check_update_values(&update), Err(FieldNameError { path: "meta.$ne".into() }));
        let update = mongodb::bson::doc! {"$inc": {"reactions.x": 1}, "$push": {"ids": 1}};
        assert_eq!(check_update_values(&update), Ok(()));
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
