//! Reading documents: [`Store::get`] one by id, and [`Store::list`] a page of them from a typed
//! [`ListSpec`] (field conditions, sort keys, a cursor, a limit). The MongoDB filter and sort
//! built here are the only list queries Courier runs. Values are [`Scalar`]s, never documents,
//! so nothing a client sends (a filter value, a crafted cursor) can become a query operator.
//!
//! Order is total: the sort keys, then `_id`. A cursor holds the previous page's last sort values
//! and id, and the next page starts strictly after that position, so pages never skip or repeat
//! a document. MongoDB sorts null (and a missing field) before every other value.
//!
//! Cursors are opaque text that clients hand back, so they are decoded and checked here, in one
//! place ([`Cursor::decode`]): base64 JSON naming the sort it belongs to, one value per sort key
//! that must be a scalar of that key's [`ValueKind`] (or null), and an `ObjectId`. Anything else
//! is a [`CursorError`] and nothing is queried.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc, oid::ObjectId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{change::CREATED_BY, documents::StoredDocument, store::Store};

pub use courier_core::{
    collection_spec::Grant,
    filter::{Condition, Filter, Operator, Scalar},
};

fn to_bson(value: &Scalar) -> Bson {
    match value {
        Scalar::Null => Bson::Null,
        Scalar::Bool(b) => Bson::Boolean(*b),
        Scalar::Int(i) => Bson::Int64(*i),
        Scalar::Double(f) => Bson::Double(*f),
        Scalar::String(s) => Bson::String(s.clone()),
    }
}

/// One condition as MongoDB's query language says it.
fn condition_document(condition: &Condition) -> Bson {
    let values = || condition.values.iter().map(to_bson).collect::<Vec<_>>();
    let first = || condition.values.first().map_or(Bson::Null, to_bson);
    match condition.operator {
        Operator::Eq => first(),
        Operator::In if condition.values.len() == 1 => first(),
        Operator::In => Bson::Document(doc! {"$in": values()}),
        Operator::Ne => Bson::Document(doc! {"$ne": first()}),
        Operator::Gt => Bson::Document(doc! {"$gt": first()}),
        Operator::Gte => Bson::Document(doc! {"$gte": first()}),
        Operator::Lt => Bson::Document(doc! {"$lt": first()}),
        Operator::Lte => Bson::Document(doc! {"$lte": first()}),
    }
}

/// The documents a per-document read rule lets its user read: those they created, or whose
/// named fields hold their id (an array field: one of its values).
fn grant_document(grant: &Grant) -> Document {
    let mut alternatives = Vec::with_capacity(1 + grant.fields.len());
    if grant.owner {
        alternatives.push(Bson::Document(doc! {CREATED_BY: grant.user_id.clone()}));
    }
    for field in &grant.fields {
        alternatives.push(Bson::Document(doc! {field.clone(): grant.user_id.clone()}));
    }
    doc! {"$or": alternatives}
}

/// What a field holds (from the collection's schema), so a cursor value can be checked against
/// it. Null (a missing field) fits every kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Boolean,
    /// Whole numbers (a double without a fraction, as JSON Schema's `integer` allows, too).
    Integer,
    Number,
    String,
    /// Not one scalar type (no type, several, objects or arrays): any scalar.
    Any,
}

impl ValueKind {
    fn describe(self) -> &'static str {
        match self {
            ValueKind::Boolean => "true, false or null",
            ValueKind::Integer => "a whole number or null",
            ValueKind::Number => "a number or null",
            ValueKind::String => "a string or null",
            ValueKind::Any => "a scalar",
        }
    }
}

impl ValueKind {
    /// Whether `value` can be one of a field of this kind.
    pub fn fits(self, value: &Scalar) -> bool {
        match (value, self) {
            (Scalar::Null, _) | (_, ValueKind::Any) => true,
            (Scalar::Bool(_), ValueKind::Boolean) => true,
            (Scalar::Int(_), ValueKind::Integer | ValueKind::Number) => true,
            (Scalar::Double(f), ValueKind::Integer) => f.fract() == 0.0,
            (Scalar::Double(_), ValueKind::Number) => true,
            (Scalar::String(_), ValueKind::String) => true,
            _ => false,
        }
    }
}

/// One sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub field: String,
    pub descending: bool,
    /// What the field holds: a cursor's value for this key must fit it.
    pub kind: ValueKind,
}

