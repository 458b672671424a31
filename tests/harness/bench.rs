//! For `courier bench` runs against a test deployment: a nats-server that also serves its own
//! WebSocket listener (`--target nats`), started like the harness's other servers.

use crate::servers::NatsServer;

/// A nats-server (JetStream as usual) with a plain WebSocket listener on its own port.
pub struct NatsWithWebSocket {
    pub nats: NatsServer,
    pub ws_port: u16,
    _config: tempfile::NamedTempFile,
}

impl NatsWithWebSocket {
    /// Its WebSocket listener binds a free port (`-1`), read back from the server's log.
    pub async fn start() -> Self {
        use std::io::Write as _;
        let mut config = tempfile::NamedTempFile::new().expect("temp config file");
        writeln!(config, "websocket {{ host: \"127.0.0.1\", port: -1, no_tls: true }}")
            .expect("write nats config");
        let path = config.path().display().to_string();
        let nats = NatsServer::start_with_args(&["-c", &path]).await;
        let log = nats.log_path();
        let ws_port = crate::wait_for(
            "nats-server to log its websocket port",
            std::time::Duration::from_secs(30),
            || async {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                crate::process::listening_port(&text, "websocket clients")
                    .ok_or_else(|| text.clone())
            },
        )
        .await;
        NatsWithWebSocket { nats, ws_port, _config: config }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.ws_port)
    }
}
