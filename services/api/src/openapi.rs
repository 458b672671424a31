//! The OpenAPI 3.1 document (`/openapi.json`), generated from the routes this crate serves and
//! the collections' JSON Schemas (the page that reads it, `/docs`, is a file of the web app:
//! `web.rs`, with the app's security headers).

use axum::{Json, Router, extract::State, response::IntoResponse, routing::get};
use courier_core::collection_spec::{AccessLevel, AccessRule};
use serde_json::{Map, Value, json};

use crate::{
    collections::{CollectionDef, Collections, FieldType},
    query::{DEFAULT_LIMIT, MAX_LIMIT},
    routes::queues::MAX_PAGE,
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

async fn openapi_json(State(state): State<AppState>) -> impl IntoResponse {
    let mut document = document(&state.collections.current());
    if state.seed_compat
        && let Some(paths) = document["paths"].as_object_mut()
    {
        crate::compat::openapi_paths(paths);
        with_limit_statuses(paths);
    }
    Json(document)
}

/// What a 503 can mean on any api operation (the `code` says which; retry after `Retry-After`).
const UNAVAILABLE: &str = "Unavailable, retry after Retry-After: the database is unreachable (store_unavailable) or a query hit its time limit (query_timeout); a write's stream is full or too many changes wait to be published (stream_full, outbox_full; nothing was written); or the api is at its limits (overloaded: too many requests in flight; request_timeout: the request took too long, a write may have been applied)";

/// Every operation of `paths` (all but the ops endpoints) gets the api-wide 503 (HTTP limits,
/// query time limit, full streams) with its `Retry-After` header.
pub fn with_limit_statuses(paths: &mut Map<String, Value>) {
    let retry_after =
        json!({"description": "Seconds to wait before retrying", "schema": {"type": "integer"}});
    for (path, item) in paths.iter_mut() {
        if matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics") {
            continue;
        }
        let Some(item) = item.as_object_mut() else { continue };
        for (method, operation) in item.iter_mut() {
            if !matches!(method.as_str(), "get" | "put" | "post" | "patch" | "delete") {
                continue;
            }
            let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut)
            else {
                continue;
            };
            let unavailable = responses.entry("503").or_insert_with(|| json!({
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            }));
            unavailable["description"] = json!(UNAVAILABLE);
            unavailable["headers"] = json!({"Retry-After": retry_after});
        }
    }
}

