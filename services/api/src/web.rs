//! The web console served at `/` and the API explorer at `/docs`: plain HTML, CSS and ES modules
//! from `services/api/web/`, compiled into the binary (one image carries everything), with the
//! same security headers on every response and `/app-config.json` telling the page where the
//! broadcaster's WebSocket is.
//!
//! File names carry no content hash (there is no build step), so every file is served with
//! `Cache-Control: no-cache` and a strong `ETag`: browsers revalidate and get a 304 until the
//! api is upgraded, never a stale module next to a fresh one.

use std::{path::PathBuf, sync::Arc};

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

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// One file of the web app.
struct Asset {
    /// Path under `services/api/web/` (and under `/static/` in URLs; `index.html` is `/`).
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            bytes: include_bytes!(concat!("../web/", $path)),
        }
    };
}

/// Every file of the app (a unit test checks this matches the directory).
const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("app.css", CSS),
    asset!("favicon.svg", SVG),
    asset!("js/main.js", JS),
    asset!("js/account.js", JS),
    asset!("js/api.js", JS),
    asset!("js/session.js", JS),
    asset!("js/live.js", JS),
    asset!("js/schema-form.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/views.js", JS),
    asset!("docs.html", HTML),
    asset!("docs.css", CSS),
    asset!("js/docs.js", JS),
];

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// What the web routes need from the configuration.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// `/app-config.json`, rendered once.
    config_json: Arc<str>,
    /// Serve files from here instead of the embedded copies (development).
    dir: Option<PathBuf>,
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
            serde_json::json!({"ws_url": ws_url, "version": env!("CARGO_PKG_VERSION")}).to_string();
        Ok(WebSettings { config_json: config_json.into(), dir: config.web_dir.clone() })
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
    serve(&settings, "docs.html", &headers).await
}