/// Where a page ended: its last document's value of each sort key, and its id.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// One value per sort key of the [`ListSpec`], in order.
    pub values: Vec<Scalar>,
    pub id: ObjectId,
}

/// Why a client's cursor text is refused (the api answers 400 naming `cursor`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("is malformed; use the 'next' value of a previous page")]
    Malformed,
    #[error("belongs to a different sort; repeat the same sort with it")]
    OtherSort,
    #[error(
        "holds a value for '{field}' that is not {expected}; use the 'next' value of a previous page"
    )]
    WrongType { field: String, expected: &'static str },
}

/// The opaque cursor's content: the sort it belongs to, the last document's sort values and id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CursorPosition {
    #[serde(rename = "s")]
    sort: String,
    #[serde(rename = "v")]
    values: Vec<Value>,
    id: String,
}

/// The sort as text (`-age,name`): what a cursor is bound to.
fn sort_text(sort: &[SortKey]) -> String {
    let keys: Vec<String> = sort
        .iter()
        .map(|k| if k.descending { format!("-{}", k.field) } else { k.field.clone() })
        .collect();
    keys.join(",")
}

impl Cursor {
    /// The opaque text of this position in `sort`'s order (what a page's `next` holds).
    pub fn encode(&self, sort: &[SortKey]) -> String {
        let position = CursorPosition {
            sort: sort_text(sort),
            values: self.values.iter().map(Scalar::to_json).collect(),
            id: self.id.to_hex(),
        };
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&position).expect("cursor serializes"))
    }

    /// Decodes and checks a client's cursor for `sort`: the same sort, one scalar of each key's
    /// kind per key, and an `ObjectId`. Only what passes can reach a query, so a crafted cursor
    /// holding `{"$ne": …}`, `{"$regex": …}` or a value of another type is refused.
    pub fn decode(text: &str, sort: &[SortKey]) -> Result<Cursor, CursorError> {
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| CursorError::Malformed)?;
        let position: CursorPosition =
            serde_json::from_slice(&bytes).map_err(|_| CursorError::Malformed)?;
        if position.sort != sort_text(sort) || position.values.len() != sort.len() {
            return Err(CursorError::OtherSort);
        }
        let id = ObjectId::parse_str(&position.id).map_err(|_| CursorError::Malformed)?;
        let mut values = Vec::with_capacity(sort.len());
        for (value, key) in position.values.iter().zip(sort) {
            let scalar = Scalar::from_json(value).ok_or(CursorError::Malformed)?;
            if !key.kind.fits(&scalar) {
                return Err(CursorError::WrongType {
                    field: key.field.clone(),
                    expected: key.kind.describe(),
                });
            }
            values.push(scalar);
        }
        Ok(Cursor { values, id })
    }
}

/// A list request.
#[derive(Debug, Clone, PartialEq)]
pub struct ListSpec {
    /// What the documents must match.
    pub filter: Filter,
    /// Under a per-document read rule: the documents the caller may read (part of the query,
    /// so pages and `limit` stay exact). `None`: every document.
    pub readable: Option<Grant>,
    pub sort: Vec<SortKey>,
    /// Start after this position (from [`Next::After`] of the previous page, same sort).
    pub after: Option<Cursor>,
    /// Most documents in the page.
    pub limit: u32,
}

/// A page of documents.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<StoredDocument>,
    pub next: Next,
}

/// What follows a page.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Nothing: this was the last page.
    End,
    /// More documents, from this cursor on.
    After(Cursor),
    /// More documents, but the page's last document holds an object or array in sort key
    /// `field`: no cursor can point after it (cursor values are scalars).
    NotScalar { field: String },
}

impl ListSpec {
    /// The MongoDB filter: the field conditions, the read rule's documents, and the cursor's
    /// "after the previous page", all of which must hold.
    pub fn filter_document(&self) -> Document {
        let mut parts: Vec<Document> = Vec::new();
        let mut fields = Document::new();
        let mut repeated = Vec::new();
        for condition in &self.filter.conditions {
            let value = condition_document(condition);
            if fields.contains_key(&condition.field) {
                repeated.push(doc! {condition.field.clone(): value});
            } else {
                fields.insert(condition.field.clone(), value);
            }
        }
        if !fields.is_empty() {
            parts.push(fields);
        }
        parts.extend(repeated);
        if let Some(grant) = &self.readable {
            parts.push(grant_document(grant));
        }
        if let Some(after) = &self.after {
            parts.push(self.after_cursor(after));
        }
        match parts.len() {
            0 => Document::new(),
            1 => parts.pop().expect("one part"),
            _ => doc! {"$and": parts.into_iter().map(Bson::Document).collect::<Vec<_>>()},
        }
    }

