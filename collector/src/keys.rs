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

/// Reports per lookup query (about 80 bytes of SQL each: far below
/// ClickHouse's 256 KiB `max_query_size`).
const REPORTS_PER_QUERY: usize = 2000;

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
    let mut found: HashMap<[u8; 16], u32> = HashMap::new();
    for chunk in reports.chunks(REPORTS_PER_QUERY) {
        let seconds: BTreeSet<u32> = chunk.iter().map(client_second).collect();
        let ids: Vec<[u8; 16]> = chunk.iter().map(|r| r.election.report_id).collect();
        let rows: Vec<FirstSeen> = client
            .query(&lookup_sql(seconds, &ids))
            .fetch_all()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read report keys: {e}"))?;
        for row in rows {
            found
                .entry(row.report_id)
                .and_modify(|first| *first = (*first).min(row.received_at))
                .or_insert(row.received_at);
        }
    }
    Ok(found)
}

/// The keys of `ids` filed under `seconds`. The seconds narrow the read to
/// slices of the sorting key; the ids keep a crowded second (many reports
/// claiming one clock reading) from coming back whole.
pub fn lookup_sql(seconds: impl IntoIterator<Item = u32>, ids: &[[u8; 16]]) -> String {
    format!(
        "SELECT report_id, received_at FROM rp_report_keys WHERE {}",
        in_seconds_with_ids("client_second", seconds, ids)
    )
}

/// `{column} IN (seconds) AND report_id IN (ids)`: how every id check here
/// asks ClickHouse — the seconds are a sorting-key prefix, so only their
/// slices are read; the ids are compared as they are stored.
pub fn in_seconds_with_ids<'a>(
    column: &str,
    seconds: impl IntoIterator<Item = u32>,
    ids: impl IntoIterator<Item = &'a [u8; 16]>,
) -> String {
    let seconds = seconds
        .into_iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "{column} IN ({seconds}) AND report_id IN ({})",
        id_literals(ids)
    )
}

/// Report ids as SQL string literals (`'\xAB…'`, 66 bytes each), to compare
/// with a `FixedString(16)` column as they are — no function on every row.
pub fn id_literals<'a>(ids: impl IntoIterator<Item = &'a [u8; 16]>) -> String {
    use std::fmt::Write as _;
    let mut sql = String::new();
    for id in ids {
        if !sql.is_empty() {
            sql.push(',');
        }
        sql.push('\'');
        for byte in id {
            let _ = write!(sql, "\\x{byte:02X}");
        }
        sql.push('\'');
    }
    sql
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_escaped_byte_for_byte() {
        let mut id = [0u8; 16];
        id[0] = b'\'';
        id[15] = 0xff;
        assert_eq!(
            id_literals(&[id, [0xab; 16]]),
            format!(
                "'\\x27{}\\xFF','{}'",
                "\\x00".repeat(14),
                "\\xAB".repeat(16)
            )
        );
        assert_eq!(id_literals(&[]), "");
    }
}
