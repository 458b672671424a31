//! List query strings: filters (`?species=Dog&age[gte]=3`, repeat a field for "any of"; parsed
//! by `courier_core::filter`, the same parser subscriptions use), `sort=-age,name`,
//! `limit` ≤ 1000, and opaque cursors for stable pagination, parsed into the store's typed
//! [`ListSpec`] (the store builds the MongoDB query from it, and decodes and checks cursors:
//! [`Cursor::decode`]).

use courier_core::filter::FilterError;
use courier_store::{Cursor, Filter, Grant, ListSpec, SortKey, ValueKind};

use crate::{
    collections::{CollectionDef, FieldType, is_valid_field_name},
    error::ApiError,
};

pub const MAX_LIMIT: u32 = 1000;
pub const DEFAULT_LIMIT: u32 = 100;

/// A parsed list request: what the store runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub spec: ListSpec,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

/// A filter refused: 400 naming the field.
pub fn filter_error(err: FilterError) -> ApiError {
    ApiError::InvalidFilter { field: err.field, reason: err.message }
}

impl ListQuery {
    /// The request's parameters, for a caller reading `readable` (`None`: every document).
    pub fn parse(
        def: &CollectionDef,
        params: &[(String, String)],
        readable: Option<Grant>,
    ) -> Result<Self, ApiError> {
        let mut filter = Filter::default();
        let (mut sort_text, mut limit, mut cursor) = (String::new(), DEFAULT_LIMIT, None);
        for (key, value) in params {
            match key.as_str() {
                "sort" => sort_text = value.clone(),
                "limit" => {
                    limit = value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            bad(format!("limit must be a whole number from 1 to {MAX_LIMIT}"))
                        })?;
                }
                "cursor" => cursor = Some(value.clone()),
                key => filter.add_query_pair(def, key, value).map_err(filter_error)?,
            }
        }
        let sort = parse_sort(def, &sort_text)?;
        let after = cursor
            .map(|text| Cursor::decode(&text, &sort))
            .transpose()
            .map_err(|err| ApiError::invalid_parameter("cursor", err.to_string()))?;
        Ok(ListQuery { spec: ListSpec { filter, readable, sort, after, limit } })
    }

    /// The opaque text of `cursor` (a position in this query's order).
    pub fn cursor_text(&self, cursor: &Cursor) -> String {
        cursor.encode(&self.spec.sort)
    }
}

