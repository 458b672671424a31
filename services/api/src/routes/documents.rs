//! `/api/v1/<collection>` and `/api/v1/<collection>/<id>`: documents of declared collections.
//! Every change commits with its event (and any triggered tasks) through the outbox; updates
//! and deletes use the document version for `ETag` / `If-Match` (412 when stale).

use std::sync::Arc;

use axum::{
    Extension, Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use courier_core::{
    Event, EventAction, Task, collection_spec::TriggerOn, request_telemetry::TraceId, subjects,
};
use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId};
use serde_json::{Map, Value, json};

use courier_store::{OutboxRecord, StoreError, Write};

use crate::{
    auth::Caller,
    collections::CollectionDef,
    documents::{parse_id, to_api, to_stored, version_of},
    error::{ApiError, FieldError},
    extract::JsonBody,
    query::ListQuery,
    state::AppState,
};

/// Read-modify-write attempts when a concurrent change wins the race (no If-Match given).
const UPDATE_ATTEMPTS: u32 = 10;

/// A short, growing, jittered pause before retry `attempt`, so racing writers spread out
/// instead of colliding again (1–8 ms, then up to ~80 ms).
async fn pause_before_retry(attempt: u32) {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        % 8;
    let millis = u64::from((1 + jitter) * attempt.min(10));
    tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/{collection}", get(list).post(create))
        .route("/{collection}/{id}", get(read).put(update).patch(update).delete(remove))
}

fn collection(state: &AppState, name: &str) -> Result<Arc<CollectionDef>, ApiError> {
    state
        .collections
        .current()
        .get(name)
        .ok_or_else(|| ApiError::NotFound(format!("no collection named '{name}'")))
}

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header")
}

/// `If-Match`: `*` or a list of entity tags; `None` when absent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Precondition {
    Any,
    Versions(Vec<i64>),
}

impl Precondition {
    fn from_headers(headers: &HeaderMap, name: HeaderName) -> Option<Self> {
        let text = headers.get(name)?.to_str().unwrap_or("").trim();
        if text == "*" {
            return Some(Precondition::Any);
        }
        // Unparseable tags can match no version: they stay out of the list (→ 412).
        let versions = text
            .split(',')
            .filter_map(|tag| tag.trim().trim_start_matches("W/").trim_matches('"').parse().ok())
            .collect();
        Some(Precondition::Versions(versions))
    }

    fn matches(&self, version: i64) -> bool {
        match self {
            Precondition::Any => true,
            Precondition::Versions(versions) => versions.contains(&version),
        }
    }
}

/// A request body as a JSON object, without the fields clients may not set: `id` (it must
/// match the document's, if sent at all) and the schema's `readOnly` fields (ignored).
fn client_fields(
    def: &CollectionDef,
    body: Value,
    doc_id: Option<&str>,
) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(mut object) = body else {
        let reason = "must be a JSON object".to_owned();
        return Err(ApiError::validation(
            def.name(),
            vec![FieldError { field: "(document)".into(), reason }],
        ));
    };
    match (object.remove("id"), doc_id) {
        (None, _) | (Some(Value::Null), _) => {}
        (Some(Value::String(sent)), Some(id)) if sent == id => {}
        (Some(_), Some(_)) => {
            let reason = "does not match the document's id".to_owned();
            return Err(ApiError::validation(
                def.name(),
                vec![FieldError { field: "id".into(), reason }],
            ));
        }
        (Some(_), None) => {
            let reason = "is assigned by Courier; leave it out".to_owned();
            return Err(ApiError::validation(
                def.name(),
                vec![FieldError { field: "id".into(), reason }],
            ));
        }
    }
    for field in def.read_only_fields() {
        object.remove(field);
    }
    Ok(object)
}

/// The stored document's read-only fields carried over to its new version.
fn keep_read_only(
    def: &CollectionDef,
    current: &Value,
    mut new: Map<String, Value>,
) -> Map<String, Value> {
    for field in def.read_only_fields() {
        if let Some(value) = current.get(field) {
            new.insert(field.to_owned(), value.clone());
        }
    }
    new
}

