//! `/api/v1/<collection>` and `/api/v1/<collection>/<id>`: documents of declared collections.
//! Every change commits with its event (and any triggered tasks) through the outbox; updates
//! and deletes use the document version for `ETag` / `If-Match` (412 when stale). Every document
//! records its creator in `created_by` (from the access token; absent after an anonymous write),
//! which clients cannot set: a create that sends one, or an update that sends a different one,
//! is a 422 naming the field. `write: owner` lets only that creator (or an admin) change it.
//! Under a per-document read rule (`read: [owner, field:shared_with]`) a list holds only the
//! caller's readable documents (the store applies the rule in the query), and a document the
//! caller may not read answers 404 to reads and changes alike, as one that does not exist.

use std::{convert::Infallible, sync::Arc};

use axum::{
    Extension, Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use courier_core::{
    EventAction,
    collection_spec::{CREATED_BY, Scope, TriggerOn},
    request_telemetry::TraceId,
};
use mongodb::bson::oid::ObjectId;
use serde_json::{Map, Value, json};

use courier_store::{
    Announce, Change, Committed, Decision, Modified, Modify, ModifyError, Next, Precondition, Write,
};

use crate::{
    auth::{Caller, as_object},
    collections::CollectionDef,
    documents::{parse_id, to_api, to_stored},
    error::{ApiError, FieldError},
    extract::JsonBody,
    query::ListQuery,
    state::AppState,
    writes::{Writer, Writing},
};

/// Read-modify-write rounds when a concurrent change wins the race (no If-Match given).
const UPDATE_ATTEMPTS: u32 = 10;

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

fn no_such_document(name: &str, id: &str) -> ApiError {
    ApiError::NotFound(format!("no document '{id}' in '{name}'"))
}

/// Whether a reader of `scope` may see `document` (its stored api form).
fn readable(scope: &Scope, document: &Value) -> bool {
    match scope {
        Scope::All => true,
        Scope::Documents(grant) => grant.admits(as_object(document)),
    }
}

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header")
}

