//! The seed systems' REST paths (`COURIER_SEED_COMPAT`): each alias rewrites the request onto
//! the modern route it stands for, forwards it to the modern router, and reshapes the answer
//! the way the seed's clients read it. Nothing here stores, validates or authorizes on its own.
//! One module per seed; the [`ALIASES`] table drives OpenAPI, the `/api/` home page and the
//! once-per-client deprecation log.

mod desks;
mod pets;
mod products;

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    body::Body,
    extract::{ConnectInfo, Request},
    http::{HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::MethodRouter,
};
use courier_core::request_telemetry::TraceId;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

use crate::state::AppState;

/// One deprecated seed path and the modern request it maps onto.
pub struct Alias {
    pub seed: &'static str,
    pub method: &'static str,
    /// OpenAPI form (`{id}` for path parameters), without the trailing slash (both work).
    pub path: &'static str,
    pub modern: &'static str,
    pub summary: &'static str,
}

/// Every alias, grouped by seed.
pub const ALIASES: &[Alias] = &[
    Alias {
        seed: "chapter-ci",
        method: "GET",
        path: "/api",
        modern: "GET /openapi.json",
        summary: "Home page: the seed endpoints and their modern equivalents",
    },
    Alias {
        seed: "chapter-ci",
        method: "GET",
        path: "/api/products",
        modern: "GET /api/v1/products",
        summary: "List products (a JSON array)",
    },
    Alias {
        seed: "chapter-ci",
        method: "GET",
        path: "/api/product/{id}",
        modern: "GET /api/v1/products/{id}",
        summary: "Read one product",
    },
    Alias {
        seed: "chapter-ci",
        method: "POST",
        path: "/api/product",
        modern: "POST /api/v1/products",
        summary: "Create a product {nombre, precio, talla}; broadcasts product_created",
    },
    Alias {
        seed: "desks",
        method: "POST",
        path: "/api/desk",
        modern: "POST /api/v1/desks",
        summary: "Create a desk {name, width, height}; broadcasts desk_created",
    },
    Alias {
        seed: "desks",
        method: "PATCH",
        path: "/api/desk/{id}",
        modern: "PATCH /api/v1/desks/{id}",
        summary: "Update some fields of a desk; broadcasts desk_updated",
    },
    Alias {
        seed: "desks",
        method: "PUT",
        path: "/api/desk/{id}",
        modern: "PUT /api/v1/desks/{id}",
        summary: "Replace a desk; broadcasts desk_updated",
    },
    Alias {
        seed: "desks",
        method: "DELETE",
        path: "/api/desk/{id}",
        modern: "DELETE /api/v1/desks/{id}",
        summary: "Delete a desk; broadcasts desk_deleted",
    },
    Alias {
        seed: "pets",
        method: "POST",
        path: "/api/token",
        modern: "POST /api/v1/auth/login",
        summary: "{username, password} → {access, refresh}",
    },
    Alias {
        seed: "pets",
        method: "POST",
        path: "/api/token/refresh",
        modern: "POST /api/v1/auth/refresh",
        summary: "{refresh} → {access, refresh} (refresh tokens rotate: keep the new one)",
    },
    Alias {
        seed: "pets",
        method: "GET",
        path: "/api/pets",
        modern: "GET /api/v1/pets",
        summary: "List pets (a JSON array); filters ?species=&vaccinated=",
    },
    Alias {
        seed: "pets",
        method: "POST",
        path: "/api/pets",
        modern: "POST /api/v1/pets",
        summary: "Create a pet and queue its enrichment: {message, pet, task_queued, info}",
    },
    Alias {
        seed: "pets",
        method: "GET",
        path: "/api/pets/{id}",
        modern: "GET /api/v1/pets/{id}",
        summary: "Read one pet",
    },
    Alias {
        seed: "pets",
        method: "PUT",
        path: "/api/pets/{id}",
        modern: "PUT /api/v1/pets/{id}",
        summary: "Replace a pet and queue its enrichment: {message, pet, task_queued, info}",
    },
    Alias {
        seed: "pets",
        method: "DELETE",
        path: "/api/pets/{id}",
        modern: "DELETE /api/v1/pets/{id}",
        summary: "Delete a pet: {message}",
    },
    Alias {
        seed: "pets",
        method: "GET",
        path: "/api/redis/stats",
        modern: "GET /api/v1/queues",
        summary: "The task queue's numbers in the seed's fields (admins only, like /api/v1/queues)",
    },
];