fn error_responses(codes: &[&str]) -> Map<String, Value> {
    let describe = |code: &str| match code {
        "400" => "Malformed JSON, id, filter, cursor or query parameter",
        "401" => "Missing, invalid or expired access token",
        "403" => {
            "Signed in, but not allowed: the rule needs a role (admin, or the one it names) or the document's creator"
        }
        "404" => "Unknown collection, document, queue or dead letter",
        "409" => "Conflict: a taken username, or changed concurrently too often (retry)",
        "429" => "Too many requests; retry after the Retry-After seconds",
        "500" => "Internal error (details are logged, not sent)",
        "412" => "If-Match does not match the current version",
        "413" => "Body over the size limit",
        "415" => "Body is not JSON",
        "422" => {
            "Document does not match the schema, or holds a field name that starts with '$' or contains '.' (every failing field listed)"
        }
        "503" => UNAVAILABLE,
        _ => "Error",
    };
    codes
        .iter()
        .map(|code| {
            let mut body = json!({"description": describe(code), "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
            if *code == "429" {
                body["headers"] = json!({"Retry-After": {"schema": {"type": "integer", "minimum": 1}}});
            }
            ((*code).to_owned(), body)
        })
        .collect()
}

fn responses(success: (&str, Value), errors: &[&str]) -> Value {
    let mut all = error_responses(errors);
    all.insert(success.0.to_owned(), success.1);
    Value::Object(all)
}

fn document_content(name: &str) -> Value {
    json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}Document")}}})
}

/// Whitespace as Rust's `str::trim` and `char::is_whitespace` see it (Unicode White_Space),
/// for patterns of values the api trims: spelled out, since regex engines' `\s` differ.
pub(crate) const WHITESPACE: &str =
    "\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

/// A path id: an ObjectId's 24 hexadecimal characters.
pub(crate) const OBJECT_ID_PATTERN: &str = "^[0-9a-fA-F]{24}$";

/// `sort`: comma-separated declared fields, each optionally '-' (descending), each once (the
/// api refuses a repeat; a pattern cannot say that).
fn sort_parameter(def: &CollectionDef) -> Value {
    let description =
        "Comma-separated fields, each at most once; '-' prefix for descending, e.g. -age,name";
    let names: Vec<&String> = match def.spec.schema.get("properties").and_then(Value::as_object) {
        Some(properties) if def.spec.schema.get("additionalProperties") == Some(&json!(false)) => {
            let mut names: Vec<&String> = properties.keys().collect();
            names.sort();
            names
        }
        // Any field of an open schema can be sorted by.
        _ => {
            return json!({"name": "sort", "in": "query", "schema": {"type": "string", "pattern": "^(-?[a-z_][a-z0-9_]*)?(,-?[a-z_][a-z0-9_]*)*$"}, "description": description});
        }
    };
    let field = format!("-?({})", names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join("|"));
    json!({"name": "sort", "in": "query", "schema": {"type": "string", "pattern": format!("^({field}(,{field})*)?$")}, "description": description})
}

/// An access rule as `/api/v1/collections` shows it: alternatives joined by `, `.
const ACCESS_RULE_PATTERN: &str = r"^(public|authenticated|owner|role:[a-z][a-z0-9_-]*|field:[A-Za-z_][A-Za-z0-9_]*)(, (public|authenticated|owner|role:[a-z][a-z0-9_-]*|field:[A-Za-z_][A-Za-z0-9_]*))*$";

fn query_parameters(def: &CollectionDef) -> Vec<Value> {
    let mut parameters = vec![
        sort_parameter(def),
        json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}}),
        json!({"name": "cursor", "in": "query", "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}, "description": "The 'next' value of the previous page, with the same sort (an opaque token: any other value is a 400)"}),
    ];
    if let Some(properties) = def.spec.schema.get("properties").and_then(Value::as_object) {
        let mut names: Vec<&String> = properties.keys().collect();
        names.sort();
        for name in names {
            let schema = match def.field_type(name) {
                Some(FieldType::Integer) => {
                    json!({"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX})
                }
                Some(FieldType::Number) => json!({"type": "number"}),
                Some(FieldType::Boolean) => json!({"type": "boolean"}),
                Some(FieldType::String) => {
                    json!({"type": "string", "maxLength": courier_core::filter::MAX_VALUE_BYTES})
                }
                _ => continue,
            };
            parameters.push(json!({"name": name, "in": "query", "schema": schema, "description": format!("Only documents whose {name} equals this (repeat for any of several)")}));
            let ordered = !matches!(def.field_type(name), Some(FieldType::Boolean));
            for (op, meaning) in [
                ("in", "is one of these (repeat the parameter)"),
                ("ne", "differs from this (or is absent)"),
                ("gt", "is greater than this"),
                ("gte", "is at least this"),
                ("lt", "is less than this"),
                ("lte", "is at most this"),
            ] {
                if ordered || matches!(op, "in" | "ne") {
                    parameters.push(json!({"name": format!("{name}[{op}]"), "in": "query", "schema": schema, "description": format!("Only documents whose {name} {meaning}")}));
                }
            }
        }
    }
    parameters
}

/// Who may call: anyone (a token is optional, and checked when sent: a bad one is a 401) or
/// signed-in users only.
fn security(rule: &AccessRule) -> Value {
    if rule.is_public() { json!([{}, {"bearerAuth": []}]) } else { json!([{"bearerAuth": []}]) }
}

/// The statuses a rule can add: 401 (also when public: a token sent is checked), 403 when it
/// can refuse a signed-in user (a role; a create or change the per-document alternatives do
/// not admit).
fn denials(rule: &AccessRule, changes_a_document: bool) -> Vec<&'static str> {
    let may_forbid = rule.alternatives().iter().any(|level| match level {
        AccessLevel::Role(_) | AccessLevel::Field(_) => true,
        AccessLevel::Owner => changes_a_document,
        AccessLevel::Public | AccessLevel::Authenticated => false,
    });
    if rule.is_public() || !may_forbid { vec!["401"] } else { vec!["401", "403"] }
}

/// `base` plus `extra`, sorted (the order of the responses map).
fn codes<'a>(base: &[&'a str], extra: Vec<&'a str>) -> Vec<&'a str> {
    let mut all: Vec<&str> = base.iter().copied().chain(extra).collect();
    all.sort_unstable();
    all.dedup();
    all
}

