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

// Parsed once per process: the size of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Creates or updates the telemetry streams and the collectors' consumer,
    /// then exits. Needs NATS credentials allowed to manage JetStream.
    Setup(SetupConfig),
    /// Rebuilds the rollups of whole days from the raw tables (after a
    /// rollup was lost or damaged, or to fill a new one for older days),
    /// then exits. Needs the ClickHouse administrator. Days that are over
    /// only; stop the collectors first, or a report arriving for a day being
    /// rebuilt may be counted twice. On a cluster: the shard of the server
    /// given; run it against one server of each shard.
    RebuildRollups(RebuildConfig),
}

/// What `rebuild-rollups` needs.
#[derive(Debug, Clone, clap::Args)]
pub struct RebuildConfig {
    /// ClickHouse as its administrator (`--clickhouse-*`).
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,

    /// First day to rebuild, `YYYY-MM-DD` (the server's time zone, as the
    /// tables' daily partitions).
    #[arg(long, value_parser = parse_day)]
    pub from: u32,

    /// Last day to rebuild (included), `YYYY-MM-DD`; before today.
    #[arg(long, value_parser = parse_day)]
    pub to: u32,

    /// Only these rollup tables (e.g. `rp_rtt_hour`), comma-separated;
    /// every rollup by default.
    #[arg(long, value_delimiter = ',')]
    pub rollup: Vec<String>,
}

