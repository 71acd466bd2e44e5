//! The rallypoint dashboard: what SREs and planners look at.
//!
//! * [`data`] — the ClickHouse queries behind each view (rollups first);
//! * [`views`] — Leptos views rendered on the server;
//! * [`charts`] — SVG charts;
//! * [`filters`] — the URL-carried filters all views share;
//! * [`http`] — the axum routes;
//! * [`middleware`] — request ids and security headers around every answer;
//! * [`auth`] — who may see it: a users file, a trusted proxy's header.

pub mod auth;
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
    /// Participants one relay core carries, for the capacity view's relay
    /// cores: measure it on the relays' own hardware with `rallypoint bench
    /// capacity --transport wt --relays 2` (or `rallypoint load` against a
    /// deployed relay). Unset: 80, this repository's measurement
    /// (BENCHMARKS.md), and the capacity view says it is the default.
    #[arg(
        long,
        env = "RALLYPOINT_PARTICIPANTS_PER_RELAY_CORE",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub participants_per_relay_core: Option<u64>,
    #[command(flatten)]
    pub auth: auth::AuthArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Prints a users-file line (NAME:$argon2id$…) for the password read
    /// from standard input (its first line).
    HashPassword {
        /// The user's name.
        name: String,
    },
}

/// `hash-password NAME`: the users-file line for the password on stdin.
pub fn hash_password_command(name: &str) -> anyhow::Result<String> {
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("cannot read the password from standard input")?;
    let password = password.trim_end_matches(['\n', '\r']);
    auth::users_line(name, password)
}

pub async fn run(
    config: DashboardConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Before anything else: without a way to know who asks, do not serve.
    let auth = config.auth.build()?;
    if auth.is_open() && !config.listen.ip().is_loopback() {
        tracing::warn!(listen = %config.listen, "--no-auth on an address other hosts can reach: anyone who can connect sees the dashboard");
    }
    let dashboard = Arc::new(http::Dashboard {
        db: data::Db::new(&config.clickhouse)?,
        refresh_seconds: config.refresh_seconds,
        participants_per_relay_core: config.participants_per_relay_core,
        auth: Arc::new(auth),
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on --listen {}", config.listen))?;
    tracing::info!(listen = %config.listen, clickhouse = %config.clickhouse.redacted_url(), auth = %dashboard.auth.describe(), "dashboard serving");
    // The peer's address: --trusted-proxies are matched against it.
    let app = http::router(dashboard).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
