//! Document filters: the one typed form of "which documents", shared by the REST list's query
//! string (`?species=Dog&age[gte]=3`) and a subscription's `filter` object
//! (`{"species": "Dog", "age": {"gte": 3}}`). Both are parsed here, typed by the collection's
//! schema, bounded in size, and refused with a message naming the field. The store turns a
//! [`Filter`] into its MongoDB query; the broadcaster evaluates the same filter on an event's
//! document with [`Filter::matches`], which follows MongoDB's rules (an array field matches when
//! one of its values does; `ne` matches a missing field; ranges compare numbers with numbers and
//! strings with strings, never across types).
//!
//! Values are [`Scalar`]s, never documents, so nothing a client sends can become a query
//! operator.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::collection_spec::{FieldType, is_valid_field_name};

/// Most fields one filter names (each with at most one condition per operator).
pub const MAX_FIELDS: usize = 32;
/// Most values in one `in`.
pub const MAX_IN_VALUES: usize = 100;
/// Longest string value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024;

/// One value in a filter or a cursor: JSON's scalars. Documents and arrays cannot be expressed,
/// so a value can only ever be compared, never interpreted as an operator (`$ne`, `$regex`, …).
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    String(String),
}

impl Scalar {
    /// A JSON scalar as the stored form holds it (integers as `Int`, other numbers as `Double`);
    /// `None` for objects and arrays.
    pub fn from_json(value: &Value) -> Option<Self> {
        Some(match value {
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Scalar::Int(i),
                None => Scalar::Double(n.as_f64().filter(|f| f.is_finite())?),
            },
            Value::String(s) => Scalar::String(s.clone()),
            Value::Array(_) | Value::Object(_) => return None,
        })
    }

    /// The JSON form (a non-finite double, which JSON cannot hold, becomes null).
    pub fn to_json(&self) -> Value {
        match self {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Bool(*b),
            Scalar::Int(i) => Value::from(*i),
            Scalar::Double(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            Scalar::String(s) => Value::String(s.clone()),
        }
    }

    /// How this value compares with a document's JSON value, the way MongoDB compares them:
    /// numbers with numbers (integers and doubles alike), strings with strings (bytewise),
    /// booleans with booleans; `None` across types.
    fn compare(&self, value: &Value) -> Option<Ordering> {
        match (self, value) {
            (Scalar::Bool(a), Value::Bool(b)) => Some(b.cmp(a)),
            (Scalar::String(a), Value::String(b)) => Some(b.as_str().cmp(a.as_str())),
            (Scalar::Int(a), Value::Number(b)) => match b.as_i64() {
                Some(b) => Some(b.cmp(a)),
                None => b.as_f64()?.partial_cmp(&(*a as f64)),
            },
            (Scalar::Double(a), Value::Number(b)) => b.as_f64()?.partial_cmp(a),
            (Scalar::Null, Value::Null) => Some(Ordering::Equal),
            _ => None,
        }
    }
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    /// One of several values.
    In,
}

impl Operator {
    pub const ALL: [Operator; 7] = [
        Operator::Eq,
        Operator::Ne,
        Operator::Gt,
        Operator::Gte,
        Operator::Lt,
        Operator::Lte,
        Operator::In,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Eq => "eq",
            Operator::Ne => "ne",
            Operator::Gt => "gt",
            Operator::Gte => "gte",
            Operator::Lt => "lt",
            Operator::Lte => "lte",
            Operator::In => "in",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == word)
    }

    /// An ordering comparison (only for numbers and strings).
    fn is_range(self) -> bool {
        matches!(self, Operator::Gt | Operator::Gte | Operator::Lt | Operator::Lte)
    }
}

/// `field <operator> values`: one value, except for `in` (one or more).
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub field: String,
    pub operator: Operator,
    pub values: Vec<Scalar>,
}

/// Conditions that must all hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub conditions: Vec<Condition>,
}

/// Why a filter was refused. `field` names the field (or the filter itself) for the error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FilterError {
    pub field: String,
    pub message: String,
}

