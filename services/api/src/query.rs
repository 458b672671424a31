//! List queries: `?field=value` filters typed by the collection's schema (repeat a field for
//! "any of"), `sort=-age,name`, `limit` ≤ 1000, and opaque cursors for stable pagination
//! (sort keys plus `_id` as the tie-break, so pages never skip or repeat a document).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use mongodb::bson::{self, Bson, Document, doc, oid::ObjectId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    collections::{CollectionDef, FieldType, is_valid_field_name},
    error::ApiError,
};

pub const MAX_LIMIT: i64 = 1000;
pub const DEFAULT_LIMIT: i64 = 100;
const RESERVED: [&str; 3] = ["sort", "limit", "cursor"];

/// One sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub field: String,
    pub descending: bool,
}

/// A parsed list request.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub filter: Document,
    pub sort: Vec<SortKey>,
    pub limit: i64,
    /// The `sort` parameter as given (a cursor is only valid for the same sort).
    sort_text: String,
    after: Option<CursorPosition>,
}

/// Where the previous page ended: its last document's sort values and id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CursorPosition {
    #[serde(rename = "s")]
    sort: String,
    #[serde(rename = "v")]
    values: Vec<Value>,
    id: String,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

impl ListQuery {
    pub fn parse(def: &CollectionDef, params: &[(String, String)]) -> Result<Self, ApiError> {
        let mut filters: Vec<(String, Vec<Bson>)> = Vec::new();
        let (mut sort_text, mut limit, mut cursor) = (String::new(), DEFAULT_LIMIT, None);
        for (key, value) in params {
            match key.as_str() {
                "sort" => sort_text = value.clone(),
                "limit" => {
                    limit = value
                        .parse::<i64>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            bad(format!("limit must be a whole number from 1 to {MAX_LIMIT}"))
                        })?;
                }
                "cursor" => cursor = Some(value.clone()),
                field => {
                    let typed = filter_value(def, field, value)?;
                    match filters.iter_mut().find(|(f, _)| f == field) {
                        Some((_, values)) => values.push(typed),
                        None => filters.push((field.to_owned(), vec![typed])),
                    }
                }
            }
        }
        let sort = parse_sort(def, &sort_text)?;
        let mut filter = Document::new();
        for (field, mut values) in filters {
            let condition = if values.len() == 1 {
                values.remove(0)
            } else {
                Bson::Document(doc! {"$in": values})
            };
            filter.insert(field, condition);
        }
        let after = cursor.map(|c| decode_cursor(&c, &sort_text, sort.len())).transpose()?;
        Ok(ListQuery { filter, sort, limit, sort_text, after })
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

    /// The filter including the cursor's "after the previous page" condition.
    pub fn full_filter(&self) -> Result<Document, ApiError> {
        let Some(after) = &self.after else {
            return Ok(self.filter.clone());
        };
        let id = ObjectId::parse_str(&after.id).map_err(|_| malformed_cursor())?;
        let values: Vec<Bson> = after
            .values
            .iter()
            .map(|v| bson::to_bson(v).map_err(|_| malformed_cursor()))
            .collect::<Result<_, _>>()?;
        // (k1 > v1) or (k1 = v1 and k2 > v2) or … or (all equal and _id > id)
        let mut alternatives = Vec::new();
        for depth in 0..=self.sort.len() {
            let mut clause = Document::new();
            let mut conditions = Vec::new();
            for (key, value) in self.sort.iter().zip(&values).take(depth) {
                conditions.push(equal_to(&key.field, value));
            }
            conditions.push(match self.sort.get(depth) {
                Some(key) => after_value(key, &values[depth]),
                None => doc! {"_id": {"$gt": id}},
            });
            clause.insert("$and", conditions);
            alternatives.push(Bson::Document(clause));
        }
        let mut filter = self.filter.clone();
        let cursor_condition = doc! {"$or": alternatives};
        if filter.is_empty() {
            return Ok(cursor_condition);
        }
        filter = doc! {"$and": [Bson::Document(filter), Bson::Document(cursor_condition)]};
        Ok(filter)
    }

    /// The cursor for the page that ends with `last` (an api-form document).
    pub fn cursor_after(&self, last: &Value) -> Option<String> {
        let id = last.get("id")?.as_str()?.to_owned();
        let values =
            self.sort.iter().map(|k| last.get(&k.field).cloned().unwrap_or(Value::Null)).collect();
        let position = CursorPosition { sort: self.sort_text.clone(), values, id };
        Some(URL_SAFE_NO_PAD.encode(serde_json::to_vec(&position).expect("cursor serializes")))
    }
}

fn malformed_cursor() -> ApiError {
    bad("cursor is malformed; use the 'next' value of a previous page")
}

fn decode_cursor(text: &str, sort_text: &str, keys: usize) -> Result<CursorPosition, ApiError> {
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| malformed_cursor())?;
    let position: CursorPosition =
        serde_json::from_slice(&bytes).map_err(|_| malformed_cursor())?;
    if position.sort != sort_text || position.values.len() != keys {
        return Err(bad("cursor belongs to a different sort; repeat the same sort with it"));
    }
    Ok(position)
}

/// `field = value`, where a null value also matches a missing field (as MongoDB sorts them).
fn equal_to(field: &str, value: &Bson) -> Document {
    doc! {field: value.clone()}
}

/// The documents that sort after `value` on `key`. MongoDB sorts null/missing first.
fn after_value(key: &SortKey, value: &Bson) -> Document {
    match (key.descending, value) {
        (false, Bson::Null) => doc! {key.field.clone(): {"$ne": Bson::Null}},
        (false, v) => doc! {key.field.clone(): {"$gt": v.clone()}},
        // Descending: nulls come last, so nothing sorts after a null…
        (true, Bson::Null) => doc! {"_id": {"$exists": false}},
        // …and after a value come smaller values, then nulls.
        (true, v) => {
            doc! {"$or": [{key.field.clone(): {"$lt": v.clone()}}, {key.field.clone(): Bson::Null}]}
        }
    }
}

