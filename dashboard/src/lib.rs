//! The rallypoint dashboard: what SREs and planners look at.
//!
//! * [`data`] — the ClickHouse queries behind each view (rollups first);
//! * [`views`] — Leptos views rendered on the server;
//! * [`charts`] — SVG charts;
//! * [`filters`] — the URL-carried filters all views share;
//! * [`http`] — the axum routes;
//! * [`middleware`] — request ids and security headers around every answer.

pub mod charts;
pub mod data;
pub mod filters;
pub mod http;
pub mod middleware;
pub mod views;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use rallypoint_service::clickhouse::ClickHouseArgs;

/// Serves the dashboard.
#[derive(Debug, Clone, Parser)]
#[command(name = "rallypoint-dashboard", version, about)]
pub struct DashboardConfig {
    #[arg(
        long,
        env = "RALLYPOINT_DASHBOARD_LISTEN",
        default_value = "127.0.0.1:8091"
    )]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    /// Pages refresh their data this often (0: never).
    #[arg(long, env = "RALLYPOINT_DASHBOARD_REFRESH", default_value_t = 30)]
    pub refresh_seconds: u32,
}

pub async fn run(
    config: DashboardConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let dashboard = Arc::new(http::Dashboard {
        db: data::Db::new(
            &config.clickhouse.url,
            &config.clickhouse.user,
            &config.clickhouse.password,
            &config.clickhouse.database,
        ),
        refresh_seconds: config.refresh_seconds,
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on --listen {}", config.listen))?;
    tracing::info!(listen = %config.listen, clickhouse = %config.clickhouse.url, "dashboard serving");
    axum::serve(listener, http::router(dashboard))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
