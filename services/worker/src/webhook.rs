//! Webhook tasks: a task kind whose trigger names `webhook:` in `collections.yaml` is delivered
//! as a signed HTTP POST of the change's event (the JSON a WebSocket subscriber gets), per the
//! Standard Webhooks specification (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
//!
//! Delivery rules (docs/workers.md, "Webhook tasks"):
//! - a 2xx acknowledges; a timeout, connection error, 5xx or 429 (its `Retry-After` honoured) is
//!   tried again after the worker's backoff ([`WorkerConfig::backoff`]) until `max_deliver`
//!   attempts, then dead-lettered; any other answer (3xx: redirects are not followed, 4xx) is
//!   dead-lettered at once with its status and a bounded excerpt of its body;
//! - per document, one delivery at a time and in the order the worker took the tasks (commit
//!   order): the next waits while the previous is retried, so retries happen here, holding the
//!   task (with in-progress acks), not through a `nak`; different documents go in parallel, at
//!   most [`WorkerConfig::webhook_concurrency`] at once per webhook; when the worker stops, a
//!   delivery waiting for its turn or its retry gives its task back to the queue;
//! - the connection (hyper, rustls on ring) goes only to addresses the [`AllowList`] permits, checked on the resolved
//!   address ([`GuardedResolver`]) so DNS cannot point a public name at a private address.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use courier_core::{
    Task,
    collection_spec::{CollectionsFile, WebhookTarget},
    webhook::AllowList,
};
use futures::future::BoxFuture;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use sha2::Sha256;
use tokio::sync::{Notify, Semaphore};
use uuid::Uuid;

use crate::{
    config::WorkerConfig,
    handlers::{Admission, TaskError, TaskHandler, delivery_attempt},
};

/// Bytes of a refused answer's body kept in the dead letter.
pub const BODY_EXCERPT_BYTES: usize = 512;
/// Longest secret file read.
const MAX_SECRET_FILE_BYTES: u64 = 4096;
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Why the collections file's webhooks cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum WebhookSetupError {
    #[error("{path}: {problem}")]
    File { path: String, problem: String },
    #[error("task '{0}' is declared twice with different webhooks")]
    Conflict(String),
    #[error("the webhook HTTP client: {0}")]
    Client(String),
    #[error("task '{kind}': webhook url '{url}' is not a valid request URI")]
    Uri { kind: String, url: String },
}

/// The webhook handlers `file` declares, one per task kind.
pub fn handlers_from_file(
    path: &std::path::Path,
    config: &WorkerConfig,
    metrics: &Arc<WebhookMetrics>,
) -> Result<Vec<Arc<WebhookHandler>>, WebhookSetupError> {
    let file_error =
        |problem: String| WebhookSetupError::File { path: path.display().to_string(), problem };
    let text = std::fs::read_to_string(path).map_err(|err| file_error(err.to_string()))?;
    let (file, _) = CollectionsFile::load_checked(&text).map_err(|e| file_error(e.to_string()))?;
    let allowed = config.webhook_allow_list().map_err(file_error)?;
    file.check_webhooks(&allowed).map_err(|err| file_error(err.to_string()))?;
    let mut by_kind: HashMap<&str, &WebhookTarget> = HashMap::new();
    let mut handlers = Vec::new();
    for (_, task, target) in file.webhooks() {
        match by_kind.insert(&task.kind, target) {
            Some(seen) if seen != target => {
                return Err(WebhookSetupError::Conflict(task.kind.clone()));
            }
            Some(_) => continue,
            None => {}
        }
        handlers.push(Arc::new(WebhookHandler::new(
            &task.kind,
            target,
            allowed.clone(),
            config,
            metrics.clone(),
        )?));
    }
    Ok(handlers)
}

/// Delivers one task kind to one endpoint.
pub struct WebhookHandler {
    /// Leaked once per declared kind at start-up (bounded by the file): handlers name their kind
    /// as `&'static str`.
    kind: &'static str,
    url: url::Url,
    /// The endpoint's host: the metrics label (from the file, so bounded).
    host: String,
    secret_file: PathBuf,
    allowed: AllowList,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>,
    uri: http::Uri,
    timeout: Duration,
    max_deliver: i64,
    retry: WorkerConfig,
    order: DocumentOrder,
    slots: Semaphore,
    metrics: Arc<WebhookMetrics>,
    /// Cancelled when the worker stops: waits end, and their tasks go back to the queue.
    stopping: tokio_util::sync::CancellationToken,
}