/// Distinct (client, alias) pairs remembered for the deprecation log; past this the log
/// stops growing (and stops logging) rather than grow without bound.
const MAX_REMEMBERED: usize = 10_000;

/// Largest modern answer an alias reshapes (a full page of documents fits).
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// What every alias handler shares: the modern router it forwards to.
#[derive(Clone)]
pub struct Compat {
    modern: Router,
    state: AppState,
    seen: Arc<Mutex<HashSet<(IpAddr, &'static str)>>>,
}

/// `app` plus the seed aliases when `state.seed_compat` (the modern routes are untouched).
pub fn with_aliases(app: Router, state: &AppState) -> Router {
    if !state.seed_compat {
        return app;
    }
    let compat = Compat { modern: app.clone(), state: state.clone(), seen: Arc::default() };
    app.merge(products::router(&compat)).merge(desks::router(&compat)).merge(pets::router(&compat))
}

/// The 400 for a path id that cannot go into the modern URL as it is; `None` for one that
/// can (the modern route then checks its form).
fn unsafe_id(id: &str) -> Option<Response> {
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let body = json!({"error": {"code": "bad_request", "message": format!("'{id}' is not a valid id (24 hexadecimal characters)"), "fields": [{"field": "id", "reason": "must be 24 hexadecimal characters"}]}});
    Some((StatusCode::BAD_REQUEST, Json(body)).into_response())
}

/// Routes `path` with and without its trailing slash (the seeds' Django URLs end in `/`).
fn both(router: Router<Compat>, path: &str, method: MethodRouter<Compat>) -> Router<Compat> {
    let bare = path.trim_end_matches('/');
    router.route(bare, method.clone()).route(&format!("{bare}/"), method)
}

impl Compat {
    /// Logs the first use of `alias` by each client address (a warning, with the replacement).
    fn note(&self, alias: &'static str, request: &Request) {
        let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() else {
            return;
        };
        let mut seen = self.seen.lock().expect("compat log lock poisoned");
        if seen.len() < MAX_REMEMBERED && seen.insert((peer.ip(), alias)) {
            let modern = ALIASES
                .iter()
                .find(|a| a.path == alias || format!("{} {}", a.method, a.path) == alias)
                .map_or("", |a| a.modern);
            tracing::warn!(client = %peer.ip(), alias, modern, "deprecated seed endpoint used; move to the modern one (docs/migrating.md)");
        }
    }

