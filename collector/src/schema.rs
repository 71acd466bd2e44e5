//! The ClickHouse schema and its versioned migrations.
//!
//! One row per election (`rp_elections`), one per candidate of an election
//! (`rp_candidates`), refused messages (`rp_dead_letters`), and per-minute
//! rollups kept by materialized views (`rp_rtt_minute` by region × ISP ×
//! country × transport, `rp_elections_minute` by winner region × ISP × country
//! × trigger) with quantile *states*, so dashboards merge minutes instead of
//! scanning rows; the same per hour (`rp_rtt_hour`, `rp_elections_hour`) for
//! week- and month-long ranges; a decision-time histogram per hour
//! (`rp_decisions_hour`, a summed count per 100 ms bin) so the overview does
//! not scan weeks of elections; and per UTC day (`rp_rtt_day`,
//! `rp_elections_day`) so a month merges ~54 states per cell (29 days and
//! the edge hours), not 720 — with the first day each holds completely in
//! `rp_rollup_coverage`; and later elections by trigger and rule per hour
//! (`rp_moves_hour`, summed counts) for why calls moved. Every view
//! costs every insert (`rallypoint bench ingest`, ClickHouse alone: ~60 k
//! reports/s without the histogram, ~53 k with it, 26–49 k with the per-day
//! views as well (runs vary widely); ~42 k with a per-minute histogram, ~25 k with `sumMap`
//! states instead of summed bins) — so none for short ranges, which scan
//! quickly. Rollups fill from their creation on: a new deployment has no
//! history to backfill, and on an upgraded one the dashboard reads the days
//! before a per-day rollup was made from the hourly rollups (migration 8).
//!
//! The same DDL runs on Debian's ClickHouse 18.16 (what the tests here run
//! against) and on current ClickHouse (checked in-process with chDB): plain
//! `DateTime` (no `DateTime64`), no `LowCardinality`, `toStartOfMinute` (no
//! `toStartOfInterval`). Each report is stored once, whatever time or region
//! a copy arrives through: `rp_report_keys` (migration 10), filed by the
//! report's own clock, gives every copy its first copy's receive second, and
//! the store inserts only what the base tables lack (see `store`, `keys`), so
//! the rollups — fed by the views from those inserts only — count each report
//! once. The base tables are also `ReplacingMergeTree`s keyed by the receive
//! second and the report id, so a copy that slipped past the check anyway
//! still collapses on merge. Retention: a TTL where the server has TTL (19.6+),
//! daily partition drops otherwise (see `retention`).
//!
//! On a ClickHouse cluster the same schema is replicated on every server and
//! read through `Distributed` tables (see `layout`).
//!
//! Migrations are applied in order by `rallypoint-collector setup`; each statement
//! is idempotent (`IF NOT EXISTS`), or, for the rollup coverage records
//! (migration 8), harmless when repeated, so collectors starting together
//! are safe.

use clickhouse::Client;

use crate::layout::Layout;

/// A ClickHouse server version, as `SELECT version()` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
}

impl ServerVersion {
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('.');
        Some(ServerVersion {
            major: parts.next()?.parse().ok()?,
            minor: parts.next()?.parse().ok()?,
        })
    }

    /// Table TTL arrived in 19.6.
    pub fn has_ttl(self) -> bool {
        self >= ServerVersion {
            major: 19,
            minor: 6,
        }
    }

    /// Typed inserts (`RowBinaryWithNamesAndTypes`) that the client can check
    /// against the table schema; old servers get plain RowBinary.
    pub fn has_typed_row_binary(self) -> bool {
        self >= ServerVersion {
            major: 24,
            minor: 1,
        }
    }
}

pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    /// A query answering 1 when the database already has what the
    /// statements make (a newer earlier migration made it so on a fresh
    /// database): the migration is then recorded without running them.
    pub done_when: Option<&'static str>,
    pub statements: &'static [&'static str],
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "elections and candidates",
        done_when: None,
        statements: &[
            "CREATE TABLE IF NOT EXISTS rp_elections (
                report_id FixedString(16),
                received_at DateTime,
                received_ms UInt64,
                client_time_ms UInt64,
                session_id FixedString(16),
                session_seq UInt32,
                peer_id String,
                relay_id String,
                relay_region String,
                trigger String,
                rule String,
                decision_ms UInt32,
                has_winner UInt8,
                winner_region String,
                winner_relay_id String,
                winner_transport String,
                winner_rtt_us UInt32,
                previous_region String,
                previous_relay_id String,
                previous_transport String,
                candidates UInt8,
                failed UInt8,
                country String,
                asn UInt32,
                isp String,
                platform String,
                client_version String,
                browser_family String,
                effective_connection_type String,
                synthetic UInt8,
                reason String,
                schema_version UInt16
            ) ENGINE = ReplacingMergeTree()
            PARTITION BY toYYYYMMDD(received_at)
            ORDER BY (received_at, report_id)",
            "CREATE TABLE IF NOT EXISTS rp_candidates (
                report_id FixedString(16),
                received_at DateTime,
                idx UInt8,
                session_id FixedString(16),
                trigger String,
                region String,
                relay_id String,
                transport String,
                endpoint String,
                shadow UInt8,
                connect_ms UInt32,
                error String,
                samples UInt32,
                lost UInt32,
                rtt_min_us UInt32,
                rtt_median_us UInt32,
                rtt_p95_us UInt32,
                rtt_mean_us UInt32,
                jitter_us UInt32,
                outcome String,
                country String,
                asn UInt32,
                isp String,
                platform String,
                synthetic UInt8
            ) ENGINE = ReplacingMergeTree()
            PARTITION BY toYYYYMMDD(received_at)
            ORDER BY (received_at, report_id, idx)",
        ],
    },
    Migration {
        version: 2,
        name: "dead letters",
        done_when: None,
        // Keyed by stream and sequence since migration 12 (which gives a
        // database made before it the same shape).
        statements: &["CREATE TABLE IF NOT EXISTS rp_dead_letters (
                stream_seq UInt64,
                stream String,
                first_seen DateTime,
                subject String,
                reason String,
                payload_hex String
            ) ENGINE = ReplacingMergeTree()
            ORDER BY (stream_seq, stream)"],
    },
    Migration {
        version: 3,
        name: "per-minute rollups",
        done_when: None,
        statements: &[
            "CREATE TABLE IF NOT EXISTS rp_rtt_minute (
                minute DateTime,
                region String,
                transport String,
                country String,
                isp String,
                shadow UInt8,
                synthetic UInt8,
                measurements AggregateFunction(count),
                rtt AggregateFunction(quantiles(0.5, 0.9, 0.95, 0.99), UInt32),
                probes AggregateFunction(sum, UInt32),
                lost AggregateFunction(sum, UInt32)
            ) ENGINE = AggregatingMergeTree()
            PARTITION BY toYYYYMMDD(minute)
            ORDER BY (minute, region, transport, country, isp, shadow, synthetic)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS rp_rtt_minute_mv TO rp_rtt_minute AS
            SELECT
                toStartOfMinute(received_at) AS minute,
                region, transport, country, isp, shadow, synthetic,
                countState() AS measurements,
                quantilesState(0.5, 0.9, 0.95, 0.99)(rtt_median_us) AS rtt,
                sumState(samples) AS probes,
                sumState(lost) AS lost
            FROM rp_candidates
            WHERE samples > 0
            GROUP BY minute, region, transport, country, isp, shadow, synthetic",
            "CREATE TABLE IF NOT EXISTS rp_elections_minute (
                minute DateTime,
                winner_region String,
                winner_transport String,
                trigger String,
                country String,
                isp String,
                synthetic UInt8,
                elections AggregateFunction(count),
                decision_ms AggregateFunction(quantiles(0.5, 0.95), UInt32),
                winner_rtt AggregateFunction(quantiles(0.5, 0.95), UInt32),
                sessions AggregateFunction(uniq, FixedString(16))
            ) ENGINE = AggregatingMergeTree()
            PARTITION BY toYYYYMMDD(minute)
            ORDER BY (minute, winner_region, winner_transport, trigger, country, isp, synthetic)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS rp_elections_minute_mv TO rp_elections_minute AS
            SELECT
                toStartOfMinute(received_at) AS minute,
                winner_region, winner_transport, trigger, country, isp, synthetic,
                countState() AS elections,
                quantilesState(0.5, 0.95)(decision_ms) AS decision_ms,
                quantilesState(0.5, 0.95)(winner_rtt_us) AS winner_rtt,
                uniqState(session_id) AS sessions
            FROM rp_elections
            GROUP BY minute, winner_region, winner_transport, trigger, country, isp, synthetic",
        ],
    },
    Migration {
        version: 4,
        name: "per-hour rollups for long ranges",
        done_when: None,
        statements: &[
            "CREATE TABLE IF NOT EXISTS rp_rtt_hour (
                hour DateTime,
                region String,
                transport String,
                country String,
                isp String,
                shadow UInt8,
                synthetic UInt8,
                measurements AggregateFunction(count),
                rtt AggregateFunction(quantiles(0.5, 0.9, 0.95, 0.99), UInt32),
                probes AggregateFunction(sum, UInt32),
                lost AggregateFunction(sum, UInt32)
            ) ENGINE = AggregatingMergeTree()
            PARTITION BY toYYYYMMDD(hour)
            ORDER BY (hour, region, transport, country, isp, shadow, synthetic)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS rp_rtt_hour_mv TO rp_rtt_hour AS
            SELECT
                toStartOfHour(received_at) AS hour,
                region, transport, country, isp, shadow, synthetic,
                countState() AS measurements,
                quantilesState(0.5, 0.9, 0.95, 0.99)(rtt_median_us) AS rtt,
                sumState(samples) AS probes,
                sumState(lost) AS lost
            FROM rp_candidates
            WHERE samples > 0
            GROUP BY hour, region, transport, country, isp, shadow, synthetic",
            "CREATE TABLE IF NOT EXISTS rp_elections_hour (
                hour DateTime,
                winner_region String,
                winner_transport String,
                trigger String,
                country String,
                isp String,
                synthetic UInt8,
                elections AggregateFunction(count),
                decision_ms AggregateFunction(quantiles(0.5, 0.95), UInt32),
                winner_rtt AggregateFunction(quantiles(0.5, 0.95), UInt32),
                sessions AggregateFunction(uniq, FixedString(16))
            ) ENGINE = AggregatingMergeTree()
            PARTITION BY toYYYYMMDD(hour)
            ORDER BY (hour, winner_region, winner_transport, trigger, country, isp, synthetic)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS rp_elections_hour_mv TO rp_elections_hour AS
            SELECT
                toStartOfHour(received_at) AS hour,
                winner_region, winner_transport, trigger, country, isp, synthetic,
                countState() AS elections,
                quantilesState(0.5, 0.95)(decision_ms) AS decision_ms,
                quantilesState(0.5, 0.95)(winner_rtt_us) AS winner_rtt,
                uniqState(session_id) AS sessions
            FROM rp_elections
            GROUP BY hour, winner_region, winner_transport, trigger, country, isp, synthetic",
        ],
    },
    Migration {
        version: 5,
        name: "decision-time histogram per hour",
        done_when: None,
        statements: &[
            "CREATE TABLE IF NOT EXISTS rp_decisions_hour (
                hour DateTime,
                trigger String,
                winner_transport String,
                country String,
                isp String,
                synthetic UInt8,
                lower_ms UInt32,
                elections UInt64
            ) ENGINE = SummingMergeTree(elections)
            PARTITION BY toYYYYMMDD(hour)
            ORDER BY (hour, trigger, winner_transport, country, isp, synthetic, lower_ms)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS rp_decisions_hour_mv TO rp_decisions_hour AS
            SELECT
                toStartOfHour(received_at) AS hour,
                trigger, winner_transport, country, isp, synthetic,
                toUInt32(intDiv(decision_ms, 100) * 100) AS lower_ms,
                count() AS elections
            FROM rp_elections
            GROUP BY hour, trigger, winner_transport, country, isp, synthetic, lower_ms",
        ],
    },
    Migration {
        version: 6,
        name: "per-day RTT rollup for month-long ranges",
        done_when: None,
        statements: &[
            // UTC days (not `toStartOfDay`, which follows the server's time
            // zone), so the dashboard can tell which hours a day row covers.
            "CREATE TABLE IF NOT EXISTS rp_rtt_day (
                day DateTime,
                region String,
                transport String,
                country String,
                isp String,
                shadow UInt8,
                synthetic UInt8,
                measurements AggregateFunction(count),
                rtt AggregateFunction(quantiles(0.5, 0.9, 0.95, 0.99), UInt32),
                probes AggregateFunction(sum, UInt32),
                lost AggregateFunction(sum, UInt32)
            ) ENGINE = AggregatingMergeTree()
            PARTITION BY toYYYYMMDD(day)
            ORDER BY (day, region, transport, country, isp, shadow, synthetic)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS rp_rtt_day_mv TO rp_rtt_day AS
            SELECT
                toDateTime(intDiv(toUInt32(received_at), 86400) * 86400) AS day,
                region, transport, country, isp, shadow, synthetic,
                countState() AS measurements,
                quantilesState(0.5, 0.9, 0.95, 0.99)(rtt_median_us) AS rtt,
                sumState(samples) AS probes,
                sumState(lost) AS lost
            FROM rp_candidates
            WHERE samples > 0
            GROUP BY day, region, transport, country, isp, shadow, synthetic",
        ],
    },
    Migration {
        version: 7,
        name: "per-day election counts and winner RTT for month-long ranges",
        done_when: None,
        statements: &[
            // Only what the overview and outcomes read over whole days: no
            // decision-time or session states (each would cost every insert).
            "CREATE TABLE IF NOT EXISTS rp_elections_day (
                day DateTime,
                winner_region String,
                winner_transport String,
                trigger String,
                country String,
                isp String,
                synthetic UInt8,
                elections AggregateFunction(count),
                winner_rtt AggregateFunction(quantiles(0.5, 0.95), UInt32)
            ) ENGINE = AggregatingMergeTree()
            PARTITION BY toYYYYMMDD(day)
            ORDER BY (day, winner_region, winner_transport, trigger, country, isp, synthetic)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS rp_elections_day_mv TO rp_elections_day AS
            SELECT
                toDateTime(intDiv(toUInt32(received_at), 86400) * 86400) AS day,
                winner_region, winner_transport, trigger, country, isp, synthetic,
                countState() AS elections,
                quantilesState(0.5, 0.95)(winner_rtt_us) AS winner_rtt
            FROM rp_elections
            GROUP BY day, winner_region, winner_transport, trigger, country, isp, synthetic",
        ],
    },
    Migration {
        version: 8,
        name: "where the per-day rollups are complete",
        done_when: None,
        statements: &[
            // A per-day rollup fills from its creation on. On a database that
            // already had reports, the days before (and the day it was made
            // on) are missing from it: readers must take those days from the
            // hourly rollup. Readers use the latest `complete_from` of a
            // rollup, so collectors that start together and both record it
            // are safe.
            "CREATE TABLE IF NOT EXISTS rp_rollup_coverage (
                rollup String,
                complete_from DateTime,
                recorded_at DateTime
            ) ENGINE = MergeTree()
            ORDER BY rollup",
            "INSERT INTO rp_rollup_coverage (rollup, complete_from, recorded_at)
            SELECT 'rp_rtt_day',
                toDateTime(if(count() = 0, 0, intDiv(toUInt32(now()), 86400) * 86400 + 86400)),
                now()
            FROM rp_candidates",
            "INSERT INTO rp_rollup_coverage (rollup, complete_from, recorded_at)
            SELECT 'rp_elections_day',
                toDateTime(if(count() = 0, 0, intDiv(toUInt32(now()), 86400) * 86400 + 86400)),
                now()
            FROM rp_elections",
        ],
    },
    Migration {
        version: 9,
        name: "later elections by trigger and rule per hour",
        done_when: None,
        statements: &[
            // Why calls moved, for long ranges: only elections after the
            // initial one (a few percent), so it costs inserts little.
            "CREATE TABLE IF NOT EXISTS rp_moves_hour (
                hour DateTime,
                trigger String,
                rule String,
                country String,
                synthetic UInt8,
                elections UInt64
            ) ENGINE = SummingMergeTree(elections)
            PARTITION BY toYYYYMMDD(hour)
            ORDER BY (hour, trigger, rule, country, synthetic)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS rp_moves_hour_mv TO rp_moves_hour AS
            SELECT
                toStartOfHour(received_at) AS hour,
                trigger, rule, country, synthetic,
                count() AS elections
            FROM rp_elections
            WHERE trigger != 'initial'
            GROUP BY hour, trigger, rule, country, synthetic",
            // Like the per-day rollups (migration 8): complete from the next
            // full hour on a database that already had elections.
            "INSERT INTO rp_rollup_coverage (rollup, complete_from, recorded_at)
            SELECT 'rp_moves_hour',
                toDateTime(if(count() = 0, 0, intDiv(toUInt32(now()), 3600) * 3600 + 3600)),
                now()
            FROM rp_elections",
        ],
    },
    Migration {
        version: 10,
        name: "report keys: exactly once whatever time a copy arrives",
        done_when: None,
        statements: &[
            // Filed by the report's own clock, so every copy finds its key;
            // holds the first copy's receive second, under which the store
            // files every copy (see `keys`). Small granules: lookups read a
            // few client seconds, not whole 8192-row granules around each.
            "CREATE TABLE IF NOT EXISTS rp_report_keys (
                client_second UInt32,
                report_id FixedString(16),
                received_at DateTime
            ) ENGINE = ReplacingMergeTree()
            PARTITION BY toYYYYMMDD(received_at)
            ORDER BY (client_second, report_id)
            SETTINGS index_granularity = 1024",
            // Reports stored before this migration get their keys, so a late
            // copy of one is recognised too. A plain scan (no GROUP BY: it
            // would hold every id in memory); a report stored twice before,
            // or the statement run twice by collectors starting together,
            // writes its key twice: readers take the earliest.
            "INSERT INTO rp_report_keys (client_second, report_id, received_at)
            SELECT toUInt32(least(intDiv(client_time_ms, 1000), 4294967295)), report_id, received_at
            FROM rp_elections",
        ],
    },
    Migration {
        version: 11,
        name: "privacy: no participant identity in telemetry",
        done_when: None,
        // The peer id was an unkeyed hash of the user id and the session
        // id: a guessed user id could be confirmed against it, and the
        // session id already links a session's reports. Dropped with the
        // rows already stored.
        // (18.16 has no DROP COLUMN IF EXISTS: see `already_applied`.)
        statements: &["ALTER TABLE rp_elections DROP COLUMN peer_id"],
    },
    Migration {
        version: 12,
        name: "dead letters keyed by stream and sequence",
        // A database made since has the column from migration 2: the only
        // way to it on a cluster, whose replicated tables cannot change
        // their key on 18.16.
        done_when: Some(
            "SELECT toUInt8(count() > 0) FROM system.columns WHERE database = currentDatabase() \
             AND table IN ('rp_dead_letters', 'rp_dead_letters_local') AND name = 'stream'",
        ),
        // A sequence alone merged two dead letters when the stream was made
        // anew (its sequences start at 1 again) or another stream was read:
        // a dead letter is known by both. (Rows from before keep an empty
        // stream.)
        statements: &["ALTER TABLE rp_dead_letters \
            ADD COLUMN stream String AFTER stream_seq, \
            MODIFY ORDER BY (stream_seq, stream)"],
    },
];