fn refuse(field: &str, message: impl Into<String>) -> FilterError {
    FilterError { field: field.to_owned(), message: message.into() }
}

/// What a parser needs from the collection: the type of a field it may filter on (`None`: not a
/// field of the collection) and the collection's name for messages.
pub trait FieldTypes {
    fn field_type(&self, field: &str) -> Option<FieldType>;
    fn collection_name(&self) -> &str;
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// How many distinct fields the conditions name.
    fn fields(&self) -> usize {
        let mut fields: Vec<&str> = self.conditions.iter().map(|c| c.field.as_str()).collect();
        fields.sort_unstable();
        fields.dedup();
        fields.len()
    }

    /// Adds `field <operator> value`: repeated `eq`/`in` conditions on one field merge into one
    /// `in` (a repeated query parameter means "any of"); another repeated operator is refused.
    fn add(&mut self, field: &str, operator: Operator, value: Scalar) -> Result<(), FilterError> {
        let any_of = matches!(operator, Operator::Eq | Operator::In);
        let existing = self.conditions.iter_mut().find(|c| {
            c.field == field
                && (c.operator == operator
                    || (any_of && matches!(c.operator, Operator::Eq | Operator::In)))
        });
        match existing {
            Some(condition) if any_of => {
                if condition.values.len() >= MAX_IN_VALUES {
                    return Err(refuse(field, format!("at most {MAX_IN_VALUES} values per field")));
                }
                condition.operator = Operator::In;
                condition.values.push(value);
            }
            Some(_) => {
                return Err(refuse(
                    field,
                    format!("'{field}' has the operator '{}' twice", operator.as_str()),
                ));
            }
            None => {
                let named = self.conditions.iter().any(|c| c.field == field);
                if !named && self.fields() >= MAX_FIELDS {
                    return Err(refuse(field, format!("at most {MAX_FIELDS} fields")));
                }
                self.conditions.push(Condition {
                    field: field.to_owned(),
                    operator,
                    values: vec![value],
                });
            }
        }
        Ok(())
    }

    /// One query-string pair: `field=value` or `field[op]=value`, the value typed by the field's
    /// schema type. The caller takes its own parameters (`sort`, `limit`, …) out first.
    pub fn add_query_pair(
        &mut self,
        types: &dyn FieldTypes,
        key: &str,
        text: &str,
    ) -> Result<(), FilterError> {
        let (field, operator) = match key.strip_suffix(']').and_then(|k| k.split_once('[')) {
            Some((field, op)) => {
                let operator = Operator::parse(op).ok_or_else(|| unknown_operator(field, op))?;
                (field, operator)
            }
            None => (key, Operator::Eq),
        };
        let field_type = check_field(types, field)?;
        check_operator(field, field_type, operator)?;
        let value = scalar_from_text(field, field_type, text)?;
        self.add(field, operator, value)
    }

    /// A subscription's `filter` object: `{"field": value}` or `{"field": {"op": value}}`, with
    /// `{"in": [values]}` for "any of".
    pub fn from_json(types: &dyn FieldTypes, filter: &Value) -> Result<Filter, FilterError> {
        let Value::Object(fields) = filter else {
            return Err(refuse("filter", "filter must be an object of field conditions"));
        };
        let mut parsed = Filter::default();
        for (field, condition) in fields {
            let field_type = check_field(types, field)?;
            match condition {
                Value::Object(operators) => {
                    if operators.is_empty() {
                        return Err(refuse(field, format!("'{field}' has no operator")));
                    }
                    for (op, value) in operators {
                        let operator =
                            Operator::parse(op).ok_or_else(|| unknown_operator(field, op))?;
                        check_operator(field, field_type, operator)?;
                        match (operator, value) {
                            (Operator::In, Value::Array(values)) => {
                                if values.is_empty() || values.len() > MAX_IN_VALUES {
                                    return Err(refuse(
                                        field,
                                        format!("'{field}' in takes 1 to {MAX_IN_VALUES} values"),
                                    ));
                                }
                                for value in values {
                                    let value = scalar_from_json(field, field_type, value)?;
                                    parsed.add(field, Operator::In, value)?;
                                }
                            }
                            (Operator::In, _) => {
                                return Err(refuse(
                                    field,
                                    format!("'{field}' in takes an array of values"),
                                ));
                            }
                            (operator, value) => {
                                let value = scalar_from_json(field, field_type, value)?;
                                parsed.add(field, operator, value)?;
                            }
                        }
                    }
                }
                value => {
                    let value = scalar_from_json(field, field_type, value)?;
                    parsed.add(field, Operator::Eq, value)?;
                }
            }
        }
        Ok(parsed)
    }