fn json_body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// `/api/v1/auth/*`.
fn account_paths() -> Map<String, Value> {
    // Trimmed and lowercased before the check (so the Kelvin sign K counts as k); login checks
    // the form too, before the name becomes a rate-limiter key.
    let username = json!({"type": "string", "pattern": format!("^[{WHITESPACE}]*[A-Za-z0-9\\u212a][A-Za-z0-9\\u212a_.-]{{2,31}}[{WHITESPACE}]*$"),
        "description": "3–32 of a-z, 0-9, '_', '.', '-', starting with a letter or digit (case-insensitive, trimmed)"});
    let password = json!({"type": "string", "minLength": crate::auth::MIN_PASSWORD_CHARS, "maxLength": crate::auth::MAX_PASSWORD_CHARS,
        "description": "Also refused (422) at registration: the username itself, a very common password, one character repeated"});
    let credentials = json_body(
        json!({"type": "object", "additionalProperties": false, "required": ["username", "password"], "properties": {
        "username": username.clone(), "password": password}}),
    );
    let login = json_body(
        json!({"type": "object", "additionalProperties": false, "required": ["username", "password"], "properties": {
        "username": username, "password": {"type": "string"}}}),
    );
    let tokens = ok(
        "Access and refresh token",
        json!({"type": "object", "required": ["access_token", "refresh_token", "token_type", "expires_in"], "properties": {
        "access_token": {"type": "string"}, "refresh_token": {"type": "string"}, "token_type": {"const": "Bearer"}, "expires_in": {"type": "integer"}}}),
    );
    let user = json!({"type": "object", "required": ["id", "username", "roles", "created_at"], "properties": {
        "id": {"type": "string", "pattern": "^[0-9a-f]{24}$"}, "username": {"type": "string"}, "roles": {"type": "array", "items": {"type": "string"}}, "created_at": {"type": "string", "format": "date-time"}}});
    let bearer = json!([{"bearerAuth": []}]);
    let tags = json!(["auth"]);
    let mut paths = Map::new();
    let mut add = |path: &str, item: Value| {
        paths.insert(path.to_owned(), item);
    };
    add(
        "/api/v1/auth/register",
        json!({"post": {"tags": tags, "summary": "Create an account (no roles); rate-limited per client address", "security": [], "requestBody": credentials,
        "responses": responses(("201", ok("The new user", user.clone())), &["400", "409", "413", "415", "422", "429", "503"])}}),
    );
    add(
        "/api/v1/auth/login",
        json!({"post": {"tags": tags, "summary": "Start a session: an access token (with the user's roles) and a refresh token", "security": [], "requestBody": login,
        "responses": responses(("200", tokens.clone()), &["400", "401", "413", "415", "422", "429", "503"])}}),
    );
    add(
        "/api/v1/auth/refresh",
        json!({"post": {"tags": tags, "summary": "Rotate a refresh token (single use; within the session's absolute lifetime)", "security": [],
        "requestBody": json_body(json!({"type": "object", "additionalProperties": false, "required": ["refresh_token"], "properties": {"refresh_token": {"type": "string"}}})),
        "responses": responses(("200", tokens), &["400", "401", "413", "415", "422", "503"])}}),
    );
    add(
        "/api/v1/auth/logout",
        json!({"post": {"tags": tags, "summary": "End one session: the body's refresh token's, else the access token's; its refresh tokens stop working", "security": [{"bearerAuth": []}, {}],
        "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false, "required": ["refresh_token"], "properties": {"refresh_token": {"type": "string"}}}}}},
        "responses": responses(("204", json!({"description": "Signed out"})), &["400", "401", "403", "422", "503"])}}),
    );
    add(
        "/api/v1/auth/logout-all",
        json!({"post": {"tags": tags, "summary": "End every session of the user", "security": bearer,
        "responses": responses(("204", json!({"description": "Signed out everywhere"})), &["401", "503"])}}),
    );
    add(
        "/api/v1/auth/me",
        json!({"get": {"tags": tags, "summary": "The signed-in user, with its roles", "security": bearer,
        "responses": responses(("200", ok("The user", user)), &["401", "503"])}}),
    );
    paths
}

/// The body of a merge patch (RFC 7386) of `schema`'s documents: every field optional, `null`
/// removes an optional one (a required one cannot be removed), unknown fields as the schema says.
fn merge_patch_schema(schema: &Value) -> Value {
    let mut patch = schema.clone();
    let Some(object) = patch.as_object_mut() else {
        return json!({"type": "object"});
    };
    let required: Vec<String> =
        object.remove("required").and_then(|r| serde_json::from_value(r).ok()).unwrap_or_default();
    if let Some(properties) = object.get_mut("properties").and_then(Value::as_object_mut) {
        for (name, field) in properties.iter_mut() {
            if !required.contains(name) {
                *field = json!({"anyOf": [field.clone(), {"type": "null"}]});
            }
        }
    }
    patch
}

/// 304 for a conditional GET whose `If-None-Match` names the current version.
fn not_modified() -> Value {
    json!({"description": "Not modified: If-None-Match names the current version", "headers": {"ETag": {"schema": {"type": "string"}}}})
}

