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
    pub async fn start() -> Self {
        use std::io::Write as _;
        let ws_port = crate::free_port();
        let mut config = tempfile::NamedTempFile::new().expect("temp config file");
        writeln!(config, "websocket {{ listen: \"127.0.0.1:{ws_port}\", no_tls: true }}")
            .expect("write nats config");
        let path = config.path().display().to_string();
        let nats = NatsServer::start_with_args(&["-c", &path]).await;
        crate::process::wait_for_port(
            ws_port,
            "nats-server websocket",
            std::time::Duration::from_secs(30),
        )
        .await;
        NatsWithWebSocket { nats, ws_port, _config: config }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.ws_port)
    }
}
