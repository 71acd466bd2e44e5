use clap::Parser;
use rallypoint_collector::config::{Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let _otel = rallypoint_service::observability::init("rallypoint-collector", &[]);
    let result = match cli.command {
        Some(Command::Setup(setup)) => rallypoint_collector::setup(setup).await,
        Some(Command::RebuildRollups(rebuild)) => rallypoint_collector::rebuild::run(rebuild).await,
        None => {
            rallypoint_collector::run(cli.run, rallypoint_service::shutdown::terminate_signal())
                .await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("rallypoint-collector: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