async fn static_file(
    State(settings): Shared,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    // `index.html` is served at `/` only, so the page has one address.
    if path == "index.html" {
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

/// The file's bytes: from the directory in development, else the embedded copy.
async fn contents(
    settings: &WebSettings,
    asset: &'static Asset,
) -> Option<std::borrow::Cow<'static, [u8]>> {
    match &settings.dir {
        None => Some(asset.bytes.into()),
        // Only names from the table are joined, so no request can reach outside `dir`.
        Some(dir) => match tokio::fs::read(dir.join(asset.path)).await {
            Ok(bytes) => Some(bytes.into()),
            Err(err) => {
                tracing::warn!(file = %dir.join(asset.path).display(), %err, "web app file unreadable");
                None
            }
        },
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
    let Some(asset) = find(path) else {
        return not_found(path);
    };
    let Some(bytes) = contents(settings, asset).await else {
        return not_found(path);
    };
    let etag = etag_of(&bytes);
    let mut response = if not_modified(request, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        bytes.into_owned().into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
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

    fn settings(ws_url: &str) -> WebSettings {
        let mut config = ApiConfig::parse_from(["courier-api"]);
        config.public_ws_url = ws_url.to_owned();
        WebSettings::from_config(&config).expect("valid settings")
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
    async fn every_file_has_its_content_type_security_headers_and_revalidation() {
        let app = app(settings(""));
        for (uri, content_type) in [
            ("/", HTML),
            ("/docs", HTML),
            ("/static/app.css", CSS),
            ("/static/docs.css", CSS),
            ("/static/js/main.js", JS),
            ("/static/js/docs.js", JS),
            ("/static/js/live.js", JS),
            ("/static/favicon.svg", SVG),
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
            assert_eq!(header(&response, header::CACHE_CONTROL), "no-cache");
            let etag = header(&response, header::ETAG).to_owned();
            assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() == 26, "{etag}");
            let file = match uri {
                "/" => "index.html",
                "/docs" => "docs.html",
                other => other.strip_prefix("/static/").unwrap(),
            };
            let expected = find(file).unwrap().bytes;
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
        let app = app(settings(""));
        for uri in [
            "/static/nope.js",
            "/static/../Cargo.toml",
            "/static/%2e%2e/src/web.rs",
            "/static/index.html",
            "/static/js",
        ] {
            let response = get(&app, uri, None).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(header(&response, header::CONTENT_TYPE), "application/json");
            assert_eq!(header(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            let error: serde_json::Value = serde_json::from_slice(&body(response).await).unwrap();
            assert_eq!(error["error"]["code"], "not_found", "{uri}");
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
        let mut config = ApiConfig::parse_from(["courier-api"]);
        config.web_dir = Some(dir.path().to_owned());
        let app = app(WebSettings::from_config(&config).unwrap());
        let response = get(&app, "/", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body(response).await, b"<!doctype html><title>dev</title>");
        // A file of the app missing from the directory is a 404, not the embedded copy.
        assert_eq!(get(&app, "/static/app.css", None).await.status(), StatusCode::NOT_FOUND);
    }

    fn web_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web")
    }

    fn files_under(dir: &std::path::Path, prefix: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type().unwrap().is_dir() {
                files_under(&entry.path(), &format!("{name}/"), out);
            } else {
                out.push(name);
            }
        }
    }

    #[test]
    fn the_table_lists_exactly_the_files_of_the_web_directory() {
        let mut on_disk = Vec::new();
        files_under(&web_dir(), "", &mut on_disk);
        on_disk.sort();
        let mut served: Vec<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        served.sort();
        assert_eq!(served, on_disk, "add new files of services/api/web to ASSETS in web.rs");
    }

    #[test]
    fn the_pages_have_no_inline_code_and_every_reference_resolves() {
        let mut references = Vec::new();
        for page in ["index.html", "docs.html"] {
            let html = std::str::from_utf8(find(page).unwrap().bytes).unwrap();
            assert!(!html.contains(" style="), "{page}: no inline style attributes (CSP)");
            assert!(!html.contains("<style"), "{page}: no <style> blocks");
            let handler = html.split(" on").skip(1).find(|rest| {
                let name_len = rest.chars().take_while(char::is_ascii_lowercase).count();
                name_len > 0 && rest[name_len..].starts_with('=')
            });
            assert!(
                handler.is_none(),
                "{page}: no inline event handlers: on{}",
                handler.unwrap_or("").chars().take(40).collect::<String>()
            );
            let scripts = html.split("<script").skip(1).collect::<Vec<_>>();
            assert!(!scripts.is_empty(), "{page} loads its code");
            for script in scripts {
                let tag = script.split('>').next().unwrap();
                assert!(
                    tag.contains("src=\"/static/"),
                    "{page}: every script is a file of the app: <script{tag}>"
                );
                assert!(
                    script.split('>').nth(1).unwrap().starts_with("</script"),
                    "{page}: scripts have no inline body"
                );
            }
            // Every /static/ reference of the page (and below, of every module) exists.
            references.extend(
                html.split("/static/")
                    .skip(1)
                    .map(|rest| rest.split('"').next().unwrap().to_owned()),
            );
        }
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = std::str::from_utf8(asset.bytes).unwrap();
            for line in
                text.lines().filter(|l| l.starts_with("import ") || l.starts_with("export * from"))
            {
                let Some(spec) = line.split(['\'', '"']).nth(1) else { continue };
                let spec = spec
                    .strip_prefix("./")
                    .unwrap_or_else(|| panic!("{}: import '{spec}' is not relative", asset.path));
                references.push(format!("js/{spec}"));
            }
            assert!(
                !text.contains("eval(") && !text.contains("new Function"),
                "{}: no eval (CSP)",
                asset.path
            );
            assert!(
                !text.contains("localStorage.") && !text.contains("localStorage["),
                "{}: tokens live in memory and sessionStorage only",
                asset.path
            );
        }
        assert!(references.len() > ASSETS.len() / 2, "found the references: {references:?}");
        for reference in references {
            assert!(find(&reference).is_some(), "'{reference}' is referenced but not served");
        }
    }
}
