//! A real Prometheus (Debian's `prometheus`, found like the other tools) scraping Courier
//! processes every second, with the labels Kubernetes scraping would add (`namespace`, `pod`),
//! and a small client for its HTTP query API.

use std::{path::PathBuf, time::Duration};

use serde_json::Value;
use tempfile::TempDir;
use tokio::process::Child;

use crate::process::{find_tool, kill9, spawn, spawn_listening};

/// One `/metrics` endpoint to scrape and the pod it stands for.
pub struct ScrapeTarget {
    pub address: String,
    pub namespace: String,
    pub pod: String,
}

pub struct PrometheusServer {
    pub port: u16,
    dir: TempDir,
    child: Child,
    http: reqwest::Client,
}

impl PrometheusServer {
    /// Starts Prometheus scraping `targets` every second and evaluating `rule_files` every second.
    pub async fn start(targets: &[ScrapeTarget], rule_files: &[PathBuf]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let static_configs: Vec<Value> = targets
            .iter()
            .map(|t| serde_json::json!({"targets": [t.address], "labels": {"namespace": t.namespace, "pod": t.pod}}))
            .collect();
        // JSON is YAML: no YAML writer needed.
        let config = serde_json::json!({
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "rule_files": rule_files,
            "scrape_configs": [{"job_name": "courier", "static_configs": static_configs}],
        });
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).expect("config"))
            .expect("write prometheus.yml");
        let args = [
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            // Any free port; it logs the one it got (at info).
            "--web.listen-address=127.0.0.1:0".to_owned(),
            "--log.level=info".to_owned(),
        ];
        let log = dir.path().join("prometheus.log");
        let bin = find_tool("prometheus", "COURIER_PROMETHEUS_BIN");
        let (child, port) = spawn_listening(
            "prometheus",
            &log,
            "msg=\"Listening on\"",
            Duration::from_secs(30),
            || spawn(&bin, &args, &[], &log),
        )
        .await;
        let server = PrometheusServer { port, dir, child, http: reqwest::Client::new() };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let url = format!("{}/-/ready", self.url());
        let ready = crate::poll_until(Duration::from_secs(30), || async {
            self.http.get(&url).send().await.is_ok_and(|response| response.status().is_success())
        })
        .await;
        assert!(ready, "prometheus did not become ready; log:\n{}", self.log_text());
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>`: the `data` of a successful answer, or the error Prometheus gave.
    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let url = reqwest::Url::parse_with_params(&format!("{}/api/v1/{path}", self.url()), params)
            .map_err(|err| err.to_string())?;
        let response =
            self.http.get(url).send().await.map_err(|err| format!("request failed: {err}"))?;
        let body: Value =
            response.json().await.map_err(|err| format!("unreadable answer: {err}"))?;
        match body["status"].as_str() {
            Some("success") => Ok(body["data"].clone()),
            _ => Err(format!(
                "{}: {}",
                body["errorType"].as_str().unwrap_or("error"),
                body["error"].as_str().unwrap_or("?")
            )),
        }
    }

    /// An instant query: the result vector's samples.
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api("query", &[("query", expr)]).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Samples of an instant query as numbers (NaN and ±Inf included as such).
    pub async fn values(&self, expr: &str) -> Result<Vec<f64>, String> {
        Ok(self
            .query(expr)
            .await?
            .iter()
            .filter_map(|sample| sample["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()))
            .collect())
    }

    pub async fn kill(&mut self) {
        kill9(&mut self.child).await;
    }
}
