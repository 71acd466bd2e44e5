use clap::Parser;
use rallypoint_collector::config::CollectorConfig;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = CollectorConfig::parse();
    let _otel = rallypoint_service::observability::init("rallypoint-collector", &[]);
    match rallypoint_collector::run(config, rallypoint_service::shutdown::terminate_signal()).await
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("rallypoint-collector: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
