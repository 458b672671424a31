//! `courier-api`: parse config, start telemetry, run until SIGINT/SIGTERM — or run one
//! administration command (`grant-role`) and exit.

use clap::Parser;
use courier_api::{ApiConfig, Application, config::Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ApiConfig::parse();
    courier_core::telemetry::init(&config.telemetry);
    if let Some(Command::GrantRole { username, role }) = &config.command {
        let message =
            courier_api::auth::bootstrap::grant_role_command(&config, username, role).await?;
        println!("{message}");
        return Ok(());
    }
    let shutdown = courier_core::shutdown::on_signals();
    Application::build(config).await?.run(shutdown).await
}