/// `/api/v1/queues…` (admins only: 401 anonymous, 403 for other users): the task queue per
/// priority, its dead letters, and retrying one.
fn queue_paths(paths: &mut Map<String, Value>, schemas: &mut Map<String, Value>) {
    let priority = json!({"enum": ["high", "normal", "low"]});
    let lane = json!({"type": "object", "properties": {
        "consumer": {"type": "string", "description": "workers-<priority>"},
        "pending": {"type": "integer", "description": "Not yet delivered to a worker"},
        "in_flight": {"type": "integer", "description": "Delivered, not yet acknowledged"},
        "redelivered": {"type": "integer"}, "consumers": {"type": "integer", "description": "Pull requests waiting (workers with a free slot)"},
        "deliveries_total": {"type": "integer"}, "queued": {"type": "integer"}, "dead_lettered": {"type": "integer"},
        "oldest_pending_age_seconds": {"type": "number", "description": "How long the oldest undelivered task has waited (0: none)"}}});
    schemas.insert(
        "Queue".into(),
        json!({"type": "object", "properties": {
            "name": {"type": "string"}, "stream": {"type": "string"}, "dead_letter_stream": {"type": "string"},
            "pending": {"type": "integer"}, "in_flight": {"type": "integer"}, "redelivered": {"type": "integer"},
            "dead_lettered": {"type": "integer"}, "consumers": {"type": "integer"},
            "enqueued_total": {"type": "integer"}, "processed_total": {"type": "integer"},
            "dead_lettered_total": {"type": "integer"}, "deliveries_total": {"type": "integer"},
            "by_priority": {"type": "object", "properties": {"high": lane, "normal": lane, "low": lane}},
            "scheduled": {"type": "object", "description": "Tasks held back until their not_before", "properties": {
                "count": {"type": "integer"}, "next_due": {"type": ["string", "null"], "format": "date-time"}}},
            "legacy": {"type": "object", "description": "Tasks from before priorities (tasks.<kind>), moved to normal", "properties": {
                "queued": {"type": "integer"}, "consumer_present": {"type": "boolean"}}},
            "external": {"type": "object", "description": "Tasks waiting for external workers (tasks.external.<kind>), in no priority", "properties": {
                "queued": {"type": "integer"}}},
            "by_kind": {"type": "object", "additionalProperties": {"type": "object", "properties": {"queued": {"type": "integer"}, "dead_lettered": {"type": "integer"}}}}}}),
    );
    let bearer = json!([{"bearerAuth": []}]);
    let tags = json!(["queues"]);
    let queue_param =
        json!({"name": "queue", "in": "path", "required": true, "schema": {"enum": ["tasks"]}});
    paths.insert(
        "/api/v1/queues".into(),
        json!({"get": {"tags": tags, "summary": "The task queue per priority, scheduled tasks, dead letters and totals", "security": bearer,
                "responses": responses(("200", json!({"description": "The one queue, tasks", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"queues": {"type": "array", "items": {"$ref": "#/components/schemas/Queue"}}}}}}})), &["401", "403", "503"])}}),
    );
    paths.insert(
        "/api/v1/queues/{queue}/dead".into(),
        json!({"get": {"tags": tags, "summary": "Dead letters, oldest first", "security": bearer,
                "parameters": [queue_param,
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": u64::MAX}, "description": "The previous page's next"},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50}}],
                "responses": responses(("200", json!({"description": "A page of dead letters", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"next": {"type": ["integer", "null"]}, "items": {"type": "array", "items": {"type": "object", "properties": {
                        "id": {"type": "integer"}, "subject": {"type": "string"}, "kind": {"type": "string"}, "priority": priority,
                        "task_id": {"type": ["string", "null"]}, "reason": {"type": ["string", "null"]}, "attempts": {"type": ["integer", "null"]},
                        "worker": {"type": ["string", "null"]}, "time": {"type": "string"}, "task": {}, "payload": {"type": "string"}}}}}}}}})), &["400", "401", "403", "404"])}}),
    );
    paths.insert(
        "/api/v1/queues/{queue}/dead/{id}/retry".into(),
        json!({"post": {"tags": tags, "summary": "Re-enqueue a dead letter: at its priority or another, now or later", "security": bearer,
                "parameters": [queue_param,
                    {"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1, "maximum": u64::MAX}, "description": "The dead letter's DLQ sequence"},
                    {"name": "priority", "in": "query", "schema": priority, "description": "Another priority than the one it was taken from"},
                    {"name": "not_before", "in": "query", "schema": {"type": "string", "format": "date-time"}, "description": "RFC 3339; held back (scheduled) until then, at most 365 days ahead"}],
                "responses": responses(("202", json!({"description": "Re-enqueued, or scheduled", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"queue": {"type": "string"}, "dead_letter": {"type": "integer"}, "subject": {"type": "string"},
                        "priority": priority, "task_id": {"type": ["string", "null"]}, "enqueued_seq": {"type": ["integer", "null"]},
                        "scheduled_for": {"type": ["string", "null"], "format": "date-time"}}}}}})), &["400", "401", "403", "404", "409", "503"])}}),
    );
}

/// `/healthz`, `/readyz`, `/metrics` (served by `courier_core::ops`).
fn ops_paths(paths: &mut Map<String, Value>) {
    let tags = json!(["operations"]);
    let status = |values: Value| json!({"type": "object", "required": ["status"], "properties": {"status": {"enum": values}, "checks": {"type": "object"}}});
    paths.insert(
        "/healthz".into(),
        json!({"get": {"tags": tags, "summary": "The process is alive", "security": [],
                "responses": {"200": {"description": "Alive", "content": {"application/json": {"schema": status(json!(["ok"]))}}}}}}),
    );
    paths.insert(
        "/readyz".into(),
        json!({"get": {"tags": tags, "summary": "MongoDB and NATS answer", "security": [],
                "responses": {"200": {"description": "Ready", "content": {"application/json": {"schema": status(json!(["ready"]))}}},
                              "503": {"description": "Not ready: which check failed", "content": {"application/json": {"schema": status(json!(["not_ready"]))}}}}}}),
    );
    paths.insert(
        "/metrics".into(),
        json!({"get": {"tags": tags, "summary": "Prometheus metrics (OpenMetrics text); keep it off the Ingress", "security": [],
                "responses": {"200": {"description": "The metrics", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}}}}),
    );
}