fn parse_sort(def: &CollectionDef, text: &str) -> Result<Vec<SortKey>, ApiError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let mut keys = Vec::new();
    for part in text.split(',') {
        let (field, descending) = match part.strip_prefix('-') {
            Some(f) => (f, true),
            None => (part, false),
        };
        if !is_valid_field_name(field) || def.field_type(field).is_none() {
            return Err(bad(format!(
                "cannot sort by '{part}': '{field}' is not a field of '{}'",
                def.name()
            )));
        }
        if keys.iter().any(|k: &SortKey| k.field == field) {
            return Err(bad(format!("sort names '{field}' twice")));
        }
        keys.push(SortKey { field: field.to_owned(), descending });
    }
    Ok(keys)
}

/// A filter value typed by the field's schema type.
fn filter_value(def: &CollectionDef, field: &str, text: &str) -> Result<Bson, ApiError> {
    if !is_valid_field_name(field) {
        return Err(bad(format!(
            "'{field}' is not a field name (and not one of {})",
            RESERVED.join(", ")
        )));
    }
    let Some(field_type) = def.field_type(field) else {
        return Err(bad(format!("'{field}' is not a field of '{}'", def.name())));
    };
    let wrong = |expected: &str| bad(format!("filter {field}={text}: '{field}' is {expected}"));
    Ok(match field_type {
        FieldType::String | FieldType::Other => Bson::String(text.to_owned()),
        FieldType::Integer => Bson::Int64(text.parse().map_err(|_| wrong("a whole number"))?),
        FieldType::Number => {
            let n: f64 = text.parse().map_err(|_| wrong("a number"))?;
            if !n.is_finite() {
                return Err(wrong("a finite number"));
            }
            Bson::Double(n)
        }
        FieldType::Boolean => match text {
            "true" => Bson::Boolean(true),
            "false" => Bson::Boolean(false),
            _ => return Err(wrong("true or false")),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_core::collection_spec::CollectionSpec;

    fn pets() -> CollectionDef {
        let spec: CollectionSpec = serde_json::from_value(serde_json::json!({
            "name": "pets",
            "schema": {"type": "object", "additionalProperties": false, "properties": {
                "name": {"type": "string"}, "species": {"type": "string"}, "age": {"type": "integer"},
                "weight": {"type": "number"}, "vaccinated": {"type": "boolean"}}}
        }))
        .unwrap();
        CollectionDef::from_spec(spec).unwrap()
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn filters_are_typed_by_the_schema_and_repeats_mean_any_of() {
        let q = ListQuery::parse(
            &pets(),
            &params(&[
                ("species", "Dog"),
                ("vaccinated", "true"),
                ("age", "3"),
                ("species", "Cat"),
            ]),
        )
        .unwrap();
        assert_eq!(
            q.filter,
            doc! {"species": {"$in": ["Dog", "Cat"]}, "vaccinated": true, "age": 3_i64}
        );
        let q = ListQuery::parse(&pets(), &params(&[("weight", "4.5")])).unwrap();
        assert_eq!(q.filter, doc! {"weight": 4.5});
    }

    #[test]
    fn bad_filters_name_the_field() {
        for (pairs, expected) in [
            (vec![("age", "old")], "'age' is a whole number"),
            (vec![("vaccinated", "yes")], "'vaccinated' is true or false"),
            (vec![("weight", "NaN")], "'weight' is a finite number"),
            (vec![("colour", "red")], "'colour' is not a field of 'pets'"),
            (vec![("$where", "1")], "'$where' is not a field name"),
            (vec![("limit", "1001")], "limit must be a whole number from 1 to 1000"),
            (vec![("sort", "-colour")], "cannot sort by '-colour'"),
            (vec![("sort", "age,-age")], "sort names 'age' twice"),
            (vec![("cursor", "!!")], "cursor is malformed"),
        ] {
            match ListQuery::parse(&pets(), &params(&pairs)) {
                Err(ApiError::BadRequest(message)) => {
                    assert!(message.contains(expected), "{message} lacks {expected}")
                }
                other => panic!("{pairs:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn a_cursor_continues_after_the_last_document_of_the_same_sort() {
        let q =
            ListQuery::parse(&pets(), &params(&[("sort", "-age"), ("species", "Dog")])).unwrap();
        assert_eq!(q.sort_document(), doc! {"age": -1, "_id": 1});
        let last = serde_json::json!({"id": "65f0c0ffee0123456789abcd", "age": 4});
        let cursor = q.cursor_after(&last).unwrap();
        let next = ListQuery::parse(
            &pets(),
            &params(&[("sort", "-age"), ("species", "Dog"), ("cursor", &cursor)]),
        )
        .unwrap();
        let oid = ObjectId::parse_str("65f0c0ffee0123456789abcd").unwrap();
        assert_eq!(
            next.full_filter().unwrap(),
            doc! {"$and": [
                {"species": "Dog"},
                {"$or": [
                    {"$and": [{"$or": [{"age": {"$lt": 4_i64}}, {"age": Bson::Null}]}]},
                    {"$and": [{"age": 4_i64}, {"_id": {"$gt": oid}}]},
                ]},
            ]}
        );
        let other_sort =
            ListQuery::parse(&pets(), &params(&[("sort", "age"), ("cursor", &cursor)]));
        assert!(matches!(other_sort, Err(ApiError::BadRequest(m)) if m.contains("different sort")));
    }
}