impl WebhookHandler {
    pub fn new(
        kind: &str,
        target: &WebhookTarget,
        allowed: AllowList,
        config: &WorkerConfig,
        metrics: Arc<WebhookMetrics>,
    ) -> Result<Self, WebhookSetupError> {
        let (url, timeout) = target
            .check()
            .map_err(|problem| WebhookSetupError::File { path: kind.to_owned(), problem })?;
        let uri: http::Uri = url
            .as_str()
            .parse()
            .map_err(|_| WebhookSetupError::Uri { kind: kind.to_owned(), url: url.to_string() })?;
        // Names resolve through the guard; redirects are never followed (hyper does not).
        let mut http =
            HttpConnector::new_with_resolver(GuardedResolver { allowed: allowed.clone() });
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(Arc::new(rustls::crypto::ring::default_provider()))
            .map_err(|err| WebhookSetupError::Client(err.to_string()))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(https);
        let host = url.host_str().unwrap_or_default().to_owned();
        Ok(WebhookHandler {
            kind: Box::leak(kind.to_owned().into_boxed_str()),
            host,
            url,
            secret_file: PathBuf::from(&target.secret_file),
            allowed,
            client,
            uri,
            timeout,
            max_deliver: config.max_deliver.max(1),
            retry: config.clone(),
            order: DocumentOrder::default(),
            slots: Semaphore::new(config.webhook_concurrency.max(1)),
            metrics,
            stopping: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// Delivers `task`'s event, retrying as the module docs say.
    async fn deliver(&self, task: &Task) -> Result<(), TaskError> {
        let Some(event) = &task.event else {
            return Err(TaskError::Permanent(
                "the task carries no event (enqueued before tasks carried one)".into(),
            ));
        };
        let body = serde_json::to_vec(event)
            .map_err(|err| TaskError::Permanent(format!("event does not serialize: {err}")))?;
        let webhook_id = event.id.to_string();
        let handed_back = || TaskError::Transient("the worker is stopping".into());
        tokio::select! {
            () = self.order.wait_turn(&task.doc_id, task.id) => {}
            () = self.stopping.cancelled() => return Err(handed_back()),
        }
        let _slot = tokio::select! {
            slot = self.slots.acquire() => slot.expect("the semaphore is never closed"),
            () = self.stopping.cancelled() => return Err(handed_back()),
        };
        let mut attempt = delivery_attempt();
        loop {
            let started = Instant::now();
            let outcome = self.attempt(&webhook_id, &body).await;
            self.metrics.observe(&self.host, outcome.label(), started.elapsed());
            let retry_after = match outcome {
                Attempt::Delivered => return Ok(()),
                Attempt::Refused { reason } => {
                    return Err(TaskError::DeadLetter { reason, attempts: attempt });
                }
                Attempt::Retry { reason, after, .. } if attempt >= self.max_deliver => {
                    let _ = after;
                    return Err(TaskError::DeadLetter {
                        reason: format!("gave up after {attempt} attempts: {reason}"),
                        attempts: attempt,
                    });
                }
                Attempt::Retry { reason, after, .. } => {
                    let delay = self.retry.backoff(attempt).max(after.unwrap_or_default());
                    tracing::info!(kind = self.kind, host = %self.host, attempt, retry_in = ?delay, %reason, "webhook delivery failed; retrying");
                    delay
                }
            };
            tokio::select! {
                () = tokio::time::sleep(retry_after) => {}
                () = self.stopping.cancelled() => return Err(handed_back()),
            }
            attempt += 1;
        }
    }

    /// One signed POST.
    async fn attempt(&self, webhook_id: &str, body: &[u8]) -> Attempt {
        if let Some(ip) = literal_ip(&self.url)
            && !self.allowed.may_connect(ip)
        {
            return Attempt::Retry {
                reason: format!(
                    "{ip} is a private address (COURIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS)"
                ),
                after: None,
                label: "refused_address",
            };
        }
        let secrets = match read_secrets(&self.secret_file).await {
            Ok(secrets) => secrets,
            Err(reason) => return Attempt::Retry { reason, after: None, label: "no_secret" },
        };
        let timestamp =
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs().to_string();
        let signature = sign(&secrets, webhook_id, &timestamp, body);
        let request = http::Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "Courier-Webhooks/1")
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", &timestamp)
            .header("webhook-signature", signature)
            .body(Full::new(Bytes::copy_from_slice(body)));
        let request = match request {
            Ok(request) => request,
            Err(err) => {
                return Attempt::Refused { reason: format!("cannot build the request: {err}") };
            }
        };
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|text| text.trim().parse::<u64>().ok())
                .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER));
            let excerpt = if status.is_success() {
                String::new()
            } else {
                body_excerpt(response.into_body()).await
            };
            Ok::<_, hyper_util::client::legacy::Error>((status, retry_after, excerpt))
        };
        let (status, retry_after, excerpt) = match tokio::time::timeout(self.timeout, exchange)
            .await
        {
            Ok(Ok(answer)) => answer,
            Err(_) => {
                return Attempt::Retry {
                    reason: "timed out".into(),
                    after: None,
                    label: "timeout",
                };
            }
            Ok(Err(err)) => {
                let label =
                    if refused_by_resolver(&err) { "refused_address" } else { "connection_error" };
                return Attempt::Retry {
                    reason: format!("cannot reach the endpoint: {}", error_chain(&err)),
                    after: None,
                    label,
                };
            }
        };
        if status.is_success() {
            return Attempt::Delivered;
        }
        let reason = format!("webhook answered {status}: {excerpt}");
        if status.is_server_error() {
            Attempt::Retry { reason, after: None, label: "server_error" }
        } else if status == http::StatusCode::TOO_MANY_REQUESTS {
            Attempt::Retry { reason, after: retry_after, label: "throttled" }
        } else {
            Attempt::Refused { reason }
        }
    }
}