/// The web app, the API explorer and this document (`crate::web`, `router()` here).
fn web_paths(paths: &mut Map<String, Value>) {
    let tags = json!(["web"]);
    let etag = json!({"ETag": {"schema": {"type": "string"}}});
    let if_none_match =
        json!([{"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}]);
    let html = |description: &str| json!({"description": description, "headers": etag, "content": {"text/html": {"schema": {"type": "string"}}}});
    let missing = error_responses(&["404"]).remove("404").expect("404 described");
    paths.insert(
        "/".into(),
        json!({"get": {"tags": tags, "summary": "The web app", "security": [], "parameters": if_none_match,
                "responses": {"200": html("The app's page"), "304": not_modified(),
                              "503": {"description": "The web app's bundle is not built (the page says how)", "content": {"text/html": {"schema": {"type": "string"}}}}}}}),
    );
    paths.insert(
        "/docs".into(),
        json!({"get": {"tags": tags, "summary": "The API explorer (reads /openapi.json)", "security": [], "parameters": if_none_match,
                "responses": {"200": html("The explorer's page"), "304": not_modified()}}}),
    );
    paths.insert(
        "/static/{path}".into(),
        json!({"get": {"tags": tags, "summary": "A file of the web app or the explorer", "security": [],
                "parameters": [{"name": "path", "in": "path", "required": true, "schema": {"type": "string"}}, if_none_match[0]],
                "responses": {"200": {"description": "The file", "headers": etag, "content": {"*/*": {"schema": {}}}}, "304": not_modified(), "404": missing}}}),
    );
    paths.insert(
        "/app-config.json".into(),
        json!({"get": {"tags": tags, "summary": "The web app's settings (where the WebSocket is)", "security": [],
                "responses": {"200": {"description": "The settings", "content": {"application/json": {"schema": {"type": "object"}}}}}}}),
    );
    paths.insert(
        "/openapi.json".into(),
        json!({"get": {"tags": tags, "summary": "This document", "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object", "required": ["openapi", "paths"]}}}}}}}),
    );
}

