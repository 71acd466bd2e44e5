use clap::Parser;
use rallypoint_relay::config::RelayConfig;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = RelayConfig::parse();
    let _otel = rallypoint_service::observability::init(
        "rallypoint-relay",
        &[
            ("relay.id", config.relay_id.clone()),
            ("relay.region", config.region.clone()),
        ],
    );
    match rallypoint_relay::run(config, rallypoint_service::shutdown::terminate_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("rallypoint-relay: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
