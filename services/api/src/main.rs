//! `courier-api`: parse config, start telemetry, run until SIGINT/SIGTERM.

use clap::Parser;
use courier_api::{ApiConfig, Application};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ApiConfig::parse();
    courier_core::telemetry::init(&config.telemetry);
    let shutdown = courier_core::shutdown::on_signals();
    Application::build(config).await?.run(shutdown).await
}
