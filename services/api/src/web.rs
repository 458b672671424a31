//! The web app served at `/`: the production bundle of `services/web` (TypeScript + React,
//! built by `vite build` into `services/web/dist`) embedded in the binary by `build.rs`, so one
//! binary serves everything, with security headers on every response and `/app-config.json`
//! telling the page where the broadcaster's WebSocket is. The API explorer at `/docs` (it reads
//! `/openapi.json`) is three plain files of `services/api/explorer/`, always embedded, so a
//! binary built without the app still documents itself; it gets the same headers.
//!
//! Caching: files under `/static/assets/` carry a content hash in their name and are served
//! `immutable` for a year; `index.html` and the unhashed files (favicon) are `no-cache` with a
//! strong `ETag`, so a new release is picked up at the next load. Built without a bundle, `/`
//! says how to build the app.

use std::{
    path::{Component, PathBuf},
    sync::Arc,
};

use axum::{
    Router,
    extract::{FromRef, Path, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use sha2::{Digest, Sha256};

use crate::{config::ApiConfig, error::ApiError, state::AppState};

/// The Content-Security-Policy of every web response: only this origin's scripts and styles
/// (no inline code), WebSockets to any host (the broadcaster may live elsewhere).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `Cache-Control` of content-hashed assets (`/static/assets/…`).
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

const HTML: &str = "text/html; charset=utf-8";

/// The embedded bundle: `(path under dist/, bytes)`, empty when built without the app.
const BUNDLE: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/web_bundle.rs"));

/// Shown at `/` by a binary built without the web app.
const NOT_BUILT: &str = "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Courier</title>\
<h1>The web app is not built</h1><p>This courier-api was compiled without the web app's bundle. \
Build it with <code>./dev build-web</code> (or <code>cd services/web &amp;&amp; npm ci &amp;&amp; npx vite build</code>), \
then rebuild courier-api (<code>cargo build</code>). The api itself works: see <a href=\"/docs\">/docs</a>.</p></html>";

/// The content type of a bundle file, by extension.
fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => HTML,
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        "json" | "map" => "application/json",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Hashed names (Vite's `assets/name-<hash>.ext`) never change content.
fn is_hashed(path: &str) -> bool {
    path.starts_with("assets/")
}

/// The API explorer's files: `(path under /static/, bytes)`; `docs.html` is served at `/docs`.
const EXPLORER: &[(&str, &[u8])] = &[
    ("docs/docs.html", include_bytes!("../explorer/docs.html")),
    ("docs/docs.css", include_bytes!("../explorer/docs.css")),
    ("docs/docs.js", include_bytes!("../explorer/docs.js")),
];

/// Where the files come from.
#[derive(Debug, Clone)]
enum Source {
    Embedded(&'static [(&'static str, &'static [u8])]),
    /// A bundle directory (development: `COURIER_WEB_DIR=services/web/dist`).
    Dir(PathBuf),
}

/// What the web routes need from the configuration.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// `/app-config.json`, rendered once.
    config_json: Arc<str>,
    source: Source,
}

impl WebSettings {
    /// Checks `public_ws_url` and `web_dir`; the error names the setting.
    pub fn from_config(config: &ApiConfig) -> anyhow::Result<Self> {
        let ws_url = config.public_ws_url.trim();
        check_public_ws_url(ws_url).map_err(|problem| {
            anyhow::anyhow!("COURIER_PUBLIC_WS_URL (--public-ws-url) '{ws_url}': {problem}")
        })?;
        if let Some(dir) = &config.web_dir {
            anyhow::ensure!(
                dir.join("index.html").is_file(),
                "COURIER_WEB_DIR (--web-dir) '{}' has no index.html",
                dir.display()
            );
        }
        let config_json =
            serde_json::json!({"ws_url": ws_url, "version": env!("CARGO_PKG_VERSION"), "telemetry": config.web_telemetry}).to_string();
        let source = match &config.web_dir {
            Some(dir) => Source::Dir(dir.clone()),
            None => Source::Embedded(BUNDLE),
        };
        Ok(WebSettings { config_json: config_json.into(), source })
    }
}

/// Empty (the page computes `ws[s]://<page host>:8765/ws`), an absolute `ws://` / `wss://` URL,
/// or an absolute path resolved against the page's origin (`/ws` behind an Ingress).
pub fn check_public_ws_url(url: &str) -> Result<(), &'static str> {
    if url.is_empty() {
        return Ok(());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\') {
        return Err("must not contain spaces, quotes or control characters");
    }
    if let Some(rest) = url.strip_prefix("ws://").or_else(|| url.strip_prefix("wss://")) {
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        return if host.is_empty() { Err("names no host") } else { Ok(()) };
    }
    if url.starts_with('/') && !url.starts_with("//") {
        return Ok(());
    }
    Err("use ws://host:port/path, wss://host/path, a path like /ws, or leave it empty")
}

/// `/`, `/docs`, `/static/<file>` and `/app-config.json`, in any router whose state holds the
/// settings.
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<WebSettings>: FromRef<S>,
{
    Router::new()
        .route("/", get(index))
        .route("/docs", get(docs))
        .route("/static/{*path}", get(static_file))
        .route("/app-config.json", get(app_config))
}

impl FromRef<AppState> for Arc<WebSettings> {
    fn from_ref(state: &AppState) -> Self {
        state.web.clone()
    }
}

type Shared = State<Arc<WebSettings>>;

async fn index(State(settings): Shared, headers: HeaderMap) -> Response {
    serve(&settings, "index.html", &headers).await
}

/// The API explorer: it reads `/openapi.json` and calls the api from the page.
async fn docs(State(settings): Shared, headers: HeaderMap) -> Response {
    serve(&settings, "docs/docs.html", &headers).await
}

async fn static_file(
    State(settings): Shared,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    // `index.html` is served at `/` only (and the explorer at `/docs`), so a page has one address.
    if path == "index.html" || path == "docs/docs.html" {
        return not_found(&path);
    }
    serve(&settings, &path, &headers).await
}

async fn app_config(State(settings): Shared) -> Response {
    let mut response = (StatusCode::OK, settings.config_json.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(headers);
    response
}

fn not_found(path: &str) -> Response {
    let shown: String = path.chars().take(100).collect();
    let mut response = ApiError::NotFound(format!("no web app file '{shown}'")).into_response();
    secure(response.headers_mut());
    response
}

/// A relative path made only of plain names (no `..`, no root, no empty parts).
fn clean(path: &str) -> Option<PathBuf> {
    if path.is_empty() || path.len() > 300 || path.contains('\\') {
        return None;
    }
    let relative = std::path::Path::new(path);
    relative.components().all(|c| matches!(c, Component::Normal(_))).then(|| relative.to_owned())
}

/// The file's bytes: the embedded copy, or from the directory in development.
async fn contents(settings: &WebSettings, path: &str) -> Option<std::borrow::Cow<'static, [u8]>> {
    if path.starts_with("docs/") {
        return EXPLORER.iter().find(|(name, _)| *name == path).map(|(_, bytes)| (*bytes).into());
    }
    match &settings.source {
        Source::Embedded(bundle) => {
            bundle.iter().find(|(name, _)| *name == path).map(|(_, bytes)| (*bytes).into())
        }
        Source::Dir(dir) => {
            let file = dir.join(clean(path)?);
            match tokio::fs::read(&file).await {
                Ok(bytes) => Some(bytes.into()),
                Err(err) => {
                    tracing::debug!(file = %file.display(), %err, "web app file unreadable");
                    None
                }
            }
        }
    }
}

fn etag_of(bytes: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value")
}

/// Whether `If-None-Match` names `etag` (or is `*`).
fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Some(text) = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let etag = etag.to_str().unwrap_or("");
    text.split(',')
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

async fn serve(settings: &WebSettings, path: &str, request: &HeaderMap) -> Response {
    let Some(bytes) = contents(settings, path).await else {
        if path == "index.html" {
            let mut response =
                (StatusCode::SERVICE_UNAVAILABLE, NOT_BUILT.to_owned()).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(HTML));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            secure(headers);
            return response;
        }
        return not_found(path);
    };
    let etag = etag_of(&bytes);
    let mut response = if not_modified(request, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        bytes.into_owned().into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    let cache = if is_hashed(path) { IMMUTABLE } else { "no-cache" };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::ETAG, etag);
    secure(headers);
    response
}

/// The security headers of every web response.
fn secure(headers: &mut HeaderMap) {
    headers
        .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use clap::Parser;
    use tower::ServiceExt;

    /// A bundle like Vite's: the page, hashed assets, an unhashed public file.
    const TEST_BUNDLE: &[(&str, &[u8])] = &[
        ("index.html", b"<!doctype html><script type=\"module\" src=\"/static/assets/index-a1b2.js\"></script>"),
        ("assets/index-a1b2.js", b"console.log(1)"),
        ("assets/index-c3d4.css", b"body{}"),
        ("favicon.svg", b"<svg/>"),
    ];

    fn settings(ws_url: &str) -> WebSettings {
        let mut config = ApiConfig::parse_from(["courier-api"]);
        config.public_ws_url = ws_url.to_owned();
        let mut settings = WebSettings::from_config(&config).expect("valid settings");
        settings.source = Source::Embedded(TEST_BUNDLE);
        settings
    }

    fn app(settings: WebSettings) -> Router {
        router().with_state(Arc::new(settings))
    }

    async fn get(app: &Router, uri: &str, if_none_match: Option<&str>) -> Response {
        let mut request = axum::http::Request::get(uri);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap()
    }

    async fn body(response: Response) -> Vec<u8> {
        axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap().to_vec()
    }

    fn header(response: &Response, name: header::HeaderName) -> &str {
        response
            .headers()
            .get(&name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {name} header"))
    }

    #[tokio::test]
    async fn every_file_has_its_content_type_security_headers_and_caching() {
        let app = app(settings(""));
        for (uri, content_type, cache) in [
            ("/", HTML, "no-cache"),
            ("/static/assets/index-c3d4.css", "text/css; charset=utf-8", IMMUTABLE),
            ("/static/assets/index-a1b2.js", "text/javascript; charset=utf-8", IMMUTABLE),
            ("/static/favicon.svg", "image/svg+xml", "no-cache"),
            ("/docs", HTML, "no-cache"),
            ("/static/docs/docs.css", "text/css; charset=utf-8", "no-cache"),
            ("/static/docs/docs.js", "text/javascript; charset=utf-8", "no-cache"),
        ] {
            let response = get(&app, uri, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{uri}");
            assert_eq!(header(&response, header::CONTENT_TYPE), content_type, "{uri}");
            assert_eq!(
                header(&response, header::CONTENT_SECURITY_POLICY),
                CONTENT_SECURITY_POLICY,
                "{uri}"
            );
            assert_eq!(header(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            assert_eq!(header(&response, header::REFERRER_POLICY), "no-referrer");
            assert_eq!(header(&response, header::CACHE_CONTROL), cache, "{uri}");
            let etag = header(&response, header::ETAG).to_owned();
            assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() == 26, "{etag}");
            let name = match uri {
                "/" => "index.html",
                "/docs" => "docs/docs.html",
                other => other.strip_prefix("/static/").unwrap(),
            };
            let expected = TEST_BUNDLE.iter().chain(EXPLORER).find(|(n, _)| *n == name).unwrap().1;
            assert_eq!(body(response).await, expected, "{uri}");

            let again = get(&app, uri, Some(&etag)).await;
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{uri} with If-None-Match");
            assert_eq!(header(&again, header::ETAG), etag);
            assert_eq!(header(&again, header::CONTENT_SECURITY_POLICY), CONTENT_SECURITY_POLICY);
            assert!(body(again).await.is_empty());
            let stale = get(&app, uri, Some("\"0123\", W/\"4567\"")).await;
            assert_eq!(stale.status(), StatusCode::OK, "{uri} with a stale tag");
        }
    }

    #[tokio::test]
    async fn without_a_bundle_the_page_says_how_to_build_the_app() {
        let mut settings = settings("");
        settings.source = Source::Embedded(&[]);
        let app = app(settings);
        let response = get(&app, "/", None).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header(&response, header::CONTENT_TYPE), HTML);
        assert_eq!(header(&response, header::CONTENT_SECURITY_POLICY), CONTENT_SECURITY_POLICY);
        let text = String::from_utf8(body(response).await).unwrap();
        assert!(text.contains("./dev build-web") && text.contains("vite build"), "{text}");
        let explorer = get(&app, "/docs", None).await;
        assert_eq!(explorer.status(), StatusCode::OK, "the explorer needs no bundle");
        assert_eq!(get(&app, "/static/assets/x.js", None).await.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn the_policy_forbids_inline_code_and_foreign_origins() {
        let policy: Vec<&str> = CONTENT_SECURITY_POLICY.split(';').map(str::trim).collect();
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self' ws: wss:",
            "object-src 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(
                policy.contains(&directive),
                "CSP lacks {directive}: {CONTENT_SECURITY_POLICY}"
            );
        }
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"), "no 'unsafe-inline' or 'unsafe-eval'");
    }

    #[tokio::test]
    async fn unknown_files_are_json_404s_that_stay_inside_the_app() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<!doctype html>").unwrap();
        let mut config = ApiConfig::parse_from(["courier-api"]);
        config.web_dir = Some(dir.path().join("."));
        let from_dir = app(WebSettings::from_config(&config).unwrap());
        for app in [app(settings("")), from_dir] {
            for uri in [
                "/static/nope.js",
                "/static/../Cargo.toml",
                "/static/%2e%2e/src/web.rs",
                "/static/assets/..%2f..%2fCargo.toml",
                "/static//etc/passwd",
                "/static/index.html",
                "/static/assets",
            ] {
                let response = get(&app, uri, None).await;
                assert_eq!(response.status(), StatusCode::NOT_FOUND, "{uri}");
                assert_eq!(header(&response, header::CONTENT_TYPE), "application/json");
                assert_eq!(header(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
                let error: serde_json::Value =
                    serde_json::from_slice(&body(response).await).unwrap();
                assert_eq!(error["error"]["code"], "not_found", "{uri}");
            }
        }
    }

    #[tokio::test]
    async fn app_config_carries_the_public_websocket_url() {
        for ws_url in ["", "wss://live.example.com/ws", "ws://127.0.0.1:9000/ws", "/ws"] {
            let response = get(&app(settings(ws_url)), "/app-config.json", None).await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(header(&response, header::CONTENT_TYPE), "application/json");
            assert_eq!(header(&response, header::CACHE_CONTROL), "no-store");
            assert_eq!(header(&response, header::CONTENT_SECURITY_POLICY), CONTENT_SECURITY_POLICY);
            let config: serde_json::Value = serde_json::from_slice(&body(response).await).unwrap();
            assert_eq!(config["ws_url"], ws_url);
            assert_eq!(config["version"], env!("CARGO_PKG_VERSION"));
        }
    }

    #[test]
    fn a_bad_public_websocket_url_is_refused_naming_the_setting() {
        for bad in [
            "http://example.com/ws",
            "ws://",
            "wss:///ws",
            "//evil.example/ws",
            "ws://a b/ws",
            "ws\"://x",
            "example.com:8765",
        ] {
            let mut config = ApiConfig::parse_from(["courier-api"]);
            config.public_ws_url = bad.to_owned();
            let err = WebSettings::from_config(&config).unwrap_err().to_string();
            assert!(err.starts_with("COURIER_PUBLIC_WS_URL (--public-ws-url)"), "{bad}: {err}");
        }
        let config = ApiConfig::parse_from([
            "courier-api",
            "--public-ws-url",
            "wss://x.example/ws",
            "--web-dir",
            "/nonexistent",
        ]);
        assert_eq!(config.public_ws_url, "wss://x.example/ws");
        let err = WebSettings::from_config(&config).unwrap_err().to_string();
        assert!(err.contains("COURIER_WEB_DIR"), "{err}");
    }

    #[tokio::test]
    async fn a_web_dir_overrides_the_embedded_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<!doctype html><title>dev</title>").unwrap();
        std::fs::create_dir(dir.path().join("assets")).unwrap();
        std::fs::write(dir.path().join("assets/main-9f9f.js"), "export {}").unwrap();
        let mut config = ApiConfig::parse_from(["courier-api"]);
        config.web_dir = Some(dir.path().to_owned());
        let app = app(WebSettings::from_config(&config).unwrap());
        let response = get(&app, "/", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body(response).await, b"<!doctype html><title>dev</title>");
        let script = get(&app, "/static/assets/main-9f9f.js", None).await;
        assert_eq!(script.status(), StatusCode::OK);
        assert_eq!(header(&script, header::CACHE_CONTROL), IMMUTABLE);
        // A file missing from the directory is a 404, not the embedded copy.
        assert_eq!(get(&app, "/static/favicon.svg", None).await.status(), StatusCode::NOT_FOUND);
    }

    /// The real bundle, when this binary was built with one: the page loads only files of the
    /// bundle, with no inline code (CSP), and no module uses eval or localStorage.
    #[test]
    fn the_embedded_bundle_has_no_inline_code_and_every_reference_resolves() {
        let Some((_, index)) = BUNDLE.iter().find(|(name, _)| *name == "index.html") else {
            assert!(BUNDLE.is_empty(), "a bundle without index.html");
            return;
        };
        let index = std::str::from_utf8(index).unwrap();
        assert!(!index.contains(" style="), "no inline style attributes (CSP style-src 'self')");
        assert!(!index.contains("<style"), "no <style> blocks");
        for script in index.split("<script").skip(1) {
            let tag = script.split('>').next().unwrap();
            assert!(tag.contains("src=\"/static/"), "every script is a file: <script{tag}>");
            assert!(script.split('>').nth(1).unwrap().starts_with("</script"), "no inline body");
        }
        let references: Vec<&str> =
            index.split("/static/").skip(1).map(|rest| rest.split('"').next().unwrap()).collect();
        assert!(references.iter().any(|r| r.ends_with(".js")), "the page loads a script");
        for reference in references {
            assert!(
                BUNDLE.iter().any(|(name, _)| *name == reference),
                "'{reference}' is referenced but not in the bundle"
            );
        }
        for (name, bytes) in BUNDLE.iter().filter(|(name, _)| name.ends_with(".js")) {
            let text = String::from_utf8_lossy(bytes);
            assert!(!text.contains("eval("), "{name}: no eval (CSP)");
            assert!(!text.contains("localStorage."), "{name}: tokens never in localStorage");
        }
    }

    #[test]
    fn the_explorer_has_no_inline_code_and_its_references_resolve() {
        let html = std::str::from_utf8(EXPLORER[0].1).unwrap();
        assert!(!html.contains(" style=") && !html.contains("<style"), "no inline style (CSP)");
        let scripts: Vec<&str> = html.split("<script").skip(1).collect();
        assert_eq!(scripts.len(), 1, "one script, a file");
        assert!(scripts[0].starts_with(" type=\"module\" src=\"/static/docs/docs.js\"></script"));
        for reference in html.split("/static/").skip(1).map(|r| r.split('"').next().unwrap()) {
            let known =
                EXPLORER.iter().any(|(name, _)| *name == reference) || reference == "favicon.svg";
            assert!(known, "{reference} is served");
        }
    }
}