/// What a field of this schema type holds, for checking cursor values.
fn value_kind(field_type: FieldType) -> ValueKind {
    match field_type {
        FieldType::String => ValueKind::String,
        FieldType::Integer => ValueKind::Integer,
        FieldType::Number => ValueKind::Number,
        FieldType::Boolean => ValueKind::Boolean,
        FieldType::Other => ValueKind::Any,
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
        let field_type = def.field_type(field).filter(|_| is_valid_field_name(field));
        let Some(field_type) = field_type else {
            return Err(bad(format!(
                "cannot sort by '{part}': '{field}' is not a field of '{}'",
                def.name()
            )));
        };
        if keys.iter().any(|k: &SortKey| k.field == field) {
            return Err(bad(format!("sort names '{field}' twice")));
        }
        keys.push(SortKey { field: field.to_owned(), descending, kind: value_kind(field_type) });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_core::collection_spec::CollectionSpec;
    use courier_store::Scalar;
    use mongodb::bson::{Bson, doc, oid::ObjectId};

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
            None,
        )
        .unwrap();
        assert_eq!(
            q.spec.filter_document(),
            doc! {"species": {"$in": ["Dog", "Cat"]}, "vaccinated": true, "age": 3_i64}
        );
        let q = ListQuery::parse(&pets(), &params(&[("weight", "4.5")]), None).unwrap();
        assert_eq!(q.spec.filter_document(), doc! {"weight": 4.5});
        let q = ListQuery::parse(
            &pets(),
            &params(&[("age[gte]", "3"), ("age[lt]", "9"), ("species[ne]", "Cat")]),
            None,
        )
        .unwrap();
        assert_eq!(
            q.spec.filter_document(),
            doc! {"$and": [{"age": {"$gte": 3_i64}, "species": {"$ne": "Cat"}}, {"age": {"$lt": 9_i64}}]}
        );
    }

    #[test]
    fn bad_filters_name_the_field() {
        for (pairs, expected) in [
            (vec![("age", "old")], "'age' is a whole number"),
            (vec![("vaccinated", "yes")], "'vaccinated' is true or false"),
            (vec![("weight", "NaN")], "'weight' is a finite number"),
            (vec![("colour", "red")], "'colour' is not a field of 'pets'"),
            (vec![("$where", "1")], "'$where' is not a field name"),
            (vec![("age[gte]", "old")], "'age' is a whole number"),
            (vec![("age[near]", "3")], "'near' is not an operator"),
            (vec![("vaccinated[gt]", "true")], "ranges apply to strings and numbers"),
            (vec![("limit", "1001")], "limit must be a whole number from 1 to 1000"),
            (vec![("sort", "-colour")], "cannot sort by '-colour'"),
            (vec![("sort", "age,-age")], "sort names 'age' twice"),
            (vec![("cursor", "!!")], "cursor is malformed"),
        ] {
            match ListQuery::parse(&pets(), &params(&pairs), None) {
                Err(
                    err @ (ApiError::BadRequest(_)
                    | ApiError::InvalidParameter { .. }
                    | ApiError::InvalidFilter { .. }),
                ) => {
                    let message = err.to_string();
                    assert!(message.contains(expected), "{message} lacks {expected}")
                }
                other => panic!("{pairs:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn a_cursor_continues_after_the_last_document_of_the_same_sort() {
        let q = ListQuery::parse(&pets(), &params(&[("sort", "-age"), ("species", "Dog")]), None)
            .unwrap();
        assert_eq!(q.spec.sort_document(), doc! {"age": -1, "_id": 1});
        let oid = ObjectId::parse_str("65f0c0ffee0123456789abcd").unwrap();
        let cursor = q.cursor_text(&Cursor { values: vec![Scalar::Int(4)], id: oid });
        let next = ListQuery::parse(
            &pets(),
            &params(&[("sort", "-age"), ("species", "Dog"), ("cursor", &cursor)]),
            None,
        )
        .unwrap();
        assert_eq!(
            next.spec.filter_document(),
            doc! {"$and": [
                {"species": "Dog"},
                {"$or": [
                    {"$and": [{"$or": [{"age": {"$lt": 4_i64}}, {"age": Bson::Null}]}]},
                    {"$and": [{"age": 4_i64}, {"_id": {"$gt": oid}}]},
                ]},
            ]}
        );
        let other_sort =
            ListQuery::parse(&pets(), &params(&[("sort", "age"), ("cursor", &cursor)]), None);
        assert!(
            matches!(other_sort, Err(ApiError::InvalidParameter { parameter: "cursor", reason }) if reason.contains("different sort"))
        );
    }

    /// A cursor is base64 JSON a client can forge: values that are not scalars of the sort
    /// field's type (operators such as `$ne` or `$regex`, a string for an integer) and ids that
    /// are not ids are refused, naming `cursor`, before any query is built.
    #[test]
    fn a_crafted_cursor_cannot_inject_operators() {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let forge = |sort: &str, values: serde_json::Value, id: &str| {
            let position = serde_json::json!({"s": sort, "v": values, "id": id});
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&position).unwrap())
        };
        let oid = "65f0c0ffee0123456789abcd";
        for (sort, crafted) in [
            ("name", forge("name", serde_json::json!([{"$ne": null}]), oid)),
            ("name", forge("name", serde_json::json!([{"$regex": ".*"}]), oid)),
            ("name", forge("name", serde_json::json!([["$where"]]), oid)),
            ("name", forge("name", serde_json::json!(["Rex"]), "{\"$gt\": \"\"}")),
            ("name", forge("name", serde_json::json!([3]), oid)),
            ("-age", forge("-age", serde_json::json!(["old"]), oid)),
            ("vaccinated", forge("vaccinated", serde_json::json!(["true"]), oid)),
        ] {
            match ListQuery::parse(&pets(), &params(&[("sort", sort), ("cursor", &crafted)]), None)
            {
                Err(ApiError::InvalidParameter { parameter: "cursor", .. }) => {}
                other => panic!("{crafted} gave {other:?}"),
            }
        }
        // A scalar that merely looks like an operator stays a compared value.
        let looks_like = forge("name", serde_json::json!(["$ne"]), oid);
        let q =
            ListQuery::parse(&pets(), &params(&[("sort", "name"), ("cursor", &looks_like)]), None)
                .unwrap();
        let oid = ObjectId::parse_str(oid).unwrap();
        assert_eq!(
            q.spec.filter_document(),
            doc! {"$or": [
                {"$and": [{"name": {"$gt": "$ne"}}]},
                {"$and": [{"name": "$ne"}, {"_id": {"$gt": oid}}]},
            ]}
        );
    }

    #[test]
    fn cursor_text_round_trips_through_parse() {
        let q = ListQuery::parse(&pets(), &params(&[("sort", "weight,-name")]), None).unwrap();
        let cursor = Cursor {
            values: vec![Scalar::Double(4.0), Scalar::Null],
            id: ObjectId::parse_str("65f0c0ffee0123456789abcd").unwrap(),
        };
        let text = q.cursor_text(&cursor);
        let next = ListQuery::parse(
            &pets(),
            &params(&[("sort", "weight,-name"), ("cursor", &text)]),
            None,
        )
        .unwrap();
        assert_eq!(next.spec.after, Some(cursor));
        assert_eq!(next.spec.limit, DEFAULT_LIMIT);
    }
}