/// Validates, then commits `writes` with the change's event and triggered tasks.
#[allow(clippy::too_many_arguments)]
async fn commit_change(
    state: &AppState,
    def: &CollectionDef,
    writes: Vec<Write>,
    action: EventAction,
    doc_id: &str,
    version: i64,
    data: Value,
    actor: Option<String>,
    trace_id: &str,
) -> Result<(), StoreError> {
    let name = def.name();
    let event = Event::new(name, doc_id, action, data, actor.clone(), trace_id.to_owned());
    let mut records = vec![OutboxRecord::for_event(
        &event,
        subjects::event_subject(name, doc_id, action),
        version,
    )];
    let trigger = match action {
        EventAction::Created => Some(TriggerOn::Create),
        EventAction::Updated => Some(TriggerOn::Update),
        _ => None,
    };
    if let Some(trigger) = trigger {
        for kind in def.tasks_on(trigger) {
            let task = Task::new(kind, name, doc_id, version, actor.clone(), trace_id.to_owned());
            records.push(OutboxRecord::for_task(&task));
        }
    }
    state.store.commit(&writes, &records).await?;
    if state.fault == Some(crate::config::Fault::ExitAfterCommit) {
        tracing::error!(%doc_id, "fault injection: exiting after commit, before publish");
        std::process::exit(86);
    }
    state.outbox.publish_after_commit(records);
    tracing::info!(collection = %name, %doc_id, version, %action, %trace_id, "document changed");
    Ok(())
}

fn document_response(status: StatusCode, version: i64, document: Value) -> Response {
    (status, [(header::ETAG, etag(version))], Json(document)).into_response()
}

async fn create(
    State(state): State<AppState>,
    Path(name): Path<String>,
    caller: Caller,
    Extension(trace_id): Extension<TraceId>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let def = collection(&state, &name)?;
    caller.require(def.write_access())?;
    let fields = client_fields(&def, body, None)?;
    let body = Value::Object(fields);
    def.validate(&body).map_err(|fields| ApiError::validation(&name, fields))?;

    let id = ObjectId::new();
    let doc_id = id.to_hex();
    let stored = to_stored(id, 1, &body)?;
    let document = to_api(stored.clone());
    let writes = vec![Write::Insert { collection: name.clone(), document: stored }];
    commit_change(
        &state,
        &def,
        writes,
        EventAction::Created,
        &doc_id,
        1,
        document.clone(),
        caller.actor(),
        trace_id.as_str(),
    )
    .await?;

    let mut response = document_response(StatusCode::CREATED, 1, document);
    let location =
        HeaderValue::from_str(&format!("/api/v1/{name}/{doc_id}")).expect("ids are header-safe");
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

async fn read(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(collection(&state, &name)?.read_access())?;
    let oid = parse_id(&id)?;
    let stored = state
        .store
        .collection(&name)
        .find_one(doc! {"_id": oid})
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no document '{id}' in '{name}'")))?;
    let version = version_of(&stored);
    if Precondition::from_headers(&headers, header::IF_NONE_MATCH)
        .is_some_and(|p| p.matches(version))
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag(version))]).into_response());
    }
    Ok(([(header::ETAG, etag(version))], Json(to_api(stored))).into_response())
}

/// What an update does to the current document: the new client fields, or deletion.
enum Edit {
    Replace(Map<String, Value>),
    MergePatch(Map<String, Value>),
    Delete,
}

