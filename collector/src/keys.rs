//! Which reports are stored, and when their first copy was received: the
//! `rp_report_keys` table, one row per report id.
//!
//! A report can reach the collector more than once with a different receive
//! time: a client that lost its acks resends through another relay or region,
//! and after JetStream's duplicate window (or across a gateway partition) the
//! copy is a new message, enriched anew. Exactly once therefore needs a key
//! that does not depend on the copy. The report id is one, but a table ordered
//! by random ids is expensive to ask (every id a different granule of every
//! part). So the key table is ordered by **the second of the report's own
//! clock** (`client_time_ms`, which every copy carries unchanged) and then the
//! id: a batch asks for the few client seconds its reports were made in —
//! a contiguous slice of the table, like the receive-second check the store
//! does on the base tables — and intersects in Rust. A client with a wrong
//! clock only adds its own second to the list; it cannot make two copies look
//! different, since both carry the same clock reading.
//!
//! The row also holds the **first copy's receive second**, which becomes the
//! `received_at` of whatever is stored for the report. A later copy thus lands
//! in the same rows, minutes and partitions as the first: the store's
//! receive-second checks find the stored rows, the base tables'
//! `ReplacingMergeTree` keys match, and no rollup sees the report twice.
//!
//! A key is written **before** the report's rows (a claim). A crash between
//! the two leaves a key without rows; the redelivered message (or any other
//! copy) finds the key, takes its receive second and stores the rows then —
//! nothing is lost and nothing doubled. Keys written twice (two claims at the
//! same moment, or migrations replayed) are harmless: readers take the
//! earliest receive second.
//!
//! Partitions follow the first receive day, so retention drops keys with the
//! rows they describe (see `schema::RETAINED_TABLES`).

use std::collections::{BTreeSet, HashMap, HashSet};

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

use crate::rows::ReportRows;

/// Client seconds per lookup query (11 bytes of SQL each).
const SECONDS_PER_QUERY: usize = 2000;

#[derive(Debug, Clone, Row, Serialize, Deserialize, PartialEq)]
pub struct KeyRow {
    pub client_second: u32,
    pub report_id: [u8; 16],
    pub received_at: u32,
}

#[derive(Row, Deserialize)]
struct FirstSeen {
    report_id: [u8; 16],
    received_at: u32,
}

/// The client second a report is filed under: the same for every copy.
/// Matches the backfill of migration 10 (`intDiv(client_time_ms, 1000)`,
/// capped to `UInt32`).
pub fn client_second(report: &ReportRows) -> u32 {
    u32::try_from(report.election.client_time_ms / 1000).unwrap_or(u32::MAX)
}

/// The first receive second of every report of `reports` that already has a
/// key.
pub async fn first_seen(
    client: &Client,
    reports: &[ReportRows],
) -> anyhow::Result<HashMap<[u8; 16], u32>> {
    let wanted: HashSet<[u8; 16]> = reports.iter().map(|r| r.election.report_id).collect();
    let seconds: Vec<u32> = reports
        .iter()
        .map(client_second)
        .collect::<BTreeSet<u32>>()
        .into_iter()
        .collect();
    let mut found: HashMap<[u8; 16], u32> = HashMap::new();
    for chunk in seconds.chunks(SECONDS_PER_QUERY) {
        let rows: Vec<FirstSeen> = client
            .query(&lookup_sql(chunk))
            .fetch_all()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read report keys: {e}"))?;
        for row in rows {
            if wanted.contains(&row.report_id) {
                found
                    .entry(row.report_id)
                    .and_modify(|first| *first = (*first).min(row.received_at))
                    .or_insert(row.received_at);
            }
        }
    }
    Ok(found)
}

/// Every key filed under `seconds` (a slice of the table's sorting key).
pub fn lookup_sql(seconds: &[u32]) -> String {
    let list = seconds
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    format!("SELECT report_id, received_at FROM rp_report_keys WHERE client_second IN ({list})")
}

/// The key rows claiming `reports` (each id once) received when they say.
pub fn claims<'a>(reports: impl IntoIterator<Item = &'a ReportRows>) -> Vec<KeyRow> {
    let mut seen = HashSet::new();
    reports
        .into_iter()
        .filter(|r| seen.insert(r.election.report_id))
        .map(|r| KeyRow {
            client_second: client_second(r),
            report_id: r.election.report_id,
            received_at: r.election.received_at,
        })
        .collect()
}