/// The statements a fresh database runs, in order: those of every
/// migration but the ones that only bring an older database to what an
/// earlier migration now makes (`done_when`), which `migrate` skips there.
/// What tests replay on servers of their own.
pub fn fresh_schema() -> impl Iterator<Item = &'static str> {
    MIGRATIONS
        .iter()
        .filter(|m| m.done_when.is_none())
        .flat_map(|m| m.statements.iter().copied())
}

/// Tables with a `received_at`/`minute` column and daily partitions that
/// retention applies to, with that column.
pub const RETAINED_TABLES: &[(&str, &str)] = &[
    ("rp_elections", "received_at"),
    ("rp_candidates", "received_at"),
    ("rp_rtt_minute", "minute"),
    ("rp_elections_minute", "minute"),
    ("rp_rtt_hour", "hour"),
    ("rp_elections_hour", "hour"),
    ("rp_decisions_hour", "hour"),
    ("rp_rtt_day", "day"),
    ("rp_elections_day", "day"),
    ("rp_moves_hour", "hour"),
    ("rp_report_keys", "received_at"),
];

/// Tables without daily partitions that retention applies to, with their
/// time column. Without TTL their expired rows are deleted (a mutation)
/// instead of dropped by partition: dead letters are few, and hold report
/// payloads that must not outlive the reports.
pub const RETAINED_UNPARTITIONED: &[(&str, &str)] = &[("rp_dead_letters", "first_seen")];

