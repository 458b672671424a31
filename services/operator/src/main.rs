//! `courier-operator`: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = courier_operator::config::Cli::parse();
    match courier_operator::app::main(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("courier-operator: {err}");
            ExitCode::FAILURE
        }
    }
}