    /// Whether `document` (an api-form document) satisfies every condition, by MongoDB's rules.
    pub fn matches(&self, document: &Map<String, Value>) -> bool {
        self.conditions.iter().all(|condition| condition.matches(document.get(&condition.field)))
    }
}

impl Condition {
    fn matches(&self, value: Option<&Value>) -> bool {
        match self.operator {
            Operator::Eq | Operator::In => self.values.iter().any(|v| equals(v, value)),
            Operator::Ne => !equals(&self.values[0], value),
            range => {
                let Some(value) = value else { return false };
                let holds = |ordering: Ordering| match range {
                    Operator::Gt => ordering == Ordering::Greater,
                    Operator::Gte => ordering != Ordering::Less,
                    Operator::Lt => ordering == Ordering::Less,
                    _ => ordering != Ordering::Greater,
                };
                let bound = &self.values[0];
                match value {
                    Value::Array(items) => {
                        items.iter().any(|item| bound.compare(item).is_some_and(holds))
                    }
                    value => bound.compare(value).is_some_and(holds),
                }
            }
        }
    }
}

/// MongoDB equality: the value itself, or (for an array) one of its elements.
fn equals(scalar: &Scalar, value: Option<&Value>) -> bool {
    match value {
        None => *scalar == Scalar::Null,
        Some(Value::Array(items)) => {
            items.iter().any(|item| scalar.compare(item) == Some(Ordering::Equal))
        }
        Some(value) => scalar.compare(value) == Some(Ordering::Equal),
    }
}

fn unknown_operator(field: &str, op: &str) -> FilterError {
    let known: Vec<&str> = Operator::ALL.iter().map(|op| op.as_str()).collect();
    let shown: String = op.chars().take(32).collect();
    refuse(field, format!("'{shown}' is not an operator (use {})", known.join(", ")))
}

fn check_field(types: &dyn FieldTypes, field: &str) -> Result<FieldType, FilterError> {
    if !is_valid_field_name(field) {
        let shown: String = field.chars().take(64).collect();
        return Err(refuse(&shown, format!("'{shown}' is not a field name")));
    }
    types.field_type(field).ok_or_else(|| {
        refuse(field, format!("'{field}' is not a field of '{}'", types.collection_name()))
    })
}

fn check_operator(field: &str, ty: FieldType, operator: Operator) -> Result<(), FilterError> {
    let ordered = matches!(ty, FieldType::String | FieldType::Integer | FieldType::Number);
    if operator.is_range() && !ordered {
        return Err(refuse(
            field,
            format!(
                "'{field}' cannot be compared with '{}': ranges apply to strings and numbers",
                operator.as_str()
            ),
        ));
    }
    Ok(())
}

/// A query-string value typed by the field's schema type.
fn scalar_from_text(field: &str, ty: FieldType, text: &str) -> Result<Scalar, FilterError> {
    let wrong =
        |expected: &str| refuse(field, format!("filter {field}={text}: '{field}' is {expected}"));
    let value = match ty {
        FieldType::String | FieldType::Other => Scalar::String(text.to_owned()),
        FieldType::Integer => Scalar::Int(text.parse().map_err(|_| wrong("a whole number"))?),
        FieldType::Number => {
            let n: f64 = text.parse().map_err(|_| wrong("a number"))?;
            if !n.is_finite() {
                return Err(wrong("a finite number"));
            }
            Scalar::Double(n)
        }
        FieldType::Boolean => match text {
            "true" => Scalar::Bool(true),
            "false" => Scalar::Bool(false),
            _ => return Err(wrong("true or false")),
        },
    };
    check_length(field, value)
}