/// Read-modify-write with optimistic concurrency. With `If-Match` a stale version is 412;
/// without it a lost race is retried on the fresh document.
async fn modify(
    state: &AppState,
    name: &str,
    id: &str,
    caller: &Caller,
    headers: &HeaderMap,
    trace_id: &TraceId,
    edit: Edit,
) -> Result<(i64, Option<Value>), ApiError> {
    let def = collection(state, name)?;
    caller.require(def.write_access())?;
    let oid = parse_id(id)?;
    let precondition = Precondition::from_headers(headers, header::IF_MATCH);
    for attempt in 0..UPDATE_ATTEMPTS {
        if attempt > 0 {
            pause_before_retry(attempt).await;
        }
        let current = state
            .store
            .collection(name)
            .find_one(doc! {"_id": oid})
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no document '{id}' in '{name}'")))?;
        let version = version_of(&current);
        if precondition.as_ref().is_some_and(|p| !p.matches(version)) {
            return Err(ApiError::PreconditionFailed(format!(
                "If-Match does not match the current version (ETag \"{version}\"); re-read the document"
            )));
        }
        let current = to_api(current);
        let (writes, action, data) = match &edit {
            Edit::Delete => (
                vec![Write::Delete {
                    collection: name.to_owned(),
                    id: oid,
                    expected_version: version,
                }],
                EventAction::Deleted,
                current.clone(),
            ),
            Edit::Replace(fields) | Edit::MergePatch(fields) => {
                let new_fields = match &edit {
                    Edit::MergePatch(patch) => {
                        let mut merged = current.clone();
                        if let Value::Object(m) = &mut merged {
                            m.remove("id");
                        }
                        merge_patch(&mut merged, &Value::Object(patch.clone()));
                        client_fields(&def, merged, None)?
                    }
                    _ => fields.clone(),
                };
                let candidate = Value::Object(new_fields.clone());
                def.validate(&candidate).map_err(|fields| ApiError::validation(name, fields))?;
                let stored = to_stored(
                    oid,
                    version + 1,
                    &Value::Object(keep_read_only(&def, &current, new_fields)),
                )?;
                let document = to_api(stored.clone());
                let write = Write::Replace {
                    collection: name.to_owned(),
                    id: oid,
                    expected_version: version,
                    document: stored,
                };
                (vec![write], EventAction::Updated, document)
            }
        };
        let new_version = version + 1;
        match commit_change(
            state,
            &def,
            writes,
            action,
            id,
            new_version,
            data.clone(),
            caller.actor(),
            trace_id.as_str(),
        )
        .await
        {
            Ok(()) => return Ok((new_version, (action != EventAction::Deleted).then_some(data))),
            Err(StoreError::VersionConflict) if precondition.is_none() => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(ApiError::Conflict(format!("'{id}' is being changed concurrently; retry")))
}

/// PUT replaces the document with the body's client fields; PATCH merge-patches it.
async fn update(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
    method: Method,
    caller: Caller,
    headers: HeaderMap,
    Extension(trace_id): Extension<TraceId>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let def = collection(&state, &name)?;
    caller.require(def.write_access())?;
    let fields = client_fields(&def, body, Some(&id))?;
    let edit =
        if method == Method::PATCH { Edit::MergePatch(fields) } else { Edit::Replace(fields) };
    let (version, document) =
        modify(&state, &name, &id, &caller, &headers, &trace_id, edit).await?;
    Ok(document_response(StatusCode::OK, version, document.unwrap_or(Value::Null)))
}

async fn remove(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
    caller: Caller,
    headers: HeaderMap,
    Extension(trace_id): Extension<TraceId>,
) -> Result<StatusCode, ApiError> {
    modify(&state, &name, &id, &caller, &headers, &trace_id, Edit::Delete).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// RFC 7386 JSON merge patch: objects merge recursively, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// A page of documents: filtered, sorted (`_id` breaks ties, so order is stable), with a cursor
/// for the next page.
async fn list(
    State(state): State<AppState>,
    Path(name): Path<String>,
    caller: Caller,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let def = collection(&state, &name)?;
    caller.require(def.read_access())?;
    let query = ListQuery::parse(&def, &params)?;
    let docs: Vec<_> = state
        .store
        .collection(&name)
        .find(query.full_filter()?)
        .sort(query.sort_document())
        .limit(query.limit + 1)
        .await?
        .try_collect()
        .await?;
    let has_more = docs.len() as i64 > query.limit;
    let items: Vec<Value> = docs.into_iter().take(query.limit as usize).map(to_api).collect();
    let next = if has_more { items.last().and_then(|last| query.cursor_after(last)) } else { None };
    Ok(Json(json!({"items": items, "next": next})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        // The RFC's own example (appendix A).
        let mut target = json!({"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"}, "tags": ["example", "sample"], "content": "This will be unchanged"});
        let patch = json!({"title": "Hello!", "phoneNumber": "+01-123-456-7890", "author": {"familyName": null}, "tags": ["example"]});
        merge_patch(&mut target, &patch);
        assert_eq!(
            target,
            json!({"title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"], "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"})
        );
    }

    #[test]
    fn if_match_accepts_star_and_lists_and_rejects_garbage() {
        let parse = |v: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_MATCH, HeaderValue::from_str(v).unwrap());
            Precondition::from_headers(&headers, header::IF_MATCH).unwrap()
        };
        assert!(parse("*").matches(9));
        assert!(parse("\"2\", W/\"3\"").matches(3));
        assert!(!parse("\"2\"").matches(3));
        assert!(!parse("garbage").matches(1));
        assert_eq!(Precondition::from_headers(&HeaderMap::new(), header::IF_MATCH), None);
    }
}
