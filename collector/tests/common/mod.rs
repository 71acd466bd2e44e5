//! Helpers shared by the collector's tests (each test file includes this
//! module with `mod common;`).

use rallypoint_collector::rows::ReportRows;
use rallypoint_collector::store::Store;
use rallypoint_protocol::v1::ElectionReport;
use rallypoint_testkit::clickhouse::{ClickHouseRole, ClickHouseServer};

/// The collector's store over `server`, opened as the administrator (schema
/// migrated), as `rallypoint-collector setup` would.
pub async fn admin_store(server: &ClickHouseServer, retention_days: u32) -> Store {
    Store::open(&server.login(ClickHouseRole::Admin).args(), retention_days)
        .await
        .expect("the administrator opens the store")
}

/// `reports` as the relay of `region` enriches them (ASN 64500, ISP
/// "Example", US), received `spread_seconds` apart from `first_ms` on: the
/// rows the collector stores.
pub fn received(
    reports: &[ElectionReport],
    region: &str,
    first_ms: u64,
    spread_seconds: u64,
) -> Vec<ReportRows> {
    reports
        .iter()
        .enumerate()
        .map(|(i, report)| {
            let enriched = rallypoint_protocol::v1::EnrichedElectionReport {
                report: Some(report.clone()),
                relay_id: format!("{region}-ws-0"),
                relay_region: region.into(),
                received_ms: first_ms + i as u64 * spread_seconds * 1000,
                asn: 64500,
                isp: "Example".into(),
                country: "US".into(),
            };
            rallypoint_collector::rows::rows(&rallypoint_protocol::encode(&enriched))
                .expect("a generated report is valid")
        })
        .collect()
}

/// Every rollup's counts per time bucket on `server` itself, as text:
/// `countMerge` of count states, `sum` of summed counts. On a cluster
/// member these are its local (replicated) rollups, named as the schema
/// names them.
pub async fn rollup_counts(server: &ClickHouseServer) -> Vec<(String, String)> {
    let tables = server
        .query(
            "SELECT name FROM system.tables WHERE database = currentDatabase() \
             AND (engine LIKE '%AggregatingMergeTree' OR engine LIKE '%SummingMergeTree') \
             ORDER BY name",
        )
        .await
        .unwrap();
    let mut counts = Vec::new();
    for table in tables.lines() {
        let columns = server
            .query(&format!(
                "SELECT name, type FROM system.columns \
                 WHERE database = currentDatabase() AND table = '{table}'"
            ))
            .await
            .unwrap();
        let column = |wanted: &[&str]| {
            columns.lines().find_map(|l| {
                let (name, kind) = l.split_once('\t')?;
                wanted
                    .contains(&name)
                    .then(|| (name.to_owned(), kind.to_owned()))
            })
        };
        let (time, _) = column(&["minute", "hour", "day"]).expect("a time column");
        let (count, kind) = column(&["elections", "measurements"]).expect("a count column");
        let aggregate = if kind.starts_with("AggregateFunction") {
            format!("countMerge({count})")
        } else {
            format!("sum({count})")
        };
        let text = server
            .query(&format!(
                "SELECT {time}, {aggregate} FROM {table} GROUP BY {time} ORDER BY {time}"
            ))
            .await
            .unwrap();
        let name = table.strip_suffix("_local").unwrap_or(table);
        counts.push((name.to_owned(), text));
    }
    counts
}

/// Damages the rollups on `server` (`suffix`: `""` on one server, `"_local"`
/// on a cluster member, where the damage replicates): `rp_rtt_hour` loses
/// every day that has reports, `rp_moves_hour` is counted twice. Returns
/// those days, first to last, as `rebuild-rollups` takes them
/// (`YYYY-MM-DD`).
pub async fn damage_rollups(server: &ClickHouseServer, suffix: &str) -> Vec<String> {
    let days: Vec<String> = server
        .query(&format!(
            "SELECT DISTINCT toString(toYYYYMMDD(received_at)) AS day \
             FROM rp_elections{suffix} ORDER BY day"
        ))
        .await
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    for day in &days {
        server
            .query(&format!(
                "ALTER TABLE rp_rtt_hour{suffix} DROP PARTITION {day}"
            ))
            .await
            .unwrap();
    }
    server
        .query(&format!(
            "INSERT INTO rp_moves_hour{suffix} SELECT * FROM rp_moves_hour{suffix}"
        ))
        .await
        .unwrap();
    days.iter()
        .map(|d| format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..]))
        .collect()
}
