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
//! while reading key rows back costs under 0.1 µs a row (100 000 rows of two
//! whole seconds: 8 ms). So a batch first counts the keys the table holds in
//! each of its client seconds (one cheap query on the sorting key's prefix),
//! then, second by second ([`plan`]):
//! * a second holding no key: none of its reports is stored — nothing to ask;
//! * a second holding at most [`WHOLE_ROWS_PER_REPORT`] keys per report of the
//!   batch in it: read whole and intersected in Rust — most of a live batch,
//!   made in the few seconds before it arrived;
//! * any other second (a client whose clock is off, alone in a second the
//!   table holds thousands of other reports in; a second crowded by a cohort
//!   of wrong clocks): its reports are named by id, as before.
//!
//! The whole seconds of one batch read at most [`WHOLE_SECONDS_ROWS_MAX`]
//! rows, the cheapest per report first; the rest are named by id. Rows are
//! streamed and only the batch's ids kept. For 200 000 reports written in
//! batches of 10 000, ClickHouse's query log put the lookups at 1 318 ms (a
//! third of all the store's query time) when every id was named
//! (`rallypoint bench ingest --only-clickhouse`, BENCHMARKS.md).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

use crate::rows::ReportRows;

/// Reports per lookup query (about 80 bytes of SQL each: far below
/// ClickHouse's 256 KiB `max_query_size`).
const REPORTS_PER_QUERY: usize = 2000;
/// A second is read whole when it holds at most this many keys per report
/// of the batch in it: reading a row costs about 1/100 of naming an id, so
/// whole seconds stay at least twice as cheap.
pub const WHOLE_ROWS_PER_REPORT: u64 = 50;
/// Most key rows read back for the whole seconds of one batch (20 bytes
/// each, streamed); the seconds beyond it are named by id.
pub const WHOLE_SECONDS_ROWS_MAX: u64 = 400_000;

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
/// (tests lower it to see seconds named by id).
pub async fn first_seen_reading_at_most(
    client: &Client,
    reports: &[ReportRows],
    rows_max: u64,
) -> anyhow::Result<HashMap<[u8; 16], u32>> {
    let mut found: HashMap<[u8; 16], u32> = HashMap::new();
    if reports.is_empty() {
        return Ok(found);
    }
    let mut in_batch: BTreeMap<u32, u64> = BTreeMap::new();
    for report in reports {
        *in_batch.entry(client_second(report)).or_default() += 1;
    }
    let stored: Vec<(u32, u64)> = client
        .query(&format!(
            "SELECT client_second, count() FROM rp_report_keys \
             WHERE client_second IN ({}) GROUP BY client_second",
            seconds_list(in_batch.keys().copied())
        ))
        .fetch_all()
        .await
        .map_err(|e| anyhow::anyhow!("cannot count report keys: {e}"))?;
    let plan = plan(&in_batch, &stored.into_iter().collect(), rows_max);

    if !plan.whole.is_empty() {
        let wanted: HashSet<[u8; 16]> = reports
            .iter()
            .filter(|r| plan.whole.contains(&client_second(r)))
            .map(|r| r.election.report_id)
            .collect();
        let mut rows = client
            .query(&format!(
                "SELECT report_id, received_at FROM rp_report_keys WHERE client_second IN ({})",
                seconds_list(plan.whole.iter().copied())
            ))
            .fetch::<FirstSeen>()
            .map_err(|e| anyhow::anyhow!("cannot read report keys: {e}"))?;
        while let Some(row) = rows
            .next()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read report keys: {e}"))?
        {
            if wanted.contains(&row.report_id) {
                record(&mut found, [row]);
            }
        }
    }
    let by_id: Vec<&ReportRows> = reports
        .iter()
        .filter(|r| plan.by_id.contains(&client_second(r)))
        .collect();
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

/// How a batch's lookup asks, by client second; seconds in neither set hold
/// no key, so none of their reports is stored.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Read whole and intersected with the batch's ids.
    pub whole: BTreeSet<u32>,
    /// Their reports named by id.
    pub by_id: BTreeSet<u32>,
}

/// Decides, from the batch's reports per client second (`in_batch`) and the
/// keys the table holds per second (`stored`, absent = none), which seconds
/// are read whole (see the module doc): at most `rows_max` rows in all, the
/// seconds with the fewest stored keys per report of the batch first.
pub fn plan(in_batch: &BTreeMap<u32, u64>, stored: &HashMap<u32, u64>, rows_max: u64) -> Plan {
    let mut plan = Plan::default();
    let mut cheap: Vec<(u32, u64, u64)> = Vec::new();
    for (&second, &reports) in in_batch {
        match stored.get(&second).copied().unwrap_or(0) {
            0 => {}
            keys if keys <= WHOLE_ROWS_PER_REPORT * reports => cheap.push((second, keys, reports)),
            _ => {
                plan.by_id.insert(second);
            }
        }
    }
    // Cheapest per report first: keys / reports, compared without division.
    cheap.sort_by(|a, b| {
        (u128::from(a.1) * u128::from(b.2)).cmp(&(u128::from(b.1) * u128::from(a.2)))
    });
    let mut rows = 0;
    for (second, keys, _) in cheap {
        if rows + keys <= rows_max {
            rows += keys;
            plan.whole.insert(second);
        } else {
            plan.by_id.insert(second);
        }
    }
    plan
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

    fn plan_of(in_batch: &[(u32, u64)], stored: &[(u32, u64)], rows_max: u64) -> Plan {
        plan(
            &in_batch.iter().copied().collect(),
            &stored.iter().copied().collect(),
            rows_max,
        )
    }

    fn seconds(list: &[u32]) -> BTreeSet<u32> {
        list.iter().copied().collect()
    }

    #[test]
    fn seconds_without_keys_are_not_asked_and_busy_ones_are_read_whole() {
        // 10: fresh, no key; 11: 4 000 keys for 100 reports; 12: 2 keys for 1.
        let plan = plan_of(
            &[(10, 50), (11, 100), (12, 1)],
            &[(11, 4_000), (12, 2)],
            400_000,
        );
        assert_eq!(plan.whole, seconds(&[11, 12]));
        assert!(plan.by_id.is_empty());
    }

    #[test]
    fn a_second_with_many_keys_per_report_is_named_by_id() {
        // One report in a second holding 5 000 keys (a wrong clock landing in
        // a busy past second): 51 keys per report is already too many.
        let plan = plan_of(&[(20, 1), (21, 2)], &[(20, 5_000), (21, 102)], 400_000);
        assert!(plan.whole.is_empty());
        assert_eq!(plan.by_id, seconds(&[20, 21]));
        let at_the_limit = plan_of(&[(21, 2)], &[(21, 100)], 400_000);
        assert_eq!(at_the_limit.whole, seconds(&[21]));
    }

    #[test]
    fn whole_seconds_stop_at_the_row_budget_cheapest_per_report_first() {
        // 30: 3 000 keys / 100 reports (30 each); 31: 1 000 / 100 (10 each);
        // 32: 2 000 / 50 (40 each). A budget of 3 500 rows takes 31, then 32
        // would make 3 000, then 30 would make 6 000: by id.
        let plan = plan_of(
            &[(30, 100), (31, 100), (32, 50)],
            &[(30, 3_000), (31, 1_000), (32, 2_000)],
            3_500,
        );
        assert_eq!(plan.whole, seconds(&[31, 32]));
        assert_eq!(plan.by_id, seconds(&[30]));
        let nothing_whole = plan_of(&[(30, 100)], &[(30, 3_000)], 0);
        assert_eq!(nothing_whole.by_id, seconds(&[30]));
    }

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