impl TaskHandler for WebhookHandler {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn admit(&self, task: &Task) -> Option<Admission> {
        Some(self.order.admit(&task.doc_id, task.id))
    }

    fn handle<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<(), TaskError>> {
        Box::pin(self.deliver(task))
    }

    fn stopping(&self) {
        self.stopping.cancel();
    }
}

/// What one request came to.
enum Attempt {
    Delivered,
    /// Worth trying again (after at least `after`, from `Retry-After`).
    Retry {
        reason: String,
        after: Option<Duration>,
        label: &'static str,
    },
    /// Dead-letter at once.
    Refused {
        reason: String,
    },
}

impl Attempt {
    fn label(&self) -> &'static str {
        match self {
            Attempt::Delivered => "delivered",
            Attempt::Retry { label, .. } => label,
            Attempt::Refused { .. } => "refused",
        }
    }
}

/// The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` per
/// secret, space-separated (two during a rotation).
pub fn sign(secrets: &[Vec<u8>], webhook_id: &str, timestamp: &str, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|key| {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
            mac.update(webhook_id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The secrets in a secret file: whitespace-separated `whsec_<base64>` (the prefix optional).
/// Errors name the file, never its content.
pub fn parse_secrets(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let secrets: Vec<Vec<u8>> = text
        .split_whitespace()
        .map(|token| STANDARD.decode(token.strip_prefix("whsec_").unwrap_or(token)))
        .collect::<Result<_, _>>()
        .map_err(|_| "is not whsec_<base64> secrets".to_owned())?;
    match secrets.len() {
        0 => Err("holds no secret".into()),
        1..=4 => Ok(secrets),
        _ => Err("holds more than 4 secrets".into()),
    }
}

async fn read_secrets(path: &std::path::Path) -> Result<Vec<Vec<u8>>, String> {
    use tokio::io::AsyncReadExt;
    let problem = |what: String| format!("secret_file {}: {what}", path.display());
    let file = tokio::fs::File::open(path).await.map_err(|err| problem(err.kind().to_string()))?;
    let mut text = String::new();
    file.take(MAX_SECRET_FILE_BYTES)
        .read_to_string(&mut text)
        .await
        .map_err(|_| problem("is not text".into()))?;
    parse_secrets(&text).map_err(problem)
}

/// At most [`BODY_EXCERPT_BYTES`] of the body, as one line of text (the rest is not read).
async fn body_excerpt(mut body: hyper::body::Incoming) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < BODY_EXCERPT_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    bytes.truncate(BODY_EXCERPT_BYTES);
    String::from_utf8_lossy(&bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Whether [`GuardedResolver`] refused every address the name resolved to.
fn refused_by_resolver(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn literal_ip(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// Resolves names with the system resolver and keeps only the addresses the allow-list lets a
/// delivery connect to: the check is on what the name resolved to, at connect time.
#[derive(Clone)]
struct GuardedResolver {
    allowed: AllowList,
}

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let allowed = self.allowed.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> =
                resolved.iter().copied().filter(|addr| allowed.may_connect(addr.ip())).collect();
            if permitted.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "{host} resolves only to private addresses ({}); COURIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS permits them",
                        resolved.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            Ok(permitted.into_iter())
        })
    }
}

/// Per document, the tasks in the order the worker took them: each delivery waits until every
/// earlier one of its document was acknowledged or dead-lettered.
#[derive(Default)]
struct DocumentOrder {
    lines: Arc<Mutex<HashMap<String, VecDeque<Uuid>>>>,
    changed: Arc<Notify>,
}

impl DocumentOrder {
    /// Puts `task` at the end of `doc`'s line; it leaves the line when the admission is dropped.
    fn admit(&self, doc: &str, task: Uuid) -> Admission {
        self.lines.lock().expect("not poisoned").entry(doc.to_owned()).or_default().push_back(task);
        Box::new(Place {
            lines: self.lines.clone(),
            changed: self.changed.clone(),
            doc: doc.to_owned(),
            task,
        })
    }

    /// Returns once `task` is first in `doc`'s line (at once if it was never admitted).
    async fn wait_turn(&self, doc: &str, task: Uuid) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let first = {
                let lines = self.lines.lock().expect("not poisoned");
                lines
                    .get(doc)
                    .is_none_or(|line| !line.contains(&task) || line.front() == Some(&task))
            };
            if first {
                return;
            }
            notified.await;
        }
    }
}

