use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = rallypoint_lab::cli::Cli::parse();
    let _otel = rallypoint_service::observability::init("rallypoint", &[]);
    match rallypoint_lab::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rallypoint: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
