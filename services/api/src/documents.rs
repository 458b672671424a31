//! Document ids in URLs, and the stored-form conversions (from `courier_store`) with api errors.

use courier_store::documents;
use mongodb::bson::{Document, oid::ObjectId};
use serde_json::Value;

use crate::error::ApiError;

pub use courier_store::documents::to_api;

pub fn parse_id(id: &str) -> Result<ObjectId, ApiError> {
    ObjectId::parse_str(id).map_err(|_| {
        ApiError::BadRequest(format!("'{id}' is not a valid id (24 hexadecimal characters)"))
    })
}

/// The stored form of a validated body; a body BSON cannot hold is the client's problem.
pub fn to_stored(id: ObjectId, version: i64, body: &Value) -> Result<Document, ApiError> {
    documents::to_stored(id, version, body)
        .map_err(|err| ApiError::BadRequest(format!("document cannot be stored: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_ids_are_bad_requests() {
        assert!(matches!(parse_id("nope"), Err(ApiError::BadRequest(_))));
        assert!(parse_id("65f0c0ffee0123456789abcd").is_ok());
    }
}
