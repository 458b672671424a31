//! Courier's services under test: in-process (fast, the default) or as their built binaries
//! (`ServiceProcess`, for kill -9 and SIGTERM tests), plus `Stack`, a whole local deployment.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use courier_api::ApiConfig;
use courier_broadcaster::BroadcasterConfig;
use courier_worker::{WorkerConfig, handlers::Handlers};
use serde_json::Value;
use tokio::{process::Child, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{NatsServer, StoreServer, WsClient, process};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Polls `url` until it answers 200.
pub async fn wait_ready(url: &str) {
    let client = reqwest::Client::new();
    crate::wait_for(&format!("{url} to answer 200"), READY_TIMEOUT, || async {
        match client.get(url).timeout(Duration::from_secs(2)).send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("status {}", response.status())),
            Err(err) => Err(err.to_string()),
        }
    })
    .await;
}

/// A service task running in this process, stopped through its shutdown token.
struct InProcess {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    /// Spawns a service's `run(shutdown)` and waits until `ready_url` answers 200.
    async fn spawn<F>(run: impl FnOnce(CancellationToken) -> F, ready_url: String) -> Self
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(shutdown.clone()));
        wait_ready(&ready_url).await;
        InProcess { shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(15), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => panic!("service failed: {err:#}"),
            Ok(Err(err)) => panic!("service task panicked: {err}"),
            Err(_) => panic!("service did not stop within 15 s"),
        }
    }
}

pub struct RunningApi {
    pub addr: SocketAddr,
    inner: InProcess,
}

impl RunningApi {
    pub async fn start(config: ApiConfig) -> Self {
        let app = courier_api::Application::build(config).await.expect("api builds");
        let addr = app.local_addr();
        let inner =
            InProcess::spawn(|shutdown| app.run(shutdown), format!("http://{addr}/readyz")).await;
        RunningApi { addr, inner }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(self) {
        self.inner.stop().await;
    }
}

pub struct RunningBroadcaster {
    pub addr: SocketAddr,
    inner: InProcess,
}

impl RunningBroadcaster {
    pub async fn start(config: BroadcasterConfig) -> Self {
        let app =
            courier_broadcaster::Application::build(config).await.expect("broadcaster builds");
        let addr = app.local_addr();
        let inner =
            InProcess::spawn(|shutdown| app.run(shutdown), format!("http://{addr}/readyz")).await;
        RunningBroadcaster { addr, inner }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn stop(self) {
        self.inner.stop().await;
    }
}

pub struct RunningWorker {
    pub metrics_addr: SocketAddr,
    inner: InProcess,
}

impl RunningWorker {
    pub async fn start(config: WorkerConfig, handlers: Handlers) -> Self {
        let app =
            courier_worker::Application::build(config, handlers).await.expect("worker builds");
        let metrics_addr = app.metrics_addr();
        let inner =
            InProcess::spawn(|shutdown| app.run(shutdown), format!("http://{metrics_addr}/readyz"))
                .await;
        RunningWorker { metrics_addr, inner }
    }

