//! The real dependencies: `nats-server` with JetStream and SecantusDB, each on a free port with
//! its own temp dir, and able to stop, `kill -9` and restart on the same port and data.

use std::{path::PathBuf, time::Duration};

use tempfile::TempDir;
use tokio::process::Child;

use crate::process::{find_tool, kill9, spawn, wait_for_port};

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A `nats-server -js` process.
pub struct NatsServer {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl NatsServer {
    pub async fn start() -> Self {
        let mut server = NatsServer { port: crate::free_port(), dir: tempfile::tempdir().expect("temp dir"), child: None };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    /// (Re)starts on the same port with the same JetStream store.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let store = self.dir.path().join("jetstream");
        let args = [
            "-a".into(), "127.0.0.1".into(),
            "-p".into(), self.port.to_string(),
            "-js".into(),
            "-sd".into(), store.display().to_string(),
        ];
        let bin = find_tool("nats-server", "COURIER_NATS_SERVER_BIN");
        self.child = Some(spawn(&bin, &args, &[], &self.log_path()));
        wait_for_port(self.port, "nats-server", START_TIMEOUT).await;
    }

    /// `kill -9`: no chance to flush or say goodbye.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill9(&mut child).await;
        }
    }
}

/// A SecantusDB (MongoDB wire protocol) process with on-disk storage.
pub struct StoreServer {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl StoreServer {
    pub async fn start() -> Self {
        let mut server = StoreServer { port: crate::free_port(), dir: tempfile::tempdir().expect("temp dir"), child: None };
        server.restart().await;
        server
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("store.log")
    }

    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the store is already running");
        let data = self.dir.path().join("data");
        let args = [
            "--host".into(), "127.0.0.1".into(),
            "--port".into(), self.port.to_string(),
            "--storage-path".into(), data.display().to_string(),
            "--log-level".into(), "WARNING".into(),
        ];
        let bin = find_tool("secantusd-py", "COURIER_SECANTUSD_BIN");
        self.child = Some(spawn(&bin, &args, &[], &self.log_path()));
        wait_for_port(self.port, "secantusd-py", START_TIMEOUT).await;
    }

    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill9(&mut child).await;
        }
    }
}
