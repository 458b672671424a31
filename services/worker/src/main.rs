//! `courier-worker`: parse config, start telemetry, work until SIGINT/SIGTERM.

use clap::Parser;
use courier_worker::{Application, WorkerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = WorkerConfig::parse();
    courier_core::telemetry::init(&config.telemetry);
    let shutdown = courier_core::shutdown::on_signals();
    Application::build_standard(config).await?.run(shutdown).await
}
