//! Collector settings: clap flags with environment fallbacks.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use rallypoint_service::clickhouse::ClickHouseArgs;
use rallypoint_service::nats::NatsArgs;
use rallypoint_service::parse_duration;

/// Consumes election reports from JetStream and stores them in ClickHouse.
///
/// Several collectors may run at once: they share one durable consumer and
/// split the work. Delivery is at-least-once; storage is idempotent on the
/// report id, so a crash between insert and acknowledgement never double-counts.
///
/// The streams and the consumer are made by `rallypoint-collector setup`, run
/// once (and after every change of layout) with administrator credentials:
/// a collector's own NATS user may read its consumer, not create or delete
/// streams.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "rallypoint-collector",
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: CollectorConfig,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Creates or updates the telemetry streams and the collectors' consumer,
    /// then exits. Needs NATS credentials allowed to manage JetStream.
    Setup(SetupConfig),
}

/// What `setup` needs: administrator access and the layout to create.
#[derive(Debug, Clone, clap::Args)]
pub struct SetupConfig {
    /// NATS of any region (`--nats-*`), with administrator credentials.
    #[command(flatten)]
    pub nats: NatsArgs,

    #[command(flatten)]
    pub layout: StreamLayout,

    #[command(flatten)]
    pub consumer: ConsumerName,
}

/// Where telemetry is stored in JetStream.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamLayout {
    /// Regions whose relays publish telemetry, with the JetStream replicas of
    /// their regional stream: `us-east:3,singapore:1`. Each regional stream is
    /// placed in its region's cluster; the central stream sources them all.
    #[arg(long, env = "RALLYPOINT_TELEMETRY_REGIONS", value_delimiter = ',', value_parser = parse_region, required = true)]
    pub regions: Vec<(String, usize)>,

    /// Cluster (region) that holds the central stream, next to ClickHouse.
    #[arg(long, env = "RALLYPOINT_CENTRAL_REGION", default_value = "us-east")]
    pub central_region: String,

    /// Replicas of the central stream.
    #[arg(long, env = "RALLYPOINT_CENTRAL_REPLICAS", default_value_t = 3)]
    pub central_replicas: usize,
}

/// The durable consumer all collectors share.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumerName {
    /// Durable consumer shared by all collectors.
    #[arg(long, env = "RALLYPOINT_CONSUMER", default_value = "collector")]
    pub consumer: String,
}

/// How one collector process runs.
#[derive(Debug, Clone, clap::Args)]
pub struct CollectorConfig {
    /// NATS of any region (`--nats-*`; the central stream is reached through
    /// the super-cluster), with the collector's credentials.
    #[command(flatten)]
    pub nats: NatsArgs,

    #[command(flatten)]
    pub consumer: ConsumerName,

    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,

    /// Most reports per ClickHouse insert.
    #[arg(long, env = "RALLYPOINT_BATCH_SIZE", default_value_t = 5000)]
    pub batch_size: usize,

    /// Batches in flight at once in this process, each pulled, stored and
    /// acknowledged on its own: while one batch waits for ClickHouse, the
    /// next is already being pulled and decoded. Memory stays bounded by
    /// `workers × batch-size` reports.
    #[arg(long, env = "RALLYPOINT_COLLECTOR_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,

    /// Longest wait to fill a batch.
    #[arg(long, env = "RALLYPOINT_BATCH_WAIT", default_value = "250ms", value_parser = parse_duration)]
    pub batch_wait: Duration,

    /// Keep reports this many days (TTL on servers with TTL, partition drops otherwise).
    #[arg(long, env = "RALLYPOINT_RETENTION_DAYS", default_value_t = 90)]
    pub retention_days: u32,

    /// `/healthz`, `/readyz` and `/stats`.
    #[arg(
        long,
        env = "RALLYPOINT_COLLECTOR_HTTP",
        default_value = "127.0.0.1:8190"
    )]
    pub http_listen: SocketAddr,
}

fn parse_region(text: &str) -> Result<(String, usize), String> {
    let (region, replicas) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?}: write region:replicas, e.g. us-east:3"))?;
    rallypoint_protocol::subjects::validate_region(region).map_err(|e| e.to_string())?;
    let replicas: usize = replicas
        .parse()
        .map_err(|_| format!("{text:?}: replicas must be a number"))?;
    if !(1..=5).contains(&replicas) {
        return Err(format!("{text:?}: replicas must be 1 to 5"));
    }
    Ok((region.to_owned(), replicas))
}

#[cfg(test)]
mod tests {
    #[test]
    fn regions() {
        assert_eq!(
            super::parse_region("us-east:3").unwrap(),
            ("us-east".into(), 3)
        );
        assert!(super::parse_region("us-east").is_err());
        assert!(super::parse_region("us east:3").is_err());
        assert!(super::parse_region("x:9").is_err());
    }
}