    /// Sends `request` to the modern route `method path_and_query` (headers, trace id and client
    /// address kept), with `body` as its JSON body when given.
    async fn forward(
        &self,
        request: Request,
        method: Method,
        path_and_query: &str,
        body: Option<Value>,
    ) -> Response {
        let (mut parts, original) = request.into_parts();
        // Only the extensions the modern handlers read go along: the outer route's own
        // (its matched path parameters) must not reach the inner routing.
        let mut extensions = axum::http::Extensions::new();
        if let Some(peer) = parts.extensions.remove::<ConnectInfo<SocketAddr>>() {
            extensions.insert(peer);
        }
        if let Some(trace_id) = parts.extensions.remove::<TraceId>() {
            extensions.insert(trace_id);
        }
        parts.extensions = extensions;
        parts.method = method;
        parts.uri = match Uri::try_from(path_and_query) {
            Ok(uri) => uri,
            Err(_) => return bad_request("the request path cannot be mapped"),
        };
        let body = match body {
            Some(value) => {
                parts
                    .headers
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                parts.headers.remove(header::CONTENT_LENGTH);
                Body::from(value.to_string())
            }
            None => original,
        };
        match self.modern.clone().oneshot(Request::from_parts(parts, body)).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// A modern answer's status and JSON body (`Null` when empty); errors pass through untouched.
async fn json_answer(response: Response) -> Result<(StatusCode, Value), Response> {
    let status = response.status();
    if !status.is_success() {
        return Err(response);
    }
    let bytes = axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
        .await
        .map_err(|_| internal("the modern answer was too large to reshape"))?;
    if bytes.is_empty() {
        return Ok((status, Value::Null));
    }
    let value =
        serde_json::from_slice(&bytes).map_err(|_| internal("the modern answer was not JSON"))?;
    Ok((status, value))
}

/// A list answer (`{items, next}`) as the seeds' plain JSON array.
async fn as_array(response: Response) -> Response {
    match json_answer(response).await {
        Ok((status, mut page)) => (status, Json(page["items"].take())).into_response(),
        Err(response) => response,
    }
}

/// The modern list path for `collection` with the request's query, one full page by default.
fn list_path(collection: &str, uri: &Uri) -> String {
    let query = uri.query().unwrap_or("");
    let has_limit = query.split('&').any(|pair| pair.starts_with("limit="));
    let limit =
        if has_limit { String::new() } else { format!("limit={}", crate::query::MAX_LIMIT) };
    let joined: Vec<&str> = [query, limit.as_str()].into_iter().filter(|s| !s.is_empty()).collect();
    if joined.is_empty() {
        format!("/api/v1/{collection}")
    } else {
        format!("/api/v1/{collection}?{}", joined.join("&"))
    }
}

fn bad_request(message: &str) -> Response {
    let body = json!({"error": {"code": "bad_request", "message": message}});
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

fn internal(message: &str) -> Response {
    tracing::error!(message, "seed alias could not reshape an answer");
    let body = json!({"error": {"code": "internal", "message": message}});
    (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
}

/// The aliases as deprecated OpenAPI operations, each naming its modern equivalent; merged
/// into `paths` when the layer is on.
pub fn openapi_paths(paths: &mut Map<String, Value>) {
    for alias in ALIASES {
        let operation = json!({
            "tags": [format!("seed: {}", alias.seed)],
            "deprecated": true,
            "summary": alias.summary,
            "description": format!("Deprecated alias kept for the {} seed's clients (also with a trailing slash). Use {} instead; see docs/migrating.md.", alias.seed, alias.modern),
            "x-modern-equivalent": alias.modern,
            "responses": {"default": {"description": "As the modern endpoint, in the seed's shape"}},
        });
        for path in [alias.path.to_owned(), format!("{}/", alias.path)] {
            let entry = paths.entry(path).or_insert_with(|| json!({}));
            entry[alias.method.to_ascii_lowercase()] = operation.clone();
        }
    }
}

/// `GET /api/`: the seed's home page, listing what it serves and where each moved.
async fn home() -> Json<Value> {
    let endpoints: Vec<Value> = ALIASES
        .iter()
        .map(|a| json!({"method": a.method, "path": format!("{}/", a.path), "seed": a.seed, "use_instead": a.modern}))
        .collect();
    Json(json!({
        "message": "Courier API. These seed endpoints still work but are deprecated: see docs/migrating.md and /docs.",
        "endpoints": endpoints,
        "docs": "/docs",
        "openapi": "/openapi.json",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_paths_keep_filters_and_default_to_a_full_page() {
        let uri: Uri = "/api/pets/?species=Cat&vaccinated=false".parse().unwrap();
        assert_eq!(list_path("pets", &uri), "/api/v1/pets?species=Cat&vaccinated=false&limit=1000");
        let uri: Uri = "/api/products/".parse().unwrap();
        assert_eq!(list_path("products", &uri), "/api/v1/products?limit=1000");
        let uri: Uri = "/api/products?limit=5".parse().unwrap();
        assert_eq!(list_path("products", &uri), "/api/v1/products?limit=5");
    }

    #[test]
    fn every_alias_is_a_deprecated_operation_naming_its_replacement() {
        let mut paths = Map::new();
        openapi_paths(&mut paths);
        for alias in ALIASES {
            for path in [alias.path.to_owned(), format!("{}/", alias.path)] {
                let op = &paths[&path][alias.method.to_ascii_lowercase()];
                assert_eq!(op["deprecated"], true, "{path}");
                assert_eq!(op["x-modern-equivalent"], alias.modern, "{path}");
            }
        }
    }
}