pub(crate) const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS rp_schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime
) ENGINE = ReplacingMergeTree() ORDER BY version";

/// Applies every migration newer than what the database has. Returns the
/// schema version now in place.
pub async fn migrate(client: &Client, layout: &Layout) -> anyhow::Result<u32> {
    migrate_to(client, layout, u32::MAX).await
}

/// Whether `statement` failed only because an earlier run, interrupted
/// before it recorded its migration, already did it: a column to drop that
/// is gone (code 44 on 18.16, 10 on current servers; the message is the
/// same, also inside a cluster's per-server errors), or one to add that is
/// there. Every other statement is written to be repeatable (`IF NOT
/// EXISTS`).
fn already_applied(statement: &str, error: &str) -> bool {
    statement.contains(" DROP COLUMN ") && error.contains("Cannot find column")
        || statement.contains(" ADD COLUMN ") && error.contains("already exists")
}

/// Applies the migrations newer than what the database has, up to `target`
/// (tests use it to make a database of an older schema).
pub async fn migrate_to(client: &Client, layout: &Layout, target: u32) -> anyhow::Result<u32> {
    check_layout(client, layout).await?;
    for statement in layout.statements(MIGRATIONS_TABLE)? {
        client
            .query(&statement)
            .execute()
            .await
            .map_err(|e| anyhow::anyhow!("cannot create rp_schema_migrations: {e}"))?;
    }
    let applied: u32 = client
        .query("SELECT max(version) FROM rp_schema_migrations")
        .fetch_one::<u32>()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the schema version: {e}"))?;
    for migration in MIGRATIONS
        .iter()
        .filter(|m| m.version > applied && m.version <= target)
    {
        let in_place = match migration.done_when {
            Some(done) => {
                let present: u8 = client.query(done).fetch_one().await.map_err(|e| {
                    anyhow::anyhow!("cannot check for migration {}: {e}", migration.version)
                })?;
                present == 1
            }
            None => false,
        };
        let statements = if in_place {
            tracing::info!(version = migration.version, "already in place");
            &[][..]
        } else {
            migration.statements
        };
        for single in statements {
            for statement in layout.statements(single)? {
                match client.query(&statement).execute().await {
                    Ok(()) => {}
                    Err(e) if already_applied(&statement, &e.to_string()) => {
                        tracing::info!(statement, "already applied by an interrupted run");
                    }
                    Err(e) => anyhow::bail!(
                        "migration {} ({}) failed: {e}",
                        migration.version,
                        migration.name
                    ),
                }
            }
        }
        client
            .query(
                "INSERT INTO rp_schema_migrations (version, name, applied_at) SELECT ?, ?, now()",
            )
            .bind(migration.version)
            .bind(migration.name)
            .execute()
            .await
            .map_err(|e| anyhow::anyhow!("cannot record migration {}: {e}", migration.version))?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied migration"
        );
    }
    Ok(MIGRATIONS
        .iter()
        .map(|m| m.version)
        .filter(|v| *v <= target)
        .max()
        .unwrap_or(0)
        .max(applied))
}