/// A task's place in its document's line.
struct Place {
    lines: Arc<Mutex<HashMap<String, VecDeque<Uuid>>>>,
    changed: Arc<Notify>,
    doc: String,
    task: Uuid,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut lines = self.lines.lock().expect("not poisoned");
        if let Some(line) = lines.get_mut(&self.doc) {
            line.retain(|id| *id != self.task);
            if line.is_empty() {
                lines.remove(&self.doc);
            }
        }
        drop(lines);
        self.changed.notify_waiters();
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    host: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabel {
    host: String,
}

/// `courier_webhook_deliveries_total{host, outcome}` (one per request) and
/// `courier_webhook_delivery_seconds{host}`; hosts come from the collections file.
#[derive(Debug)]
pub struct WebhookMetrics {
    deliveries: Family<OutcomeLabel, Counter>,
    latency: Family<HostLabel, Histogram>,
}

impl WebhookMetrics {
    pub fn new() -> Arc<Self> {
        Arc::new(WebhookMetrics {
            deliveries: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new([
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ])
            }),
        })
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "courier_webhook_deliveries",
            "Webhook requests by endpoint host and outcome (delivered, refused, server_error, throttled, timeout, connection_error, refused_address, no_secret)",
            self.deliveries.clone(),
        );
        registry.register(
            "courier_webhook_delivery_seconds",
            "Webhook request latency by endpoint host",
            self.latency.clone(),
        );
    }

    fn observe(&self, host: &str, outcome: &'static str, took: Duration) {
        self.deliveries.get_or_create(&OutcomeLabel { host: host.to_owned(), outcome }).inc();
        self.latency
            .get_or_create(&HostLabel { host: host.to_owned() })
            .observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secrets = parse_secrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let signature = sign(&secrets, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn two_secrets_give_two_signatures_and_bad_files_are_refused_without_their_content() {
        let secrets = parse_secrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\nc2Vjb25k\n").unwrap();
        assert_eq!(secrets.len(), 2);
        let signature = sign(&secrets, "id", "1", b"{}");
        assert_eq!(signature.split(' ').count(), 2);
        assert!(signature.split(' ').all(|s| s.starts_with("v1,")));
        let err = parse_secrets("whsec_!!not-base64-secret!!").unwrap_err();
        assert!(!err.contains("not-base64-secret"), "{err}");
        assert!(parse_secrets("  \n").is_err());
    }

    #[tokio::test]
    async fn a_document_s_tasks_take_turns_in_admission_order() {
        let order = Arc::new(DocumentOrder::default());
        let (first, second, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let place_first = order.admit("doc", first);
        let _place_second = order.admit("doc", second);
        let _place_other = order.admit("other", other);
        let waiting = tokio::spawn({
            let order = order.clone();
            async move { order.wait_turn("doc", second).await }
        });
        order.wait_turn("other", other).await;
        order.wait_turn("doc", first).await;
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the second waits for the first");
        drop(place_first);
        tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
    }
}
