//! The real dependencies: `nats-server` with JetStream and SecantusDB, each on a port the OS
//! picks (the server binds port 0 and logs the port it got) with its own temp dir, and able to
//! stop, `kill -9` and restart on the same port and data.

use std::{marker::PhantomData, path::PathBuf, time::Duration};

use tempfile::TempDir;
use tokio::process::Child;

use crate::process::{find_tool, kill9, spawn, spawn_listening};

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What differs between the external servers: the executable and its arguments.
pub trait ServerKind {
    const NAME: &'static str;
    const TOOL: &'static str;
    /// Environment variable that overrides where the executable is.
    const TOOL_ENV: &'static str;
    /// Text of the log line that names the address the server listens on.
    const LISTENING: &'static str;
    /// Arguments to listen on `port` (0: any free port) and keep data in `data_dir`.
    fn args(port: u16, data_dir: &std::path::Path) -> Vec<String>;
}

pub struct Nats;
pub struct Store;

impl ServerKind for Nats {
    const NAME: &'static str = "nats";
    const TOOL: &'static str = "nats-server";
    const TOOL_ENV: &'static str = "COURIER_NATS_SERVER_BIN";
    const LISTENING: &'static str = "Listening for client connections on";
    fn args(port: u16, data_dir: &std::path::Path) -> Vec<String> {
        // nats-server's "any free port" is -1 (0 means its default, 4222).
        let port = if port == 0 { "-1".to_owned() } else { port.to_string() };
        let dir = data_dir.display().to_string();
        ["-a", "127.0.0.1", "-p", &port, "-js", "-sd", &dir].map(str::to_owned).to_vec()
    }
}

impl ServerKind for Store {
    const NAME: &'static str = "store";
    const TOOL: &'static str = "secantusd-py";
    const TOOL_ENV: &'static str = "COURIER_SECANTUSD_BIN";
    const LISTENING: &'static str = "secantus listening on";
    fn args(port: u16, data_dir: &std::path::Path) -> Vec<String> {
        let port = port.to_string();
        let dir = data_dir.display().to_string();
        // INFO: the level of its one "listening on" line (it logs little else at INFO).
        ["--host", "127.0.0.1", "--port", &port, "--storage-path", &dir, "--log-level", "INFO"]
            .map(str::to_owned)
            .to_vec()
    }
}

/// A server process with a data dir that survives restarts, on the port it got at its first
/// start.
pub struct Server<K: ServerKind> {
    /// The port it listens on (0 only before the first start).
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// Arguments added to the kind's own (kept across restarts).
    extra_args: Vec<String>,
    kind: PhantomData<K>,
}

/// `nats-server -js`.
pub type NatsServer = Server<Nats>;
/// SecantusDB, the MongoDB-wire store, with on-disk storage.
pub type StoreServer = Server<Store>;

impl<K: ServerKind> Server<K> {
    pub async fn start() -> Self {
        Self::start_with_args(&[]).await
    }

    /// Starts with `extra_args` after the usual ones (they apply to every restart too).
    pub async fn start_with_args(extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let extra_args = extra_args.iter().map(|a| (*a).to_owned()).collect();
        let mut server = Server { port: 0, dir, child: None, extra_args, kind: PhantomData };
        server.restart().await;
        server
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("{}.log", K::NAME))
    }

    /// (Re)starts with the same data, on the same port once it has one.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is already running", K::NAME);
        let mut args = K::args(self.port, &self.dir.path().join("data"));
        args.extend(self.extra_args.iter().cloned());
        let bin = find_tool(K::TOOL, K::TOOL_ENV);
        let log = self.log_path();
        let (child, port) = spawn_listening(K::TOOL, &log, K::LISTENING, START_TIMEOUT, || {
            spawn(&bin, &args, &[], &log)
        })
        .await;
        assert!(
            self.port == 0 || self.port == port,
            "{} moved from port {} to {port}",
            K::NAME,
            self.port
        );
        self.port = port;
        self.child = Some(child);
    }

    /// `kill -9`: no chance to flush or say goodbye.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill9(&mut child).await;
        }
    }
}

impl NatsServer {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// Returns once nats-server has processed everything `client` sent before this call (its
/// subscriptions included): [`courier_core::jetstream::server_round_trip`], bounded in time.
pub async fn server_processed(client: &async_nats::Client) {
    let asked = courier_core::jetstream::server_round_trip(client);
    tokio::time::timeout(std::time::Duration::from_secs(10), asked)
        .await
        .expect("nats-server answers in time")
        .expect("nats-server answers a JetStream query");
}

impl StoreServer {
    /// A store that makes every commit durable before acknowledging it (`--sync-on-commit`).
    /// By default SecantusDB, like mongod with `j: false`, may lose the last acknowledged
    /// commits when its process is killed; tests that kill the store and then count what was
    /// written need this (production MongoDB gets it from journaled, majority writes).
    pub async fn start_durable() -> Self {
        Self::start_with_args(&["--sync-on-commit"]).await
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }
}