/// `If-Match` / `If-None-Match`: `*` or a list of entity tags; `None` when absent.
fn precondition(headers: &HeaderMap, name: HeaderName) -> Option<Precondition> {
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

/// A request body as a JSON object, without the fields clients may not set: `id` (it must
/// match the document's, if sent at all), `created_by` (see [`check_creator`]) and the schema's
/// `readOnly` fields (ignored). Also returns the `created_by` the body sent, if any (not null).
fn client_fields(
    def: &CollectionDef,
    body: Value,
    doc_id: Option<&str>,
) -> Result<(Map<String, Value>, Option<Value>), ApiError> {
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
    let creator = object.remove(CREATED_BY).filter(|v| !v.is_null());
    if doc_id.is_none() && creator.is_some() {
        return Err(creator_refused(def));
    }
    for field in def.read_only_fields() {
        object.remove(field);
    }
    Ok((object, creator))
}

fn creator_refused(def: &CollectionDef) -> ApiError {
    let reason = "is set by Courier from the access token; leave it out".to_owned();
    ApiError::validation(def.name(), vec![FieldError { field: CREATED_BY.into(), reason }])
}

/// An update may send `created_by` only unchanged (a body read with GET goes back as it was).
fn check_creator(
    def: &CollectionDef,
    sent: Option<&Value>,
    current: &Value,
) -> Result<(), ApiError> {
    match sent {
        Some(sent) if current.get(CREATED_BY) != Some(sent) => Err(creator_refused(def)),
        _ => Ok(()),
    }
}

/// The stored document's read-only fields (and its creator) carried over to its new version.
fn keep_read_only(
    def: &CollectionDef,
    current: &Value,
    mut new: Map<String, Value>,
) -> Map<String, Value> {
    for field in def.read_only_fields().chain([CREATED_BY]) {
        if let Some(value) = current.get(field) {
            new.insert(field.to_owned(), value.clone());
        }
    }
    new
}

/// How a change of `def`'s documents is announced: its event, and the tasks the collection
/// triggers on it.
fn announce(
    def: &CollectionDef,
    action: EventAction,
    caller: &Caller,
    trace_id: &TraceId,
) -> Announce {
    let trigger = match action {
        EventAction::Created => Some(TriggerOn::Create),
        EventAction::Updated => Some(TriggerOn::Update),
        EventAction::Deleted => Some(TriggerOn::Delete),
        _ => None,
    };
    Announce {
        action,
        actor: caller.actor(),
        trace_id: trace_id.as_str().to_owned(),
        tasks: trigger.map_or_else(Vec::new, |t| def.tasks_on(t).collect()),
        keep_user_ids: def.events_carry_user_ids(),
    }
}

/// After a commit: spend the writer's byte budget, publish the records now (the fast path; the
/// relay covers a failure).
fn after_commit(state: &AppState, committed: Committed, writer: &Writer) -> Change {
    let Committed { change, records } = committed;
    state.writes.charge(writer, &records);
    if state.fault == Some(crate::config::Fault::ExitAfterCommit) {
        tracing::error!(doc_id = %change.doc_id, "fault injection: exiting after commit, before publish");
        std::process::exit(86);
    }
    state.outbox.publish_after_commit(records);
    tracing::info!(collection = %change.collection, doc_id = %change.doc_id, version = change.version, action = %change.action, trace_id = %change.trace_id, "document changed");
    change
}

fn document_response(status: StatusCode, version: i64, document: Value) -> Response {
    (status, [(header::ETAG, etag(version))], Json(document)).into_response()
}

async fn create(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Writing { caller, writer }: Writing,
    Extension(trace_id): Extension<TraceId>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let def = collection(&state, &name)?;
    caller.require(def.write_access())?;
    state.writes.admit_document(&def, &writer)?;
    let (fields, _) = client_fields(&def, body, None)?;
    let mut body = Value::Object(fields);
    def.validate(&body).map_err(|fields| ApiError::validation(&name, fields))?;
    if let Some(user_id) = caller.actor() {
        body[CREATED_BY] = Value::String(user_id);
    }
    caller.require_create(def.write_access(), &body)?;

    let id = ObjectId::new();
    let stored = to_stored(id, 1, &body)?;
    let announce = announce(&def, EventAction::Created, &caller, &trace_id);
    let change = Change::new(&name, id.to_hex(), 1, to_api(stored.clone()), announce);
    let writes = [Write::Insert { collection: name.clone(), document: stored }];
    let change = after_commit(&state, state.store.commit_change(&writes, change).await?, &writer);
    let (doc_id, document) = (change.doc_id, change.data);

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
    let scope = caller.require(collection(&state, &name)?.read_access())?;
    let oid = parse_id(&id)?;
    let stored = state
        .store
        .get(&name, oid)
        .await?
        .filter(|stored| readable(&scope, &stored.body))
        .ok_or_else(|| no_such_document(&name, &id))?;
    let version = stored.version;
    if precondition(&headers, header::IF_NONE_MATCH).is_some_and(|p| p.matches(version)) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag(version))]).into_response());
    }
    Ok(([(header::ETAG, etag(version))], Json(stored.body)).into_response())
}

/// What an update does to the current document: the new client fields (with the `created_by`
/// the body sent, if any), or deletion.
enum Edit {
    Replace(Map<String, Value>, Option<Value>),
    MergePatch(Map<String, Value>, Option<Value>),
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
) -> Result<Committed, ApiError> {
    let def = collection(state, name)?;
    caller.require(def.write_access())?;
    // A caller the read rule admits to some documents only must not learn that others exist.
    let read_scope = caller.require(def.read_access()).unwrap_or(Scope::All);
    let target = Modify {
        collection: name.to_owned(),
        id: parse_id(id)?,
        precondition: precondition(headers, header::IF_MATCH),
        task: None,
        attempts: UPDATE_ATTEMPTS,
    };
    let modified = state
        .store
        .modify(&target, |current| {
            if !readable(&read_scope, &current.body) {
                return Err(no_such_document(name, id));
            }
            caller.require_change(def.write_access(), &current.body)?;
            let fields = match &edit {
                Edit::Delete => {
                    let announce = announce(&def, EventAction::Deleted, caller, trace_id);
                    return Ok(Decision::Delete { announce });
                }
                Edit::Replace(fields, sent) => {
                    check_creator(&def, sent.as_ref(), &current.body)?;
                    fields.clone()
                }
                Edit::MergePatch(patch, sent) => {
                    check_creator(&def, sent.as_ref(), &current.body)?;
                    let mut base = current.fields();
                    base.remove(CREATED_BY);
                    let mut merged = Value::Object(base);
                    merge_patch(&mut merged, &Value::Object(patch.clone()));
                    client_fields(&def, merged, None)?.0
                }
            };
            def.validate(&Value::Object(fields.clone()))
                .map_err(|fields| ApiError::validation(name, fields))?;
            Ok(Decision::<Infallible>::Replace {
                fields: keep_read_only(&def, &current.body, fields),
                announce: announce(&def, EventAction::Updated, caller, trace_id),
            })
        })
        .await;
    match modified {
        Ok(Modified::Committed(committed)) => Ok(*committed),
        Ok(Modified::Kept(never)) => match never {},
        // Only a change with a task marker can have been applied before.
        Ok(Modified::AlreadyApplied) => Err(ApiError::Internal(anyhow::anyhow!(
            "a change without a task marker was already applied"
        ))),
        Err(ModifyError::NotFound) => Err(no_such_document(name, id)),
        Err(ModifyError::PreconditionFailed { current: Some(version) }) => {
            Err(ApiError::PreconditionFailed(format!(
                "If-Match does not match the current version (ETag \"{version}\"); re-read the document"
            )))
        }
        Err(ModifyError::PreconditionFailed { current: None }) => {
            Err(ApiError::PreconditionFailed(
                "the document changed since it was read (If-Match does not match)".into(),
            ))
        }
        Err(ModifyError::Contended { .. }) => {
            Err(ApiError::Conflict(format!("'{id}' is being changed concurrently; retry")))
        }
        Err(ModifyError::Rejected(err)) => Err(err),
        Err(ModifyError::Unstorable(err)) => {
            Err(ApiError::BadRequest(format!("document cannot be stored: {err}")))
        }
        Err(ModifyError::Store(err)) => Err(err.into()),
    }
}

