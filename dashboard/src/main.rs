use clap::Parser;
use rallypoint_dashboard::DashboardConfig;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = DashboardConfig::parse();
    if let Some(rallypoint_dashboard::Command::HashPassword { name }) = &config.command {
        return match rallypoint_dashboard::hash_password_command(name) {
            Ok(line) => {
                println!("{line}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rallypoint-dashboard: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
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
