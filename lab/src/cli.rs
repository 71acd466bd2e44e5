//! The `rallypoint` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use rallypoint_testkit::stack::{Stack, StackConfig};

/// Developer and operator commands for rallypoint.
#[derive(Debug, Parser)]
#[command(name = "rallypoint", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole system locally: two regions, every part, on loopback.
    Up(UpArgs),
    /// Run one relay election and show it (live table, then the result).
    Probe(crate::commands::probe::ProbeArgs),
    /// A headless participant: elect, join a room, send synthetic media.
    Join(crate::commands::join::JoinArgs),
    /// Call-rate load on one relay (or straight over NATS): many rooms of a
    /// few participants sending audio (and video) and receiving each other;
    /// a JSON summary on stdout.
    Load(crate::commands::load::LoadArgs),
    /// Synthetic election reports (labelled synthetic) through relays,
    /// JetStream and the collector into ClickHouse.
    Simulate(crate::commands::simulate::SimulateArgs),
    /// Make a deployment's NATS users: NKey seeds per role, and the accounts
    /// block for the NATS servers' configuration.
    NatsUsers(crate::commands::nats_users::NatsUsersArgs),
    /// Make a deployment's ClickHouse users: users.xml (a user per part,
    /// least privilege, passwords as SHA-256) and a password file each.
    ClickhouseUsers(crate::commands::clickhouse_users::ClickHouseUsersArgs),
    /// Benchmarks that print numbers and ratios against a same-run baseline.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Relay fan-out (1 sender, N receivers) versus raw NATS pub/sub.
    Relay(crate::bench::relay::RelayBenchArgs),
    /// How much call traffic one relay core carries: rising call-rate load
    /// until the knee, against raw NATS fan-out in the same run.
    Capacity(crate::bench::capacity::CapacityBenchArgs),
    /// Election decision time and accuracy versus the fixed 3 s tournament
    /// and first-probe, in virtual time.
    Election(crate::bench::election::ElectionBenchArgs),
    /// Failover gap with real relays (kill or drain the talker's relay).
    Failover(crate::bench::failover::FailoverBenchArgs),
    /// WebSocket and WebTransport handshakes through a jittery, lossy path:
    /// how many complete, how long they take, how the others fail.
    Handshakes(crate::bench::handshakes::HandshakesBenchArgs),
    /// Telemetry ingest: JetStream -> collector(s) -> ClickHouse.
    Ingest(crate::bench::ingest::IngestBenchArgs),
    /// Dashboard view latency over millions of seeded elections, rollups vs raw.
    Dashboard(crate::bench::dashboard::DashboardBenchArgs),
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Directory for configs, data and logs.
    #[arg(long, default_value = ".rallypoint")]
    pub dir: PathBuf,

    /// Address of the stack server (candidate list, dev tokens, web app).
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub http: SocketAddr,

    /// Token secret shared by all relays (random per run if unset).
    #[arg(long, env = "RALLYPOINT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Serve development tokens at /token.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub dev_tokens: bool,

    /// Latency lab: simulate a client location (JSON scenario, see
    /// lab/scenarios/). Repeat for several; each gets its own candidate list
    /// behind delay proxies.
    #[arg(long)]
    pub scenario: Vec<PathBuf>,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => up(args).await,
        Command::Probe(args) => crate::commands::probe::run(args).await,
        Command::Join(args) => crate::commands::join::run(args).await,
        Command::Load(args) => crate::commands::load::run(args).await,
        Command::Simulate(args) => crate::commands::simulate::run(args).await,
        Command::NatsUsers(args) => crate::commands::nats_users::run(args),
        Command::ClickhouseUsers(args) => crate::commands::clickhouse_users::run(args),
        Command::Bench(BenchCommand::Relay(args)) => crate::bench::relay::run(args).await,
        Command::Bench(BenchCommand::Capacity(args)) => crate::bench::capacity::run(args).await,
        Command::Bench(BenchCommand::Election(args)) => crate::bench::election::run(args),
        Command::Bench(BenchCommand::Failover(args)) => crate::bench::failover::run(args).await,
        Command::Bench(BenchCommand::Handshakes(args)) => crate::bench::handshakes::run(args).await,
        Command::Bench(BenchCommand::Ingest(args)) => crate::bench::ingest::run(args).await,
        Command::Bench(BenchCommand::Dashboard(args)) => crate::bench::dashboard::run(args).await,
    }
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let stack = Stack::start(StackConfig {
        dir: args.dir,
        http: args.http,
        jwt_secret: args.jwt_secret,
        dev_tokens: args.dev_tokens,
        // Development relays accept reports faster, so `rallypoint simulate`
        // (every client on this machine's address) can fill the dashboards
        // quickly.
        relay_args: [
            "--reports-per-minute",
            "6000",
            "--reports-per-minute-per-address",
            "60000",
        ]
        .map(String::from)
        .to_vec(),
        scenarios: args
            .scenario
            .iter()
            .map(rallypoint_testkit::proxy::Scenario::load)
            .collect::<anyhow::Result<_>>()?,
        telemetry: true,
        collector_args: Vec::new(),
        stream_args: Vec::new(),
    })
    .await?;
    stack.print_endpoints();
    rallypoint_service::shutdown::terminate_signal().await;
    eprintln!();
    stack.stop().await;
    Ok(())
}
