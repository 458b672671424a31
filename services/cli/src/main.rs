//! `courier`: tail channels live, benchmark, generate demo traffic.

use clap::{Parser, Subcommand};
use courier_cli::{bench, demo, tail};

#[derive(Debug, Parser)]
#[command(
    name = "courier",
    version,
    about = "Courier command line: tail channels, benchmark, demo traffic"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once from the command line and matched once: its size costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Print events of channels as they happen (resumes across reconnects).
    Tail(tail::TailArgs),
    /// Load generators.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Create demo products at a steady rate.
    Demo(demo::DemoArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Tail(args) => tail::run(args).await,
        Command::Bench(command) => bench::run(command).await,
        Command::Demo(args) => demo::run(args).await,
    }
}
