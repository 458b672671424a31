//! `courier-broadcaster`: parse config, start telemetry, run until SIGINT/SIGTERM.

use clap::Parser;
use courier_broadcaster::{Application, BroadcasterConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = BroadcasterConfig::parse();
    courier_core::telemetry::init(&config.telemetry);
    let shutdown = courier_core::shutdown::on_signals();
    Application::build(config).await?.run(shutdown).await
}
