//! `/api/v1/<collection>` and `/api/v1/<collection>/<id>`: documents of declared collections.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use courier_core::{Event, EventAction, subjects};
use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    collections::CollectionDef,
    documents::{parse_id, to_api, to_stored, version_of},
    error::ApiError,
    extract::JsonBody,
    outbox::OutboxRecord,
    routes::{TRACE_ID_HEADER, trace_id},
    state::AppState,
    store::Write,
};

/// Largest page a list request may ask for.
pub const MAX_LIMIT: i64 = 1000;
const DEFAULT_LIMIT: i64 = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/{collection}", get(list).post(create))
        .route("/{collection}/{id}", get(read))
}

fn collection(state: &AppState, name: &str) -> Result<Arc<CollectionDef>, ApiError> {
    state
        .collections
        .get(name)
        .ok_or_else(|| ApiError::NotFound(format!("no collection named '{name}'")))
}

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header")
}

async fn create(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let def = collection(&state, &name)?;
    def.validate(&body).map_err(|fields| ApiError::validation(&name, fields))?;

    let id = ObjectId::new();
    let stored = to_stored(id, 1, &body)?;
    let document = to_api(stored.clone());
    let trace_id = trace_id(&headers);
    let doc_id = id.to_hex();
    let event = Event::new(&name, &doc_id, EventAction::Created, document.clone(), None, trace_id.clone());
    let record = OutboxRecord::for_event(&event, subjects::event_subject(&name, &doc_id, EventAction::Created), 1);

    state
        .store
        .commit(&[Write::Insert { collection: name.clone(), document: stored }], std::slice::from_ref(&record))
        .await?;
    if state.fault == Some(crate::config::Fault::ExitAfterCommit) {
        tracing::error!(%doc_id, "fault injection: exiting after commit, before publish");
        std::process::exit(86);
    }
    state.outbox.publish_after_commit(vec![record]);
    tracing::info!(collection = %name, %doc_id, %trace_id, "document created");

    let location = HeaderValue::from_str(&format!("/api/v1/{name}/{doc_id}")).expect("ids are header-safe");
    Ok((
        StatusCode::CREATED,
        [
            (header::LOCATION, location),
            (header::ETAG, etag(1)),
            (header::HeaderName::from_static(TRACE_ID_HEADER), HeaderValue::from_str(&trace_id).expect("sane token")),
        ],
        Json(document),
    )
        .into_response())
}

async fn read(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    collection(&state, &name)?;
    let oid = parse_id(&id)?;
    let stored = state
        .store
        .collection(&name)
        .find_one(doc! {"_id": oid})
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no document '{id}' in '{name}'")))?;
    let version = version_of(&stored);
    Ok(([(header::ETAG, etag(version))], Json(to_api(stored))).into_response())
}

#[derive(Debug, Deserialize)]
struct ListParams {
    limit: Option<String>,
    cursor: Option<String>,
}

/// A page of documents in id order (ids are time-ordered, so this is creation order), with a
/// cursor for the next page.
async fn list(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    collection(&state, &name)?;
    let limit = match params.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::BadRequest(format!("limit must be a whole number from 1 to {MAX_LIMIT}")))?,
    };
    let filter = match params.cursor.as_deref() {
        None => doc! {},
        Some(cursor) => {
            let after = ObjectId::parse_str(cursor)
                .map_err(|_| ApiError::BadRequest("cursor is malformed; use the 'next' value of a previous page".into()))?;
            doc! {"_id": {"$gt": after}}
        }
    };
    let docs: Vec<_> = state
        .store
        .collection(&name)
        .find(filter)
        .sort(doc! {"_id": 1})
        .limit(limit + 1)
        .await?
        .try_collect()
        .await?;
    let has_more = docs.len() as i64 > limit;
    let items: Vec<Value> = docs.into_iter().take(limit as usize).map(to_api).collect();
    let next = if has_more { items.last().and_then(|d| d.get("id")).cloned() } else { None };
    Ok(Json(json!({"items": items, "next": next})))
}
