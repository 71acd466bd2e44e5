//! The schema on current ClickHouse (chDB, in-process): every migration, the
//! TTL statements old servers skip, and the rollups fed by their views.

use rallypoint_collector::keys::lookup_sql;
use rallypoint_collector::layout::Layout;
use rallypoint_collector::schema::{MIGRATIONS, RETAINED_TABLES, fresh_schema};
use serde_json::json;

#[test]
fn the_schema_and_rollups_work_on_modern_clickhouse() {
    // A fresh database; the migrations only an older one runs are parsed.
    let ddl: Vec<&str> = fresh_schema().collect();
    let upgrades: Vec<&str> = MIGRATIONS
        .iter()
        .filter(|m| m.done_when.is_some())
        .flat_map(|m| m.statements.iter().copied())
        .collect();
    let ttl: Vec<String> = RETAINED_TABLES
        .iter()
        .map(|(table, column)| {
            format!("ALTER TABLE {table} MODIFY TTL {column} + toIntervalDay(90)")
        })
        .collect();
    let candidate = |id: &str, idx: u8, region: &str, rtt: u32| {
        format!(
            "INSERT INTO rp_candidates (report_id, received_at, idx, region, transport, samples, rtt_median_us, country, isp) \
             VALUES ('{id}', toDateTime('2026-11-23 10:00:30'), {idx}, '{region}', 'webtransport', 5, {rtt}, 'SG', 'Singtel')"
        )
    };
    let backfill = MIGRATIONS
        .iter()
        .find(|m| m.version == 10)
        .expect("the report-key migration")
        .statements[1];
    let spec = json!({
        "parse": upgrades,
        "ddl": ddl,
        "ttl": ttl,
        "seed": [
            candidate("aaaaaaaaaaaaaaaa", 0, "singapore", 40000),
            candidate("aaaaaaaaaaaaaaaa", 1, "us-east", 250000),
            candidate("bbbbbbbbbbbbbbbb", 0, "singapore", 42000),
            "INSERT INTO rp_elections (report_id, received_at, client_time_ms, winner_region, decision_ms, country, isp) \
             VALUES ('aaaaaaaaaaaaaaaa', toDateTime('2026-11-23 10:00:30'), 1795428029750, 'singapore', 600, 'SG', 'Singtel')",
            // The key backfill of an existing deployment, now with a report to file.
            backfill,
        ],
        "checks": [
            {
                "name": "rtt rollup per region",
                "sql": "SELECT region, countMerge(measurements), quantilesMerge(0.5, 0.9, 0.95, 0.99)(rtt)[1] \
                        FROM rp_rtt_minute GROUP BY region ORDER BY region",
                "expect": [["singapore", "2", "41000"], ["us-east", "1", "250000"]],
            },
            {
                "name": "elections rollup",
                "sql": "SELECT winner_region, countMerge(elections) FROM rp_elections_minute GROUP BY winner_region",
                "expect": [["singapore", "1"]],
            },
            {
                "name": "decision-time histogram rollup",
                "sql": "SELECT lower_ms, sum(elections) FROM rp_decisions_hour \
                        WHERE country = 'SG' GROUP BY lower_ms",
                "expect": [["600", "1"]],
            },
            {
                "name": "report keys backfilled, filed by the report's clock, looked up by client second",
                "sql": format!("SELECT report_id, toString(received_at) FROM ({})", lookup_sql([1795428029, 1795428030], &[*b"aaaaaaaaaaaaaaaa", *b"bbbbbbbbbbbbbbbb"])),
                "expect": [["aaaaaaaaaaaaaaaa", "2026-11-23 10:00:30"]],
            },
            {
                "name": "ttl is set",
                "sql": "SELECT count() FROM system.tables WHERE database = 'rp' AND create_table_query LIKE '%TTL%'",
                "expect": [[RETAINED_TABLES.len().to_string()]],
            },
        ],
    });
    match rallypoint_testkit::chdb::check(&spec) {
        Ok(stdout) => eprintln!("{stdout}"),
        Err(e) => panic!("chDB check failed:\n{e}"),
    }
}

/// The clustered schema (`--clickhouse-cluster`) needs ZooKeeper and a
/// cluster, which an in-process engine lacks: current ClickHouse parses
/// every statement of it (the 18.16 cluster in `cluster.rs` runs them).
#[test]
fn the_clustered_schema_parses_on_modern_clickhouse() {
    let layout = Layout::Cluster {
        name: "rallypoint".into(),
        database: "telemetry".into(),
    };
    let statements: Vec<String> = MIGRATIONS
        .iter()
        .flat_map(|m| m.statements.iter())
        .flat_map(|statement| layout.statements(statement).unwrap())
        .collect();
    assert!(statements.len() > MIGRATIONS.len() * 2);
    let spec = json!({ "parse": statements });
    if let Err(failure) = rallypoint_testkit::chdb::check(&spec) {
        panic!("{failure}");
    }
}
