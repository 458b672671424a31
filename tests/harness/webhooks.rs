//! Webhook tests' pieces: a receiver process (`webhook_receiver.py`, which verifies every request
//! with the PyPI `standardwebhooks` library) that can be stopped, restarted on its port and told
//! what to answer, and a collections file declaring a webhook task that points at it.

use std::{path::PathBuf, time::Duration};

use serde_json::Value;
use tokio::process::Child;

use crate::process::{find_tool, kill9, spawn, spawn_listening};

/// A secret in the Standard Webhooks format (tests only).
pub const TEST_WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The receiver process.
pub struct WebhookReceiver {
    dir: tempfile::TempDir,
    secrets: Vec<String>,
    child: Option<Child>,
    pub port: u16,
    http: reqwest::Client,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// `standardwebhooks` accepted its signature.
    pub verified: bool,
    /// `webhook-id`.
    pub id: String,
    /// What the receiver answered.
    pub status: u16,
    /// The verified body (the event envelope); `Null` when not verified.
    pub event: Value,
}

impl WebhookReceiver {
    /// Starts a receiver accepting signatures made with any of `secrets`.
    pub async fn start(secrets: &[&str]) -> Self {
        let mut receiver = WebhookReceiver {
            dir: tempfile::tempdir().expect("temp dir"),
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            child: None,
            port: 0,
            http: reqwest::Client::new(),
        };
        receiver.restart().await;
        receiver
    }

    /// The URL webhooks are POSTed to.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// A file holding `secrets` (whitespace-separated), as a webhook's `secret_file`.
    pub fn secret_file(&self, secrets: &[&str]) -> PathBuf {
        let path = self.dir.path().join(format!("secret-{}", uuid::Uuid::now_v7().simple()));
        std::fs::write(&path, secrets.join("\n")).expect("write the secret file");
        path
    }

    /// (Re)starts it, on its port once it has one.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the receiver is already running");
        let python = find_tool("python", "COURIER_PYTHON_BIN");
        let script = crate::workspace_root().join("tests/harness/webhook_receiver.py");
        let mut args = vec![
            script.display().to_string(),
            self.port.to_string(),
            self.record().display().to_string(),
        ];
        args.extend(self.secrets.iter().cloned());
        let log = self.dir.path().join("receiver.log");
        let (child, port) = spawn_listening(
            "webhook receiver",
            &log,
            "webhook receiver listening",
            Duration::from_secs(20),
            || spawn(&python, &args, &[], &log),
        )
        .await;
        self.port = port;
        self.child = Some(child);
    }

    /// `kill -9`: the endpoint is down (connections are refused) until [`Self::restart`].
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill9(&mut child).await;
        }
    }

    /// The next answers (`statuses`, then 200), each after `delay`; a 429 carries
    /// `Retry-After: <retry_after>` when given.
    pub async fn script(&self, statuses: &[u16], delay: Duration, retry_after: Option<u64>) {
        let script = serde_json::json!({
            "statuses": statuses,
            "delay_ms": delay.as_millis() as u64,
            "retry_after": retry_after,
        });
        let response = self
            .http
            .put(format!("http://127.0.0.1:{}/control", self.port))
            .json(&script)
            .send()
            .await
            .expect("the receiver answers its control endpoint");
        assert!(response.status().is_success(), "{}", response.status());
    }

    fn record(&self) -> PathBuf {
        self.dir.path().join("received.jsonl")
    }

    fn lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.record()).unwrap_or_default();
        text.lines()
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_str(line).expect("one JSON object a line"))
            .collect()
    }

    /// The `webhook-id`s of the requests that have arrived (answered or not), in arrival order.
    pub fn arrived(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|json| json["phase"] == "arrived")
            .map(|json| json["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Every answered request so far, in the order of the answers.
    pub fn received(&self) -> Vec<Received> {
        self.lines()
            .into_iter()
            .filter(|json| json["phase"] == "answered")
            .map(|json| Received {
                verified: json["verified"].as_bool().unwrap_or(false),
                id: json["id"].as_str().unwrap_or_default().to_owned(),
                status: json["status"].as_u64().unwrap_or(0) as u16,
                event: json["event"].clone(),
            })
            .collect()
    }
}

/// A collections file with one collection `orders` (anyone may write) whose task `orders.notify`
/// POSTs every create, update and delete to `url`, signed with the secret in `secret_file`.
pub fn orders_with_webhook(url: &str, secret_file: &std::path::Path) -> tempfile::TempPath {
    let text = format!(
        r#"collections:
  - name: orders
    access: {{read: public, write: public}}
    schema:
      type: object
      properties:
        n: {{type: integer}}
        note: {{type: string}}
    tasks:
      - kind: orders.notify
        on: [create, update, delete]
        webhook:
          url: "{url}"
          secret_file: "{}"
          timeout: 2s
"#,
        secret_file.display()
    );
    let path =
        tempfile::Builder::new().suffix(".yaml").tempfile().expect("temp file").into_temp_path();
    std::fs::write(&path, text).expect("write the collections file");
    path
}