/// Refuses to migrate a database made for the other layout: a clustered
/// setup over single-server tables (or the reverse) would leave half the
/// schema in each, and moving rows between them is an operator's job.
async fn check_layout(client: &Client, layout: &Layout) -> anyhow::Result<()> {
    let engines: Vec<String> = client
        .query(
            "SELECT engine FROM system.tables \
             WHERE database = currentDatabase() AND name = 'rp_schema_migrations'",
        )
        .fetch_all()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the existing schema: {e}"))?;
    let Some(engine) = engines.first() else {
        return Ok(());
    };
    match (engine == "Distributed", layout.is_clustered()) {
        (true, false) => anyhow::bail!(
            "this database's schema is spread over a ClickHouse cluster: \
             pass its name with --clickhouse-cluster"
        ),
        (false, true) => anyhow::bail!(
            "this database has a single-server schema; --clickhouse-cluster does not convert it: \
             set up the cluster in a new database, or drop --clickhouse-cluster"
        ),
        _ => Ok(()),
    }
}

/// The newest schema version this build knows.
pub fn latest_version() -> u32 {
    MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The schema version the database has, without changing anything (a
/// collector's own user may not run DDL: `setup` migrates).
pub async fn applied_version(client: &Client) -> anyhow::Result<u32> {
    client
        .query("SELECT max(version) FROM rp_schema_migrations")
        .fetch_one::<u32>()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the schema version: {e}"))
}

/// The server's version.
pub async fn server_version(client: &Client) -> anyhow::Result<ServerVersion> {
    let text: String = client
        .query("SELECT version()")
        .fetch_one()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach ClickHouse: {e}"))?;
    ServerVersion::parse(&text)
        .ok_or_else(|| anyhow::anyhow!("unrecognised ClickHouse version {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let old = ServerVersion::parse("18.16.1").unwrap();
        let new = ServerVersion::parse("25.8.2.1").unwrap();
        assert!(!old.has_ttl() && new.has_ttl());
        assert!(!old.has_typed_row_binary() && new.has_typed_row_binary());
        assert!(ServerVersion::parse("garbage").is_none());
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
    }
}