/// A JSON value typed by the field's schema type (no null, no objects or arrays).
fn scalar_from_json(field: &str, ty: FieldType, value: &Value) -> Result<Scalar, FilterError> {
    let wrong = |expected: &str| refuse(field, format!("'{field}' is {expected}"));
    let scalar = match (ty, value) {
        (FieldType::String, Value::String(s)) => Scalar::String(s.clone()),
        (FieldType::String, _) => return Err(wrong("a string")),
        (FieldType::Integer, Value::Number(n)) => match n.as_i64() {
            Some(i) => Scalar::Int(i),
            None => return Err(wrong("a whole number")),
        },
        (FieldType::Integer, _) => return Err(wrong("a whole number")),
        (FieldType::Number, Value::Number(_)) => {
            Scalar::from_json(value).ok_or_else(|| wrong("a finite number"))?
        }
        (FieldType::Number, _) => return Err(wrong("a number")),
        (FieldType::Boolean, Value::Bool(b)) => Scalar::Bool(*b),
        (FieldType::Boolean, _) => return Err(wrong("true or false")),
        (FieldType::Other, Value::String(_) | Value::Number(_) | Value::Bool(_)) => {
            Scalar::from_json(value).ok_or_else(|| wrong("a finite number"))?
        }
        (FieldType::Other, _) => return Err(wrong("compared with a string, number or boolean")),
    };
    check_length(field, scalar)
}