/// `2026-11-30` → `20261130`, the tables' partition names.
fn parse_day(text: &str) -> Result<u32, String> {
    let parts: Vec<&str> = text.split('-').collect();
    let parsed = match parts.as_slice() {
        [y, m, d] if y.len() == 4 && m.len() == 2 && d.len() == 2 => y
            .parse::<u32>()
            .ok()
            .zip(m.parse::<u32>().ok())
            .zip(d.parse::<u32>().ok())
            .map(|((y, m), d)| (y, m, d)),
        _ => None,
    };
    match parsed {
        Some((y, m, d))
            if (1970..=2105).contains(&y)
                && (1..=12).contains(&m)
                && (1..=days_in_month(y, m)).contains(&d) =>
        {
            Ok(y * 10_000 + m * 100 + d)
        }
        _ => Err(format!("{text:?} is not a day (YYYY-MM-DD)")),
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a `YYYYMMDD` day (Howard Hinnant's
/// days-from-civil), to count the days of a range.
pub fn day_number(day: u32) -> i64 {
    let (y, m, d) = (
        i64::from(day / 10_000),
        i64::from(day / 100 % 100),
        i64::from(day % 100),
    );
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The `YYYYMMDD` day `days` days after 1970-01-01 (the inverse of
/// [`day_number`]).
fn day_at(days: i64) -> u32 {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let d = day_of_year - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = year_of_era + era * 400 + i64::from(m <= 2);
    (y * 10_000 + m * 100 + d) as u32
}

/// The UTC day (`YYYYMMDD`) of a unix time in seconds.
pub fn day_of(unix_seconds: u32) -> u32 {
    day_at(i64::from(unix_seconds) / 86_400)
}

/// `count` consecutive days from `first` (`YYYYMMDD`).
pub fn days_from(first: u32, count: i64) -> Vec<u32> {
    let start = day_number(first);
    (start..start + count).map(day_at).collect()
}

/// `20261130` → `2026-11-30`.
pub fn day_text(day: u32) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        day / 10_000,
        day / 100 % 100,
        day % 100
    )
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

    /// ClickHouse as its administrator (`--clickhouse-*`): schema
    /// migrations, the retention TTL.
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,

    /// How long the collector lease outlives its holder (see `lease`; the
    /// bucket lives with the central stream): a standby collector takes
    /// over within this of the active one dying, at once when it stops
    /// cleanly.
    #[arg(long, env = "RALLYPOINT_LEASE_TTL", default_value = "10s", value_parser = parse_duration)]
    pub lease_ttl: Duration,

    /// Keep reports and dead letters this many days: a TTL where the server
    /// has one; on servers without (18.16), each `setup` run drops the
    /// partitions past it and deletes older dead letters, so run `setup`
    /// daily there (the chart's CronJob does).
    #[arg(long, env = "RALLYPOINT_RETENTION_DAYS", default_value_t = 90)]
    pub retention_days: u32,
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

    /// How long JetStream drops a report id seen before (a client resending
    /// through another region). Copies after it are caught by the store.
    #[arg(long, env = "RALLYPOINT_DUPLICATE_WINDOW", default_value = "10m", value_parser = parse_duration)]
    pub duplicate_window: Duration,

    /// Most bytes each regional telemetry stream holds (oldest dropped first).
    /// Every JetStream server of a region reserves it, plus the central
    /// stream's in the central region: keep both within `max_file_store`.
    #[arg(long, env = "RALLYPOINT_REGIONAL_MAX_BYTES", default_value = "1GiB", value_parser = parse_bytes)]
    pub regional_max_bytes: u64,

    /// Most bytes the central telemetry stream holds (oldest dropped first).
    #[arg(long, env = "RALLYPOINT_CENTRAL_MAX_BYTES", default_value = "2GiB", value_parser = parse_bytes)]
    pub central_max_bytes: u64,

    /// Largest message a telemetry stream accepts: the largest valid report
    /// (a 64 KiB client frame) plus the relay's enrichment.
    #[arg(long, env = "RALLYPOINT_MAX_MSG_SIZE", default_value = "80KiB", value_parser = parse_bytes)]
    pub max_msg_size: u64,
}

impl StreamLayout {
    /// The stream settings these flags ask for; refuses sizes JetStream cannot take.
    pub fn stream_bounds(&self) -> anyhow::Result<crate::streams::StreamBounds> {
        let max_msg_size = i32::try_from(self.max_msg_size)
            .map_err(|_| anyhow::anyhow!("--max-msg-size {} is above 2 GiB", self.max_msg_size))?;
        let bytes = |flag: &str, value: u64| {
            i64::try_from(value).map_err(|_| anyhow::anyhow!("{flag} {value} is too large"))
        };
        let bounds = crate::streams::StreamBounds {
            duplicate_window: self.duplicate_window,
            regional_max_bytes: bytes("--regional-max-bytes", self.regional_max_bytes)?,
            central_max_bytes: bytes("--central-max-bytes", self.central_max_bytes)?,
            max_msg_size,
        };
        for (flag, value) in [
            ("--regional-max-bytes", bounds.regional_max_bytes),
            ("--central-max-bytes", bounds.central_max_bytes),
        ] {
            if value < i64::from(max_msg_size) {
                anyhow::bail!("{flag} {value} is smaller than --max-msg-size {max_msg_size}");
            }
        }
        if self.duplicate_window.is_zero() {
            anyhow::bail!("--duplicate-window must be longer than zero");
        }
        Ok(bounds)
    }
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

    /// Most payload bytes per batch (and fetched ahead per worker): what
    /// bounds memory when reports are large. At least 1 MiB, so any message
    /// NATS can carry fits in a batch.
    #[arg(long, env = "RALLYPOINT_BATCH_BYTES", default_value = "16MiB", value_parser = parse_bytes)]
    pub batch_bytes: u64,

    /// Batches in flight at once in this process, each pulled, stored and
    /// acknowledged on its own: while one batch waits for ClickHouse, the
    /// next is already being pulled and decoded. Memory stays bounded by
    /// `workers × batch-bytes` (a few times that once decoded).
    #[arg(long, env = "RALLYPOINT_COLLECTOR_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,

    /// Longest wait to fill a batch.
    #[arg(long, env = "RALLYPOINT_BATCH_WAIT", default_value = "250ms", value_parser = parse_duration)]
    pub batch_wait: Duration,

    /// `/readyz` turns red when a batch this process took has waited this
    /// long to be stored (ClickHouse answering but refusing every batch, a
    /// table missing, a wedged worker).
    #[arg(long, env = "RALLYPOINT_STUCK_AFTER", default_value = "2m", value_parser = parse_duration)]
    pub stuck_after: Duration,

    /// `/healthz`, `/readyz` and `/stats`.
    #[arg(
        long,
        env = "RALLYPOINT_COLLECTOR_HTTP",
        default_value = "127.0.0.1:8190"
    )]
    pub http_listen: SocketAddr,
}

/// The smallest `--batch-bytes`: NATS's default largest message.
pub const MIN_BATCH_BYTES: u64 = 1 << 20;

impl CollectorConfig {
    /// `--batch-bytes`, refused below [`MIN_BATCH_BYTES`] (a larger message
    /// would never fit in a pull and stall the consumer).
    pub fn batch_bytes(&self) -> anyhow::Result<usize> {
        if self.batch_bytes < MIN_BATCH_BYTES {
            anyhow::bail!(
                "--batch-bytes {} is below {MIN_BATCH_BYTES} (1 MiB, the largest NATS message)",
                self.batch_bytes
            );
        }
        usize::try_from(self.batch_bytes)
            .map_err(|_| anyhow::anyhow!("--batch-bytes {} is too large", self.batch_bytes))
    }
}

/// Parses `80KiB`, `1GiB`, `512MiB` or a plain number of bytes (clap `value_parser`).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let at = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(at);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let scale: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use B, KiB, MiB or GiB"
            ));
        }
    };
    value
        .checked_mul(scale)
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| format!("{text:?} must be between 1 byte and 16 EiB"))
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
    fn days_are_calendar_days() {
        use super::{day_number, parse_day};
        assert_eq!(parse_day("2024-02-29"), Ok(20240229));
        assert!(parse_day("2026-02-29").is_err());
        assert!(parse_day("2026-04-31").is_err());
        assert!(parse_day("2026-13-01").is_err());
        assert!(parse_day("26-01-01").is_err());
        assert_eq!(day_number(19700101), 0);
        assert_eq!(day_number(20261201) - day_number(20261130), 1);
        assert_eq!(day_number(20250301) - day_number(20250228), 1);
        assert_eq!(day_number(20240301) - day_number(20240228), 2);
        assert_eq!(
            super::days_from(20240227, 4),
            [20240227, 20240228, 20240229, 20240301]
        );
        assert_eq!(
            super::days_from(20261230, 3),
            [20261230, 20261231, 20270101]
        );
        assert_eq!(super::day_text(20261130), "2026-11-30");
    }

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

    #[test]
    fn byte_sizes() {
        assert_eq!(super::parse_bytes("80KiB").unwrap(), 80 * 1024);
        assert_eq!(super::parse_bytes("2GiB").unwrap(), 2 << 30);
        assert_eq!(super::parse_bytes("4096").unwrap(), 4096);
        assert!(super::parse_bytes("1GB").is_err(), "ambiguous unit");
        assert!(super::parse_bytes("0").is_err());
        assert!(super::parse_bytes("KiB").is_err());
        assert!(super::parse_bytes("99999999999GiB").is_err());
    }
}
