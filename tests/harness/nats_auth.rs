//! nats-server with Courier's per-component users and subject permissions: the file the chart
//! and `./dev up` use (`charts/courier/files/nats-auth.conf`), with generated passwords in place
//! of its `$COURIER_NATS_*_PASSWORD` references, and each component's credentials as the
//! services read them (`COURIER_NATS_USER` + a password file).

use std::path::PathBuf;

use courier_core::config::{NatsAuthArgs, connect_nats};
use tempfile::TempDir;

use crate::NatsServer;

/// The components with a NATS user, as named in `COURIER_NATS_<COMPONENT>_PASSWORD`; the user
/// is `courier-<component>`.
pub const COMPONENTS: [&str; 5] = ["api", "broadcaster", "worker", "operator", "external"];

/// The shipped permissions file.
pub fn permissions_file() -> PathBuf {
    crate::workspace_root().join("charts/courier/files/nats-auth.conf")
}

/// A nats-server (JetStream) that admits only Courier's users, with their permissions.
pub struct AuthNats {
    pub server: NatsServer,
    /// The config and one password file per component (kept while the server runs).
    dir: TempDir,
}

impl AuthNats {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = std::fs::read_to_string(permissions_file()).expect("nats-auth.conf");
        for component in COMPONENTS {
            let password = uuid::Uuid::now_v7().simple().to_string();
            std::fs::write(dir.path().join(component), format!("{password}\n")).unwrap();
            let reference = format!("$COURIER_NATS_{}_PASSWORD", component.to_uppercase());
            assert!(config.contains(&reference), "nats-auth.conf does not use {reference}");
            config = config.replace(&reference, &format!("\"{password}\""));
        }
        assert!(
            !config.contains("$COURIER_NATS_"),
            "nats-auth.conf names a password the harness does not set"
        );
        let path = dir.path().join("nats.conf");
        std::fs::write(&path, config).unwrap();
        let server = NatsServer::start_with_args(&["-c", path.to_str().unwrap()]).await;
        AuthNats { server, dir }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// `component`'s credentials as its config holds them.
    pub fn auth(&self, component: &str) -> NatsAuthArgs {
        assert!(COMPONENTS.contains(&component), "no NATS user for {component}");
        NatsAuthArgs {
            nats_user: Some(format!("courier-{component}")),
            nats_password_file: Some(self.dir.path().join(component)),
        }
    }

    /// A client logged in as `component`, connected the way the services connect.
    pub async fn client(&self, component: &str) -> async_nats::Client {
        let client = connect_nats(&self.url(), &self.auth(component), "courier-tests")
            .await
            .expect("NATS credentials");
        wait_connected(&client).await;
        client
    }

    /// The password of `component` (for tests that log in some other way).
    pub fn password(&self, component: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(component)).unwrap().trim().to_owned()
    }
}

/// Waits (bounded) until `client` has logged in.
pub async fn wait_connected(client: &async_nats::Client) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while client.connection_state() != async_nats::connection::State::Connected {
        assert!(tokio::time::Instant::now() < deadline, "NATS login did not succeed within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