fn check_length(field: &str, value: Scalar) -> Result<Scalar, FilterError> {
    match &value {
        Scalar::String(s) if s.len() > MAX_VALUE_BYTES => {
            Err(refuse(field, format!("'{field}': values are at most {MAX_VALUE_BYTES} bytes")))
        }
        _ => Ok(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Pets;

    impl FieldTypes for Pets {
        fn field_type(&self, field: &str) -> Option<FieldType> {
            Some(match field {
                "name" | "species" | "created_by" => FieldType::String,
                "age" => FieldType::Integer,
                "weight" => FieldType::Number,
                "vaccinated" => FieldType::Boolean,
                "tags" => FieldType::Other,
                _ => return None,
            })
        }

        fn collection_name(&self) -> &str {
            "pets"
        }
    }

    fn doc(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn query_pairs_and_json_parse_to_the_same_filter() {
        let mut from_query = Filter::default();
        for (key, value) in [("age[gte]", "3"), ("species", "Dog"), ("species", "Cat")] {
            from_query.add_query_pair(&Pets, key, value).unwrap();
        }
        let mut from_json = Filter::from_json(
            &Pets,
            &json!({"species": {"in": ["Dog", "Cat"]}, "age": {"gte": 3}}),
        )
        .unwrap();
        // A JSON object's order depends on serde_json's features: compare in field order.
        from_json.conditions.sort_by(|a, b| a.field.cmp(&b.field));
        assert_eq!(from_query, from_json);
        assert_eq!(from_json.conditions[1].operator, Operator::In, "a repeat means any of");
    }

    #[test]
    fn bad_filters_name_the_field() {
        for (filter, field, expected) in [
            (json!({"colour": "red"}), "colour", "'colour' is not a field of 'pets'"),
            (json!({"$where": "1"}), "$where", "is not a field name"),
            (json!({"age": "old"}), "age", "'age' is a whole number"),
            (json!({"age": {"near": 3}}), "age", "'near' is not an operator"),
            (json!({"age": {}}), "age", "has no operator"),
            (
                json!({"vaccinated": {"gt": true}}),
                "vaccinated",
                "ranges apply to strings and numbers",
            ),
            (json!({"species": {"in": "Dog"}}), "species", "takes an array"),
            (json!({"species": {"in": []}}), "species", "takes 1 to 100 values"),
            (json!({"species": null}), "species", "is a string"),
            (json!({"species": {"eq": {"$ne": 1}}}), "species", "is a string"),
            (json!({"tags": ["a"]}), "tags", "compared with a string"),
            (json!({"name": "x".repeat(2000)}), "name", "at most 1024 bytes"),
            (json!(["species"]), "filter", "must be an object"),
        ] {
            let err = Filter::from_json(&Pets, &filter).unwrap_err();
            assert_eq!(err.field, field, "{filter}");
            assert!(err.message.contains(expected), "{} lacks {expected}", err.message);
        }
        let mut too_many = serde_json::Map::new();
        for i in 0..=MAX_FIELDS {
            too_many.insert("age".to_owned() + &"_".repeat(i), json!(1));
        }
        struct Open;
        impl FieldTypes for Open {
            fn field_type(&self, _: &str) -> Option<FieldType> {
                Some(FieldType::Integer)
            }
            fn collection_name(&self) -> &str {
                "open"
            }
        }
        let err = Filter::from_json(&Open, &Value::Object(too_many)).unwrap_err();
        assert!(err.message.contains("at most 32 fields"), "{err}");
        let mut twice = Filter::default();
        twice.add_query_pair(&Pets, "age[gt]", "1").unwrap();
        let err = twice.add_query_pair(&Pets, "age[gt]", "2").unwrap_err();
        assert!(err.message.contains("operator 'gt' twice"), "{err}");
        let err = Filter::default().add_query_pair(&Pets, "age[between]", "1").unwrap_err();
        assert_eq!(err.field, "age");
        let err = Filter::default().add_query_pair(&Pets, "weight", "NaN").unwrap_err();
        assert!(err.message.contains("a finite number"), "{err}");
    }

    #[test]
    fn matching_follows_mongodb_rules() {
        let rex = doc(
            json!({"name": "Rex", "species": "Dog", "age": 4, "weight": 12.5, "vaccinated": false, "tags": ["big", "brown"]}),
        );
        let parse = |filter: Value| Filter::from_json(&Pets, &filter).unwrap();
        for (filter, expected) in [
            (json!({"species": "Dog"}), true),
            (json!({"species": "Cat"}), false),
            (json!({"species": {"ne": "Cat"}}), true),
            (json!({"age": {"gte": 4}}), true),
            (json!({"age": {"gt": 4}}), false),
            (json!({"age": {"gt": 3, "lt": 5}}), true),
            (json!({"weight": {"lt": 13}}), true),
            (json!({"weight": {"gte": 12.5}}), true),
            (json!({"name": {"gt": "Max"}}), true),
            (json!({"name": {"lt": "Max"}}), false),
            (json!({"vaccinated": false}), true),
            (json!({"species": {"in": ["Cat", "Dog"]}}), true),
            (json!({"tags": "big"}), true),
            (json!({"tags": {"ne": "big"}}), false),
            (json!({"tags": {"in": ["small", "brown"]}}), true),
            // A missing field: never equal, never in a range, always "not equal".
            (json!({"created_by": "u1"}), false),
            (json!({"created_by": {"ne": "u1"}}), true),
            (json!({"created_by": {"gte": ""}}), false),
            // Ranges never compare across types.
            (json!({"tags": {"in": [4]}}), false),
        ] {
            assert_eq!(parse(filter.clone()).matches(&rex), expected, "{filter}");
        }
        let mixed = doc(json!({"age": 4.0, "weight": 3}));
        assert!(parse(json!({"age": 4})).matches(&mixed), "4 equals 4.0");
        assert!(parse(json!({"weight": {"lt": 3.5}})).matches(&mixed));
        let string_age = doc(json!({"age": "4"}));
        assert!(!parse(json!({"age": {"gte": 0}})).matches(&string_age));
    }
}