/// PUT replaces the document with the body's client fields; PATCH merge-patches it.
async fn update(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
    method: Method,
    Writing { caller, writer }: Writing,
    headers: HeaderMap,
    Extension(trace_id): Extension<TraceId>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let def = collection(&state, &name)?;
    caller.require(def.write_access())?;
    state.writes.admit_document(&def, &writer)?;
    let (fields, creator) = client_fields(&def, body, Some(&id))?;
    let edit = if method == Method::PATCH {
        Edit::MergePatch(fields, creator)
    } else {
        Edit::Replace(fields, creator)
    };
    let committed = modify(&state, &name, &id, &caller, &headers, &trace_id, edit).await?;
    let change = after_commit(&state, committed, &writer);
    Ok(document_response(StatusCode::OK, change.version, change.data))
}

async fn remove(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
    Writing { caller, writer }: Writing,
    headers: HeaderMap,
    Extension(trace_id): Extension<TraceId>,
) -> Result<StatusCode, ApiError> {
    let def = collection(&state, &name)?;
    caller.require(def.write_access())?;
    state.writes.admit_document(&def, &writer)?;
    let committed = modify(&state, &name, &id, &caller, &headers, &trace_id, Edit::Delete).await?;
    after_commit(&state, committed, &writer);
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
/// for the next page, and each document's version (`versions`: id → version, what a live query
/// reconciles events with; docs/protocol.md, "Live queries").
async fn list(
    State(state): State<AppState>,
    Path(name): Path<String>,
    caller: Caller,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let def = collection(&state, &name)?;
    let readable = match caller.require(def.read_access())? {
        Scope::All => None,
        Scope::Documents(grant) => Some(grant),
    };
    let query = ListQuery::parse(&def, &params, readable)?;
    let page = state.store.list(&name, &query.spec).await?;
    let next = match &page.next {
        Next::End => None,
        Next::After(cursor) => Some(query.cursor_text(cursor)),
        Next::NotScalar { field } => {
            return Err(ApiError::BadRequest(format!(
                "cannot page by '{field}': a document holds an object or array there; sort by a field with plain values"
            )));
        }
    };
    let versions: Map<String, Value> =
        page.items.iter().map(|d| (d.id.to_hex(), Value::from(d.version))).collect();
    let items: Vec<Value> = page.items.into_iter().map(|d| d.body).collect();
    Ok(Json(json!({"items": items, "next": next, "versions": versions})))
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
            precondition(&headers, header::IF_MATCH).unwrap()
        };
        assert!(parse("*").matches(9));
        assert!(parse("\"2\", W/\"3\"").matches(3));
        assert!(!parse("\"2\"").matches(3));
        assert!(!parse("garbage").matches(1));
        assert_eq!(precondition(&HeaderMap::new(), header::IF_MATCH), None);
    }
}