    /// The MongoDB sort document (always ending with `_id` for a total order).
    pub fn sort_document(&self) -> Document {
        let mut sort = Document::new();
        for key in &self.sort {
            sort.insert(key.field.clone(), if key.descending { -1 } else { 1 });
        }
        sort.insert("_id", 1);
        sort
    }

    /// `(k1 > v1) or (k1 = v1 and k2 > v2) or … or (all equal and _id > id)`. A value missing
    /// from the cursor counts as null (the caller checks it has one per sort key).
    fn after_cursor(&self, after: &Cursor) -> Document {
        let value = |depth: usize| after.values.get(depth).map_or(Bson::Null, to_bson);
        let mut alternatives = Vec::with_capacity(self.sort.len() + 1);
        for depth in 0..=self.sort.len() {
            let mut conditions: Vec<Document> = self
                .sort
                .iter()
                .take(depth)
                .enumerate()
                .map(|(i, key)| doc! {key.field.clone(): value(i)})
                .collect();
            conditions.push(match self.sort.get(depth) {
                Some(key) => after_value(key, value(depth)),
                None => doc! {"_id": {"$gt": after.id}},
            });
            alternatives.push(Bson::Document(doc! {"$and": conditions}));
        }
        doc! {"$or": alternatives}
    }

    /// What follows a full page whose last document is `last`.
    fn next_after(&self, last: &StoredDocument) -> Next {
        let mut values = Vec::with_capacity(self.sort.len());
        for key in &self.sort {
            match Scalar::from_json(last.body.get(&key.field).unwrap_or(&Value::Null)) {
                Some(value) => values.push(value),
                None => return Next::NotScalar { field: key.field.clone() },
            }
        }
        Next::After(Cursor { values, id: last.id })
    }
}

/// The documents that sort after `value` on `key`. MongoDB sorts null/missing first.
fn after_value(key: &SortKey, value: Bson) -> Document {
    let field = key.field.clone();
    match (key.descending, value) {
        (false, Bson::Null) => doc! {field: {"$ne": Bson::Null}},
        (false, v) => doc! {field: {"$gt": v}},
        // Descending: nulls come last, so nothing sorts after a null…
        (true, Bson::Null) => doc! {"_id": {"$exists": false}},
        // …and after a value come smaller values, then nulls.
        (true, v) => doc! {"$or": [{field.clone(): {"$lt": v}}, {field: Bson::Null}]},
    }
}

impl Store {
    /// The document `id` of `collection`, if it exists.
    pub async fn get(
        &self,
        collection: &str,
        id: ObjectId,
    ) -> mongodb::error::Result<Option<StoredDocument>> {
        let found = self
            .collection(collection)
            .find_one(doc! {"_id": id})
            .max_time(self.query_timeout())
            .await?;
        Ok(found.and_then(StoredDocument::from_stored))
    }