    pub async fn stop(self) {
        self.inner.stop().await;
    }
}

/// Where a Courier binary listens: the setting naming its address, and the text of the log line
/// that names the address it bound.
fn listening(binary: &str) -> (&'static str, &'static str) {
    match binary {
        "courier-api" => ("COURIER_API_LISTEN", "api listening"),
        "courier-broadcaster" => ("COURIER_BROADCASTER_LISTEN", "broadcaster listening"),
        "courier-worker" => ("COURIER_WORKER_METRICS_LISTEN", "worker starting"),
        other => panic!("the harness does not know where {other} listens"),
    }
}

/// A Courier binary running as a child process, with its log in a temp dir.
pub struct ServiceProcess {
    /// The port it listens on (`/readyz`, `/metrics`, the api or `/ws`).
    pub port: u16,
    pub child: Child,
    pub log: PathBuf,
    binary: String,
    envs: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl ServiceProcess {
    /// Starts `binary` with `envs` on a port the OS picks (its listen setting is `127.0.0.1:0`;
    /// the port it got is read from its log), then waits for `/readyz`. Restarts reuse the port.
    pub async fn start(binary: &str, envs: &[(&str, String)]) -> Self {
        let (listen, _) = listening(binary);
        let mut envs: Vec<(String, String)> = envs
            .iter()
            .filter(|(k, _)| *k != listen)
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        envs.push((listen.to_owned(), "127.0.0.1:0".to_owned()));
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join(format!("{binary}.log"));
        let (child, port) = Self::launch(binary, &envs, &log).await;
        // Restarts bind the same address.
        envs.last_mut().expect("the listen setting").1 = format!("127.0.0.1:{port}");
        let mut process =
            ServiceProcess { port, child, log, binary: binary.to_owned(), envs, _dir: dir };
        process.wait_ready().await;
        process
    }

    async fn launch(binary: &str, envs: &[(String, String)], log: &Path) -> (Child, u16) {
        let program = process::courier_binary(binary);
        process::spawn_listening(binary, log, listening(binary).1, READY_TIMEOUT, || {
            process::spawn(&program, &[], envs, log)
        })
        .await
    }

    /// Waits until `/readyz` answers 200; panics with the log if the process exits first.
    async fn wait_ready(&mut self) {
        let url = self.http_url("/readyz");
        let exited = tokio::select! {
            () = wait_ready(&url) => None,
            status = self.child.wait() => Some(status),
        };
        if let Some(status) = exited {
            panic!(
                "{} exited ({status:?}) before it was ready; its log:\n{}",
                self.binary,
                self.log_text()
            );
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `ws://127.0.0.1:<port>/ws` (for a broadcaster).
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// `kill -9`: no shutdown code runs.
    pub async fn kill9(&mut self) {
        process::kill9(&mut self.child).await;
    }

    /// SIGTERM, then wait up to `timeout` for the exit (SIGKILL after that; `None`).
    pub async fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        process::terminate(&mut self.child, timeout).await
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait()).await.ok().and_then(Result::ok)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Starts the same binary again, same port and environment (after it exited or was
    /// killed), and waits until it is ready; the log keeps growing in the same file.
    pub async fn restart(&mut self) {
        assert!(!self.is_running(), "{} is still running", self.binary);
        let (child, port) = Self::launch(&self.binary, &self.envs, &self.log).await;
        assert_eq!(port, self.port, "{} restarted on another port", self.binary);
        self.child = child;
        self.wait_ready().await;
    }
}

/// Logs `username` in at the api at `api_url`: an access token.
pub async fn login(
    http: &reqwest::Client,
    api_url: &str,
    username: &str,
    password: &str,
) -> String {
    let credentials = serde_json::json!({"username": username, "password": password});
    let response = http
        .post(format!("{api_url}/api/v1/auth/login"))
        .json(&credentials)
        .send()
        .await
        .expect("login");
    assert!(response.status().is_success(), "login as {username}: {}", response.status());
    let login: Value = response.json().await.expect("login JSON");
    login["access_token"].as_str().expect("an access token").to_owned()
}

/// Registers `username` (password `correct horse battery`) at the api at `api_url` (already
/// registered is fine) and logs in: an access token.
pub async fn access_token(http: &reqwest::Client, api_url: &str, username: &str) -> String {
    let credentials =
        serde_json::json!({"username": username, "password": "correct horse battery"});
    let url = |path: &str| format!("{api_url}/api/v1/auth/{path}");
    let registered = http.post(url("register")).json(&credentials).send().await.expect("register");
    assert!(
        registered.status().is_success() || registered.status() == reqwest::StatusCode::CONFLICT,
        "register: {}",
        registered.status()
    );
    let login: Value = http
        .post(url("login"))
        .json(&credentials)
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login JSON");
    login["access_token"].as_str().expect("an access token").to_owned()
}

/// A whole local deployment: nats-server, the store, one api and one broadcaster.
pub struct Stack {
    pub nats: NatsServer,
    pub store: StoreServer,
    pub api: RunningApi,
    pub broadcaster: RunningBroadcaster,
    pub database: String,
    pub http: reqwest::Client,
}

impl Stack {
    pub async fn start() -> Self {
        crate::init_test_logging();
        let (nats, store) = tokio::join!(NatsServer::start(), StoreServer::start());
        let database = format!("courier_{}", uuid::Uuid::now_v7().simple());
        let api = RunningApi::start(Self::api_config(&store, &database, &nats)).await;
        let broadcaster = RunningBroadcaster::start(Self::broadcaster_config(&nats)).await;
        Stack { nats, store, api, broadcaster, database, http: reqwest::Client::new() }
    }

    /// The api config this stack's api uses (for starting more replicas).
    pub fn api_config(store: &StoreServer, database: &str, nats: &NatsServer) -> ApiConfig {
        let mut config = ApiConfig::for_local(&store.uri(), database, &nats.url());
        // Quick relay rounds keep fault tests short.
        config.relay_interval = Duration::from_millis(100);
        config.relay_grace = Duration::from_millis(500);
        config.mongodb_timeout = Duration::from_secs(2);
        config.jwt.secret = Some(courier_core::auth::Secret(crate::TEST_JWT_SECRET.to_owned()));
        // The first admin, as a deployment configures it (`Stack::admin_token` logs in as it).
        config.bootstrap_admin = Some(crate::TEST_ADMIN_USERNAME.to_owned());
        config.bootstrap_admin_password =
            Some(courier_core::auth::Secret(crate::TEST_ADMIN_PASSWORD.to_owned()));
        // Every test user registers from 127.0.0.1: the per-address limit is the tests' own.
        config.register_max_per_address = 100_000;
        // Tests write fast from few accounts: the write limits are tests of their own
        // (tests/e2e/write_limits.rs).
        config.write_rate =
            courier_core::rate::Rate { count: 1_000_000, per: Duration::from_secs(1) };
        config.chat_write_rate = config.write_rate;
        config.write_bytes_per_hour = 0;
        config
    }

    /// The broadcaster config of this stack: the shipped collections' read rules, the shared key.
    pub fn broadcaster_config(nats: &NatsServer) -> BroadcasterConfig {
        let mut config = BroadcasterConfig::for_local(&nats.url());
        config.collections_file = Some(crate::workspace_root().join("collections.yaml"));
        config.public_channels = false;
        config.jwt.secret = Some(courier_core::auth::Secret(crate::TEST_JWT_SECRET.to_owned()));
        config
    }

    /// Registers `username` (password `correct horse battery`) and logs in: an access token.
    pub async fn token(&self, username: &str) -> String {
        access_token(&self.http, &self.api.url(), username).await
    }

    /// The user id of the holder of `token` (`GET /api/v1/auth/me`).
    pub async fn user_id(&self, token: &str) -> String {
        let me: Value = self
            .http
            .get(format!("{}/api/v1/auth/me", self.api.url()))
            .bearer_auth(token)
            .send()
            .await
            .expect("me")
            .json()
            .await
            .expect("me JSON");
        me["id"].as_str().expect("me has an id").to_owned()
    }

    /// An access token of the bootstrap admin (role `admin`).
    pub async fn admin_token(&self) -> String {
        login(&self.http, &self.api.url(), crate::TEST_ADMIN_USERNAME, crate::TEST_ADMIN_PASSWORD)
            .await
    }

    /// A connected WebSocket client on this stack's broadcaster.
    pub async fn ws(&self) -> WsClient {
        WsClient::connect(&self.broadcaster.ws_url()).await.expect("websocket connects")
    }

    /// POSTs JSON to `/api/v1/<collection>`; returns the status and JSON body.
    pub async fn post(&self, collection: &str, body: &Value) -> (reqwest::StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/api/v1/{collection}", self.api.url()))
            .json(body)
            .send()
            .await
            .expect("POST reaches the api");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GETs `path` (relative to the api); returns the status and JSON body.
    pub async fn get(&self, path: &str) -> (reqwest::StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.api.url()))
            .send()
            .await
            .expect("GET reaches the api");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// A product body like the seed project's.
pub fn product(n: usize) -> Value {
    serde_json::json!({"nombre": format!("Camiseta {n}"), "precio": 10.0 + n as f64, "talla": "M"})
}
