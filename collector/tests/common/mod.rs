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
