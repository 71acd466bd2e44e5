use clap::Parser;
use rallypoint_dashboard::DashboardConfig;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = DashboardConfig::parse();
    let _otel = rallypoint_service::observability::init("rallypoint-dashboard", &[]);
    match rallypoint_dashboard::run(config, rallypoint_service::shutdown::terminate_signal()).await
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rallypoint-dashboard: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