/// The whole OpenAPI document for the current collections.
pub fn document(collections: &Collections) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"},
            "fields": {"type": "array", "items": {"type": "object", "properties": {"field": {"type": "string"}, "reason": {"type": "string"}}}}}}}}),
    );
    for def in collections.all() {
        let name = def.name().to_owned();
        let input = def.spec.schema.clone();
        let mut stored = input.clone();
        if let Some(object) = stored.as_object_mut() {
            let properties = object.entry("properties").or_insert_with(|| json!({}));
            if let Some(p) = properties.as_object_mut() {
                p.insert(
                    "id".into(),
                    json!({"type": "string", "pattern": "^[0-9a-f]{24}$", "readOnly": true}),
                );
                p.insert(
                    "created_by".into(),
                    json!({"type": "string", "readOnly": true, "description": "The creator's user id (absent: written anonymously). Set by Courier; a create that sends it, or an update that changes it, is refused (422)."}),
                );
            }
            let required = object.entry("required").or_insert_with(|| json!([]));
            if let Some(r) = required.as_array_mut() {
                r.push(json!("id"));
            }
        }
        schemas.insert(format!("{name}Patch"), merge_patch_schema(&input));
        schemas.insert(name.clone(), input);
        schemas.insert(format!("{name}Document"), stored);
        let (read, write) = (security(def.read_access()), security(def.write_access()));
        let read_errors = |base: &[&'static str]| codes(base, denials(def.read_access(), false));
        let create_errors = codes(
            &["400", "404", "413", "415", "422", "429", "503"],
            denials(def.write_access(), false),
        );
        let change_errors = |base: &[&'static str]| codes(base, denials(def.write_access(), true));
        let body = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}});
        let patch = json!({"$ref": format!("#/components/schemas/{name}Patch")});
        let tags = json!([name]);
        let id_param = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "pattern": OBJECT_ID_PATTERN}});
        let if_match = json!({"name": "If-Match", "in": "header", "schema": {"type": "string"}, "description": "ETag of the version you read (or *); 412 if it changed since"});
        let etag = json!({"ETag": {"schema": {"type": "string"}}});
        paths.insert(
            format!("/api/v1/{name}"),
            json!({
                "get": {"tags": tags, "summary": format!("List {name}"), "security": read, "parameters": query_parameters(&def),
                        "responses": responses(("200", json!({"description": "A page of documents", "content": {"application/json": {"schema": {
                            "type": "object", "required": ["items", "next"], "properties": {"items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{name}Document")}}, "next": {"type": ["string", "null"]}}}}}})), &read_errors(&["400", "404", "503"]))},
                "post": {"tags": tags, "summary": format!("Create a {name} document; emits {name}.created"), "security": write, "requestBody": body,
                         "responses": responses(("201", json!({"description": "Created", "headers": {"ETag": {"schema": {"type": "string"}}, "Location": {"schema": {"type": "string"}}}, "content": document_content(&name)})), &create_errors)},
            }),
        );
        let mut read_one = responses(
            (
                "200",
                json!({"description": "The document", "headers": etag, "content": document_content(&name)}),
            ),
            &read_errors(&["400", "404", "503"]),
        );
        read_one["304"] = not_modified();
        paths.insert(
            format!("/api/v1/{name}/{{id}}"),
            json!({
                "parameters": [id_param],
                "get": {"tags": tags, "summary": format!("Read a {name} document"), "security": read,
                        "parameters": [{"name": "If-None-Match", "in": "header", "schema": {"type": "string"}, "description": "ETags (or *): 304 when one is the current version"}],
                        "responses": read_one},
                "put": {"tags": tags, "summary": format!("Replace a {name} document; emits {name}.updated"), "security": write, "parameters": [if_match], "requestBody": body,
                        "responses": responses(("200", json!({"description": "The stored document", "headers": etag, "content": document_content(&name)})), &change_errors(&["400", "404", "409", "412", "413", "415", "422", "429", "503"]))},
                "patch": {"tags": tags, "summary": format!("Merge-patch a {name} document (RFC 7386: null removes a field); emits {name}.updated"), "security": write, "parameters": [if_match],
                          "requestBody": {"required": true, "content": {"application/merge-patch+json": {"schema": patch}, "application/json": {"schema": patch}}},
                          "responses": responses(("200", json!({"description": "The stored document", "headers": etag, "content": document_content(&name)})), &change_errors(&["400", "404", "409", "412", "413", "415", "422", "429", "503"]))},
                "delete": {"tags": tags, "summary": format!("Delete a {name} document; emits {name}.deleted with its last state"), "security": write, "parameters": [if_match],
                           "responses": responses(("204", json!({"description": "Deleted"})), &change_errors(&["400", "404", "409", "412", "429", "503"]))},
            }),
        );
    }
    paths.extend(account_paths());
    paths.extend(crate::routes::chats::openapi::paths());
    schemas.extend(crate::routes::chats::openapi::schemas());
    paths.insert(
        "/api/v1/collections".into(),
        json!({"get": {"tags": ["collections"], "summary": "The declared collections: name, JSON Schema, access rules, tasks", "security": [],
                "responses": {"200": {"description": "Every collection, by name", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"items": {"type": "array", "items": {"type": "object", "required": ["name", "schema", "access", "tasks"], "properties": {
                        "name": {"type": "string"}, "schema": {"type": "object"},
                        "access": {"type": "object", "properties": {"read": {"type": "string", "pattern": ACCESS_RULE_PATTERN}, "write": {"type": "string", "pattern": ACCESS_RULE_PATTERN}}},
                        "tasks": {"type": "array", "items": {"type": "object", "properties": {"kind": {"type": "string"}, "on": {"type": "array", "items": {"enum": ["create", "update", "delete"]}},
                            "priority": {"enum": ["high", "normal", "low"], "default": "normal"},
                            "webhook": {"type": "boolean", "description": "Delivered to a webhook (its URL and secret are not published)"},
                            "delay": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h|d)$", "description": "Held back this long after the change (at most 365d)"}}}}}}}}}}}}}}}),
    );
    paths.insert(
        "/api/v1/telemetry/web".into(),
        json!({"post": {"tags": ["telemetry"], "summary": "The web app's browser-side observations (api call timings, WebSocket failures, uncaught errors) for its Prometheus metrics; anonymous, limited per client address; 404 when turned off (COURIER_WEB_TELEMETRY=false)", "security": [],
                "requestBody": {"required": true, "description": "JSON; also accepted as text/plain, which is how navigator.sendBeacon sends a string", "content": {"application/json": {"schema": crate::web_telemetry::report_schema()}}},
                "responses": responses(("204", json!({"description": "Recorded"})), &["400", "404", "413", "415", "422", "429"])}}),
    );
    queue_paths(&mut paths, &mut schemas);
    ops_paths(&mut paths);
    web_paths(&mut paths);
    with_limit_statuses(&mut paths);
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Courier API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Declared collections with live events: every change is published as <collection>.<action> on channels <collection> and <collection>:<id> (WebSocket protocol: docs/protocol.md). Chat rooms under /api/v1/chats, live on chat:<room id> and user:<my id> (docs/chat.md)."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every router the api serves, as `(source, prefix it is mounted at)`: the served routes
    /// are read from each source's `.route(…)` calls (its code before the tests).
    const ROUTERS: &[(&str, &str, &str)] = &[
        ("crate::auth::router(", include_str!("auth/mod.rs"), "/api/v1"),
        ("chats::router(", include_str!("routes/chats/mod.rs"), "/api/v1"),
        ("telemetry::router(", include_str!("routes/telemetry.rs"), "/api/v1"),
        ("documents::router(", include_str!("routes/documents.rs"), "/api/v1"),
        ("queues::router(", include_str!("routes/queues.rs"), ""),
        ("crate::openapi::router(", include_str!("openapi.rs"), ""),
        ("collections::router(", include_str!("routes/collections.rs"), ""),
        ("crate::web::router(", include_str!("web.rs"), ""),
        ("courier_core::ops::router(", include_str!("../../core/src/ops.rs"), ""),
    ];

    /// `(method, path)` of every `.route(path, method(…).other(…))` in `source`.
    fn routes_in(source: &str) -> Vec<(String, String)> {
        let code = source.split("#[cfg(test)]").next().unwrap_or(source);
        let needle = [".rou", "te("].concat();
        let mut routes = Vec::new();
        for (start, _) in code.match_indices(&needle) {
            // The call's text: up to its closing parenthesis.
            let rest = &code[start + needle.len()..];
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map(|(i, _)| i)
                .expect("a closed .route( call");
            let call = &rest[..end];
            let path = call.split('"').nth(1).expect("a literal path").to_owned();
            for method in ["get", "post", "put", "patch", "delete"] {
                let called = call.match_indices(&format!("{method}(")).any(|(i, _)| {
                    i == 0 || !call[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                if called {
                    routes.push((method.to_owned(), path.clone()));
                }
            }
        }
        routes
    }

    #[test]
    fn every_served_route_has_an_openapi_operation() {
        let app = include_str!("routes/mod.rs");
        let router_fn = app.split("pub fn router(").nth(1).expect("routes::router");
        assert_eq!(
            router_fn.matches("router(").count(),
            ROUTERS.len(),
            "routes::router mounts a router this test does not read: add it to ROUTERS"
        );
        let collections = shipped();
        let doc = document(&collections);
        let mut checked = 0;
        for (mounted, source, prefix) in ROUTERS {
            assert!(router_fn.contains(mounted), "routes::router no longer mounts {mounted}");
            let routes = routes_in(source);
            assert!(!routes.is_empty(), "no routes read from {mounted}");
            for (method, path) in routes {
                let path = format!("{prefix}{path}").replace("{*", "{");
                let paths: Vec<String> = if path.starts_with("/api/v1/{collection}") {
                    collections
                        .all()
                        .iter()
                        .map(|def| path.replace("{collection}", def.name()))
                        .collect()
                } else {
                    vec![path]
                };
                for path in paths {
                    let operation = &doc["paths"][&path][&method];
                    assert!(operation.is_object(), "{method} {path} is served but not in OpenAPI");
                    assert!(
                        operation["responses"].as_object().is_some_and(|r| !r.is_empty()),
                        "{method} {path} documents no responses"
                    );
                    checked += 1;
                }
            }
        }
        // Every OpenAPI operation is one of those routes (nothing documented that is not served).
        let documented: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|item| {
                let item = item.as_object().unwrap();
                ["get", "post", "put", "patch", "delete"]
                    .iter()
                    .filter(|m| item.contains_key(**m))
                    .count()
            })
            .sum();
        assert_eq!(documented, checked, "OpenAPI describes an operation no router serves");
    }

    #[test]
    fn bodies_say_whether_unknown_properties_are_refused() {
        let doc = document(&shipped());
        let schemas = &doc["components"]["schemas"];
        let mut bodies = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let Some(content) = operation["requestBody"]["content"].as_object() else {
                    continue;
                };
                for media in content.values() {
                    let mut schema = &media["schema"];
                    if let Some(name) = schema["$ref"].as_str() {
                        schema = &schemas[name.trim_start_matches("#/components/schemas/")];
                    }
                    let variants: Vec<&Value> = match schema["oneOf"].as_array() {
                        Some(variants) => variants.iter().collect(),
                        None => vec![schema],
                    };
                    for variant in variants {
                        assert!(
                            variant["additionalProperties"].is_boolean(),
                            "{method} {path}: additionalProperties is not stated"
                        );
                        bodies += 1;
                    }
                }
            }
        }
        assert!(bodies > 20, "{bodies}");
    }

    #[test]
    fn merge_patches_make_optional_fields_removable_and_required_ones_not() {
        let patch = merge_patch_schema(
            &json!({"type": "object", "additionalProperties": false, "required": ["name"],
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}),
        );
        assert_eq!(patch["required"], Value::Null);
        assert_eq!(patch["additionalProperties"], false);
        assert_eq!(patch["properties"]["name"], json!({"type": "string"}));
        assert_eq!(patch["properties"]["age"]["anyOf"][1], json!({"type": "null"}));
    }

    fn shipped() -> Collections {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../collections.yaml");
        Collections::load(&path).unwrap()
    }

    #[test]
    fn every_collection_gets_its_paths_schemas_and_typed_filters() {
        let doc = document(&shipped());
        assert_eq!(doc["openapi"], "3.1.0");
        for name in ["products", "desks", "pets"] {
            let list = &doc["paths"][format!("/api/v1/{name}")];
            assert!(list["get"].is_object() && list["post"].is_object(), "{name}");
            let one = &doc["paths"][format!("/api/v1/{name}/{{id}}")];
            for method in ["get", "put", "patch", "delete"] {
                assert!(one[method].is_object(), "{name} {method}");
            }
            assert_eq!(doc["components"]["schemas"][name]["type"], "object");
        }
        let pets_filters: Vec<&str> = doc["paths"]["/api/v1/pets"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(pets_filters.contains(&"species") && pets_filters.contains(&"vaccinated"));
        assert_eq!(doc["paths"]["/api/v1/pets"]["post"]["security"], json!([{"bearerAuth": []}]));
        assert_eq!(
            doc["paths"]["/api/v1/products"]["post"]["security"],
            json!([{}, {"bearerAuth": []}]),
            "anonymous, or a token that is checked"
        );
        assert!(doc["paths"]["/api/v1/desks/{id}"]["put"]["responses"]["412"].is_object());
        assert_eq!(doc["paths"]["/api/v1/collections"]["get"]["security"], json!([]));
        assert!(doc["paths"]["/api/v1/chats/{id}/messages"]["post"].is_object());
        assert!(doc["components"]["schemas"]["ChatMessage"].is_object());
        let retry = &doc["paths"]["/api/v1/queues/{queue}/dead/{id}/retry"]["post"];
        let names: Vec<&str> = retry["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["queue", "id", "priority", "not_before"]);
        assert!(retry["responses"]["400"].is_object());
        let queue = &doc["components"]["schemas"]["Queue"]["properties"];
        for field in ["by_priority", "scheduled", "pending", "in_flight"] {
            assert!(queue[field].is_object(), "{field}");
        }
        assert_eq!(doc["paths"]["/api/v1/queues"]["get"]["security"], json!([{"bearerAuth": []}]));
    }

    #[test]
    fn ownership_roles_sessions_and_admin_endpoints_are_described() {
        let doc = document(&shipped());
        let paths = &doc["paths"];
        // pets is `write: owner`: changes can be 403, creates cannot; products are public.
        assert!(paths["/api/v1/pets/{id}"]["delete"]["responses"]["403"].is_object());
        assert!(paths["/api/v1/pets"]["post"]["responses"]["403"].is_null());
        assert!(paths["/api/v1/pets"]["post"]["responses"]["401"].is_object());
        // Public, but a token sent is checked: a bad one is a 401 there too.
        assert!(paths["/api/v1/products"]["post"]["responses"]["401"].is_object());
        assert!(paths["/api/v1/products"]["post"]["responses"]["403"].is_null());
        let created_by = &doc["components"]["schemas"]["petsDocument"]["properties"]["created_by"];
        assert_eq!(created_by["readOnly"], true);
        for path in ["/api/v1/queues", "/api/v1/queues/{queue}/dead"] {
            let responses = &paths[path]["get"]["responses"];
            assert!(responses["401"].is_object() && responses["403"].is_object(), "{path}");
        }
        assert!(
            paths["/api/v1/queues/{queue}/dead/{id}/retry"]["post"]["responses"]["403"].is_object()
        );
        assert!(paths["/api/v1/auth/register"]["post"]["responses"]["429"].is_object());
        assert!(paths["/api/v1/auth/login"]["post"]["responses"]["429"].is_object());
        assert!(paths["/api/v1/auth/logout"]["post"]["responses"]["204"].is_object());
        assert!(paths["/api/v1/auth/logout-all"]["post"]["responses"]["401"].is_object());
        assert!(paths["/api/v1/auth/me"]["get"]["responses"]["200"].is_object());
    }

    /// The abuse limits' statuses: every api operation may answer 503 (stream_full,
    /// query_timeout, overloaded, request_timeout) with Retry-After; lists 400 for a bad cursor;
    /// writes 422 for a refused field name.
    #[test]
    fn every_operation_states_the_limit_statuses() {
        let doc = document(&shipped());
        let mut operations = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                if method == "parameters" {
                    continue;
                }
                operations += 1;
                let unavailable = &operation["responses"]["503"];
                if matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics") {
                    // Outside the limits: probes and scrapes answer under load.
                    assert!(
                        !unavailable["description"].as_str().unwrap_or("").contains("overloaded")
                    );
                    continue;
                }
                let description = unavailable["description"].as_str().unwrap_or("");
                for code in ["stream_full", "query_timeout", "overloaded", "request_timeout"] {
                    assert!(description.contains(code), "{method} {path}: {description}");
                }
                assert!(unavailable["headers"]["Retry-After"].is_object(), "{method} {path}");
                // Every write under /api/v1 is limited per writer (login and refresh by their
                // own limits; logout produces no event).
                let writes = path.starts_with("/api/v1/")
                    && !path.starts_with("/api/v1/auth/")
                    && !path.starts_with("/api/v1/queues")
                    && method != "get";
                if writes {
                    let limited = &operation["responses"]["429"];
                    assert!(limited["headers"]["Retry-After"].is_object(), "{method} {path}");
                }
            }
        }
        assert!(operations > 20, "{operations}");
        let list = &doc["paths"]["/api/v1/pets"]["get"]["responses"];
        assert!(list["400"]["description"].as_str().unwrap().contains("cursor"));
        let create = &doc["paths"]["/api/v1/pets"]["post"]["responses"];
        assert!(create["422"]["description"].as_str().unwrap().contains("'$'"));
    }
}
