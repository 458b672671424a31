//! The real dependencies: `nats-server` with JetStream and SecantusDB, each on a free port with
//! its own temp dir, and able to stop, `kill -9` and restart on the same port and data.

use std::{marker::PhantomData, path::PathBuf, time::Duration};

use tempfile::TempDir;
use tokio::process::Child;

use crate::process::{find_tool, kill9, spawn, wait_for_port};

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What differs between the external servers: the executable and its arguments.
pub trait ServerKind {
    const NAME: &'static str;
    const TOOL: &'static str;
    /// Environment variable that overrides where the executable is.
    const TOOL_ENV: &'static str;
    fn args(port: u16, data_dir: &std::path::Path) -> Vec<String>;
}

pub struct Nats;
pub struct Store;

impl ServerKind for Nats {
    const NAME: &'static str = "nats";
    const TOOL: &'static str = "nats-server";
    const TOOL_ENV: &'static str = "COURIER_NATS_SERVER_BIN";
    fn args(port: u16, data_dir: &std::path::Path) -> Vec<String> {
        let port = port.to_string();
        let dir = data_dir.display().to_string();
        ["-a", "127.0.0.1", "-p", &port, "-js", "-sd", &dir].map(str::to_owned).to_vec()
    }
}

impl ServerKind for Store {
    const NAME: &'static str = "store";
    const TOOL: &'static str = "secantusd-py";
    const TOOL_ENV: &'static str = "COURIER_SECANTUSD_BIN";
    fn args(port: u16, data_dir: &std::path::Path) -> Vec<String> {
        let port = port.to_string();
        let dir = data_dir.display().to_string();
        ["--host", "127.0.0.1", "--port", &port, "--storage-path", &dir, "--log-level", "WARNING"]
            .map(str::to_owned)
            .to_vec()
    }
}

/// A server process on a fixed port with a data dir that survives restarts.
pub struct Server<K: ServerKind> {
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
        let mut server =
            Server { port: crate::free_port(), dir, child: None, extra_args, kind: PhantomData };
        server.restart().await;
        server
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("{}.log", K::NAME))
    }

    /// (Re)starts on the same port with the same data.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is already running", K::NAME);
        let mut args = K::args(self.port, &self.dir.path().join("data"));
        args.extend(self.extra_args.iter().cloned());
        let bin = find_tool(K::TOOL, K::TOOL_ENV);
        self.child = Some(spawn(&bin, &args, &[], &self.log_path()));
        wait_for_port(self.port, K::TOOL, START_TIMEOUT).await;
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
