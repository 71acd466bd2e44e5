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
//!
//! **How a batch asks.** Naming each id costs ClickHouse 18.16 about 8 µs to
//! parse and plan (10 000 ids: 86 ms, even for a query that reads nothing),
//! while reading a whole second back costs under 0.1 µs a row (100 000 rows:
//! 8 ms). Most of a live batch was made in the few seconds just before it
//! arrived, and those seconds hold about what the fleet reports per second:
//! they are asked for whole, and the ids intersected in Rust. The rest — a
//! client whose clock is off, a few reports in a second of their own, in
//! which the table may hold thousands of other reports — is asked by id.
//! A second is asked whole when it holds at least 1/[`WHOLE_SECOND_SHARE`]
//! of the batch and [`WHOLE_SECOND_MIN`] reports; if the whole seconds come
//! back larger than [`WHOLE_SECONDS_ROWS_MAX`] (a second crowded by a
//! cohort of wrong clocks), their reports are asked by id after all.
//! For 200 000 reports written in batches of 10 000, ClickHouse's query log
//! put the lookups at 1 318 ms (a third of all the store's query time)
//! before, 83 ms after (`rallypoint bench ingest --only-clickhouse`,
//! BENCHMARKS.md).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

use crate::rows::ReportRows;

/// Reports per lookup query (about 80 bytes of SQL each: far below
/// ClickHouse's 256 KiB `max_query_size`).
const REPORTS_PER_QUERY: usize = 2000;
/// A client second holding at least this share of a batch (1/n) is asked for
/// whole; and never one with fewer than [`WHOLE_SECOND_MIN`] of its reports.
const WHOLE_SECOND_SHARE: usize = 32;
const WHOLE_SECOND_MIN: usize = 64;
/// Most key rows read back for the whole seconds of one batch (20 bytes
/// each); beyond it those reports are asked by id.
pub const WHOLE_SECONDS_ROWS_MAX: usize = 400_000;

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
    first_seen_reading_at_most(client, reports, WHOLE_SECONDS_ROWS_MAX).await
}

/// [`first_seen`], reading at most `rows_max` key rows of whole seconds
/// (tests lower it to see the fallback).
pub async fn first_seen_reading_at_most(
    client: &Client,
    reports: &[ReportRows],
    rows_max: usize,
) -> anyhow::Result<HashMap<[u8; 16], u32>> {
    let mut found: HashMap<[u8; 16], u32> = HashMap::new();
    let whole = whole_seconds(reports);
    let mut by_id: Vec<&ReportRows> = reports
        .iter()
        .filter(|r| !whole.contains(&client_second(r)))
        .collect();
    if !whole.is_empty() {
        let rows: Vec<FirstSeen> = client
            .query(&format!(
                "SELECT report_id, received_at FROM rp_report_keys \
                 WHERE client_second IN ({}) LIMIT {}",
                seconds_list(whole.iter().copied()),
                rows_max + 1
            ))
            .fetch_all()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read report keys: {e}"))?;
        if rows.len() > rows_max {
            tracing::debug!(
                seconds = whole.len(),
                "crowded client seconds: asking for their reports by id"
            );
            by_id = reports.iter().collect();
        } else {
            let wanted: HashSet<[u8; 16]> = reports
                .iter()
                .filter(|r| whole.contains(&client_second(r)))
                .map(|r| r.election.report_id)
                .collect();
            record(
                &mut found,
                rows.into_iter()
                    .filter(|row| wanted.contains(&row.report_id)),
            );
        }
    }
    for chunk in by_id.chunks(REPORTS_PER_QUERY) {
        let seconds: BTreeSet<u32> = chunk.iter().map(|r| client_second(r)).collect();
        let ids: Vec<[u8; 16]> = chunk.iter().map(|r| r.election.report_id).collect();
        let rows: Vec<FirstSeen> = client
            .query(&lookup_sql(seconds, &ids))
            .fetch_all()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read report keys: {e}"))?;
        record(&mut found, rows);
    }
    Ok(found)
}

/// The client seconds of `reports` worth reading whole (see the module doc).
fn whole_seconds(reports: &[ReportRows]) -> BTreeSet<u32> {
    let mut per_second: BTreeMap<u32, usize> = BTreeMap::new();
    for report in reports {
        *per_second.entry(client_second(report)).or_default() += 1;
    }
    let least = (reports.len() / WHOLE_SECOND_SHARE).max(WHOLE_SECOND_MIN);
    per_second
        .into_iter()
        .filter(|(_, count)| *count >= least)
        .map(|(second, _)| second)
        .collect()
}

/// Keeps the earliest receive second of each report (a key written twice).
fn record(found: &mut HashMap<[u8; 16], u32>, rows: impl IntoIterator<Item = FirstSeen>) {
    for row in rows {
        found
            .entry(row.report_id)
            .and_modify(|first| *first = (*first).min(row.received_at))
            .or_insert(row.received_at);
    }
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
    format!(
        "{column} IN ({}) AND report_id IN ({})",
        seconds_list(seconds),
        id_literals(ids)
    )
}

/// Seconds as an SQL list (`1,2,3`).
pub fn seconds_list(seconds: impl IntoIterator<Item = u32>) -> String {
    seconds
        .into_iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",")
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