    /// One page of `collection` as `spec` asks (at most `spec.limit` documents, at least one).
    pub async fn list(&self, collection: &str, spec: &ListSpec) -> mongodb::error::Result<Page> {
        let limit = spec.limit.max(1);
        let mut found: Vec<Document> = self
            .collection(collection)
            .find(spec.filter_document())
            .max_time(self.query_timeout())
            .sort(spec.sort_document())
            .limit(i64::from(limit) + 1)
            .await?
            .try_collect()
            .await?;
        let more = found.len() > limit as usize;
        found.truncate(limit as usize);
        let items: Vec<StoredDocument> =
            found.into_iter().filter_map(StoredDocument::from_stored).collect();
        let next = match items.last() {
            Some(last) if more => spec.next_after(last),
            _ => Next::End,
        };
        Ok(Page { items, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(field: &str, descending: bool) -> SortKey {
        SortKey { field: field.into(), descending, kind: ValueKind::Any }
    }

    fn typed(field: &str, kind: ValueKind) -> SortKey {
        SortKey { field: field.into(), descending: false, kind }
    }

    fn forge(sort: &str, values: Value, id: &str) -> String {
        let position = json!({"s": sort, "v": values, "id": id});
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&position).unwrap())
    }

    const OID: &str = "65f0c0ffee0123456789abcd";

    #[test]
    fn cursors_round_trip_for_their_own_sort_only() {
        let sort = vec![typed("weight", ValueKind::Number), key("name", true)];
        let cursor = Cursor {
            values: vec![Scalar::Double(4.5), Scalar::Null],
            id: ObjectId::parse_str(OID).unwrap(),
        };
        let text = cursor.encode(&sort);
        assert_eq!(Cursor::decode(&text, &sort), Ok(cursor));
        assert_eq!(Cursor::decode(&text, &sort[..1]), Err(CursorError::OtherSort));
        assert_eq!(Cursor::decode(&text, &[key("weight", false)]), Err(CursorError::OtherSort));
        for garbage in ["", "!!", "e30", "bnVsbA"] {
            assert_eq!(Cursor::decode(garbage, &sort), Err(CursorError::Malformed), "{garbage}");
        }
    }

    /// A cursor is base64 JSON a client can forge: operators, arrays, ids that are not ids and
    /// values of another type than the sort field's are refused before any query is built.
    #[test]
    fn a_crafted_cursor_is_refused_before_any_query() {
        let name = [typed("name", ValueKind::String)];
        for (values, id) in [
            (json!([{"$ne": null}]), OID),
            (json!([{"$regex": ".*"}]), OID),
            (json!([["$where"]]), OID),
            (json!(["Rex"]), "{\"$gt\": \"\"}"),
            (json!(["Rex", "extra"]), OID),
        ] {
            let crafted = forge("name", values.clone(), id);
            assert!(Cursor::decode(&crafted, &name).is_err(), "{values} {id}");
        }
        let wrong = |sort: &[SortKey], value: Value| {
            Cursor::decode(&forge(&sort_text(sort), json!([value]), OID), sort)
        };
        assert_eq!(
            wrong(&name, json!(3)),
            Err(CursorError::WrongType { field: "name".into(), expected: "a string or null" })
        );
        let age = [typed("age", ValueKind::Integer)];
        assert!(matches!(wrong(&age, json!("4")), Err(CursorError::WrongType { .. })));
        assert!(matches!(wrong(&age, json!(4.5)), Err(CursorError::WrongType { .. })));
        assert!(wrong(&age, json!(4.0)).is_ok());
        assert!(wrong(&age, json!(null)).is_ok());
        let vaccinated = [typed("vaccinated", ValueKind::Boolean)];
        assert!(matches!(wrong(&vaccinated, json!(0)), Err(CursorError::WrongType { .. })));
        let weight = [typed("weight", ValueKind::Number)];
        assert!(wrong(&weight, json!(3)).is_ok());
        assert!(matches!(wrong(&weight, json!(true)), Err(CursorError::WrongType { .. })));
        // A string that merely looks like an operator is a compared value.
        let looks_like = Cursor::decode(&forge("name", json!(["$ne"]), OID), &name).unwrap();
        assert_eq!(looks_like.values, [Scalar::String("$ne".into())]);
    }

    fn condition(field: &str, operator: Operator, values: Vec<Scalar>) -> Condition {
        Condition { field: field.into(), operator, values }
    }

    #[test]
    fn conditions_are_comparisons_that_all_hold() {
        let spec = ListSpec {
            filter: Filter {
                conditions: vec![
                    condition(
                        "species",
                        Operator::In,
                        vec![Scalar::String("Dog".into()), Scalar::String("Cat".into())],
                    ),
                    condition("vaccinated", Operator::Eq, vec![Scalar::Bool(true)]),
                    condition("age", Operator::Gte, vec![Scalar::Int(3)]),
                    condition("weight", Operator::Eq, vec![Scalar::Double(4.5)]),
                    condition("age", Operator::Lt, vec![Scalar::Int(9)]),
                    condition("name", Operator::Ne, vec![Scalar::String("Rex".into())]),
                ],
            },
            readable: None,
            sort: vec![],
            after: None,
            limit: 10,
        };
        assert_eq!(
            spec.filter_document(),
            doc! {"$and": [
                {"species": {"$in": ["Dog", "Cat"]}, "vaccinated": true, "age": {"$gte": 3_i64}, "weight": 4.5, "name": {"$ne": "Rex"}},
                {"age": {"$lt": 9_i64}},
            ]}
        );
        assert_eq!(spec.sort_document(), doc! {"_id": 1});
    }

    #[test]
    fn a_per_document_read_rule_is_part_of_the_query() {
        let spec = ListSpec {
            filter: Filter {
                conditions: vec![condition(
                    "title",
                    Operator::Eq,
                    vec![Scalar::String("x".into())],
                )],
            },
            readable: Some(Grant {
                user_id: "u1".into(),
                owner: true,
                fields: vec!["shared_with".into()],
            }),
            sort: vec![],
            after: None,
            limit: 10,
        };
        assert_eq!(
            spec.filter_document(),
            doc! {"$and": [
                {"title": "x"},
                {"$or": [{"created_by": "u1"}, {"shared_with": "u1"}]},
            ]}
        );
    }

    #[test]
    fn a_cursor_continues_strictly_after_the_last_position() {
        let oid = ObjectId::parse_str("65f0c0ffee0123456789abcd").unwrap();
        let spec = ListSpec {
            filter: Filter {
                conditions: vec![condition(
                    "species",
                    Operator::Eq,
                    vec![Scalar::String("Dog".into())],
                )],
            },
            readable: None,
            sort: vec![key("age", true), key("name", false)],
            after: Some(Cursor { values: vec![Scalar::Int(4), Scalar::Null], id: oid }),
            limit: 2,
        };
        assert_eq!(spec.sort_document(), doc! {"age": -1, "name": 1, "_id": 1});
        assert_eq!(
            spec.filter_document(),
            doc! {"$and": [
                {"species": "Dog"},
                {"$or": [
                    {"$and": [{"$or": [{"age": {"$lt": 4_i64}}, {"age": Bson::Null}]}]},
                    {"$and": [{"age": 4_i64}, {"name": {"$ne": Bson::Null}}]},
                    {"$and": [{"age": 4_i64}, {"name": Bson::Null}, {"_id": {"$gt": oid}}]},
                ]},
            ]}
        );
        // Without conditions the cursor condition stands alone; a descending null is last.
        let spec = ListSpec {
            filter: Filter::default(),
            readable: None,
            sort: vec![key("age", true)],
            after: Some(Cursor { values: vec![Scalar::Null], id: oid }),
            limit: 2,
        };
        assert_eq!(
            spec.filter_document(),
            doc! {"$or": [
                {"$and": [{"_id": {"$exists": false}}]},
                {"$and": [{"age": Bson::Null}, {"_id": {"$gt": oid}}]},
            ]}
        );
    }

    #[test]
    fn values_are_scalars_so_nothing_becomes_an_operator() {
        for injected in
            [json!({"$ne": null}), json!({"$regex": ".*"}), json!({"$gt": ""}), json!(["$where"])]
        {
            assert_eq!(Scalar::from_json(&injected), None, "{injected}");
        }
        assert_eq!(Scalar::from_json(&json!(3)), Some(Scalar::Int(3)));
        assert_eq!(Scalar::from_json(&json!(3.0)), Some(Scalar::Double(3.0)));
        assert_eq!(Scalar::from_json(&json!("$ne")), Some(Scalar::String("$ne".into())));
        // A string that looks like an operator stays a compared value.
        let spec = ListSpec {
            filter: Filter::default(),
            readable: None,
            sort: vec![key("name", false)],
            after: Some(Cursor {
                values: vec![Scalar::String("$regex".into())],
                id: ObjectId::parse_str("65f0c0ffee0123456789abcd").unwrap(),
            }),
            limit: 1,
        };
        let filter = spec.filter_document();
        let first = filter.get_array("$or").unwrap()[0].as_document().unwrap().clone();
        assert_eq!(first, doc! {"$and": [{"name": {"$gt": "$regex"}}]});
        for value in [Scalar::Null, Scalar::Bool(false), Scalar::Int(-7), Scalar::Double(0.5)] {
            assert_eq!(Scalar::from_json(&value.to_json()), Some(value));
        }
    }

    #[test]
    fn the_next_cursor_comes_from_the_last_document_and_needs_scalars() {
        let id = ObjectId::new();
        let spec = ListSpec {
            filter: Filter::default(),
            readable: None,
            sort: vec![key("age", true), key("owner", false)],
            after: None,
            limit: 1,
        };
        let last = StoredDocument { id, version: 1, body: json!({"id": id.to_hex(), "age": 4}) };
        assert_eq!(
            spec.next_after(&last),
            Next::After(Cursor { values: vec![Scalar::Int(4), Scalar::Null], id })
        );
        let nested = StoredDocument {
            id,
            version: 1,
            body: json!({"id": id.to_hex(), "age": 4, "owner": {"$ne": null}}),
        };
        assert_eq!(spec.next_after(&nested), Next::NotScalar { field: "owner".into() });
    }
}
