//! What the views show, read from ClickHouse.
//!
//! Every query is written for both Debian's ClickHouse 18.16 and current
//! ClickHouse (the tests run them on both): buckets are computed with
//! `intDiv` rather than `toStartOfInterval`, and every selected value is cast
//! to the exact type of its Rust field, because old servers cannot tell the
//! client the column types (plain RowBinary).
//!
//! Main views read the rollups — per minute, per hour when their chart
//! buckets are an hour or more, and whole UTC days from the per-day rollups
//! (where those hold the days completely) with the partial days at the edges
//! from the hourly ones. Each view also has a `raw` variant over the base
//! tables, which the tests and the benchmark compare against.

pub mod capacity;
pub mod matrix;
pub mod outcomes;
pub mod overview;
pub mod sessions;

use std::collections::HashMap;

use clickhouse::Client;
use rallypoint_service::clickhouse::ClickHouseArgs;

use crate::filters::{Filters, Window, sql_string};

#[derive(Clone)]
pub struct Db {
    client: Client,
    /// Every statement run, when recording (tests replay them on chDB).
    recorded: Option<std::sync::Arc<std::sync::Mutex<Vec<String>>>>,
    /// Rollup → the time from which it holds every report, once known.
    rollups_complete_from: std::sync::Arc<std::sync::Mutex<HashMap<String, u32>>>,
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct Coverage {
    records: u64,
    complete_from: u32,
}

impl Db {
    /// Data access as `login`; fails only on unusable TLS settings.
    pub fn new(login: &ClickHouseArgs) -> anyhow::Result<Self> {
        Ok(Db {
            client: login.client()?,
            recorded: None,
            rollups_complete_from: Default::default(),
        })
    }

    /// The time (unix seconds) from which the rollup `rollup` holds every
    /// report; `None` while the collector has not recorded it (a schema
    /// before the rollup's migration). A rollup made on a database that
    /// already had reports lacks the time before.
    pub async fn rollup_complete_from(&self, rollup: &str) -> Option<u32> {
        let known = self
            .rollups_complete_from
            .lock()
            .expect("coverage lock")
            .get(rollup)
            .copied();
        if known.is_some() {
            return known;
        }
        let coverage: Vec<Coverage> = self
            .rows(&format!(
                "SELECT toUInt64(count()) AS records, toUInt32(max(complete_from)) AS complete_from
                 FROM rp_rollup_coverage WHERE rollup = {}",
                sql_string(rollup)
            ))
            .await
            // No such table (a schema before migration 8): no coverage, and
            // the views read the hourly rollups or raw rows. Any other
            // failure is logged and treated the same way.
            .unwrap_or_else(|e| {
                // ClickHouse's UNKNOWN_TABLE is code 60 on old and new servers.
                if rallypoint_service::clickhouse::error_code(&e) != Some(60) {
                    tracing::warn!("cannot read the rollup coverage: {e:#}");
                }
                Vec::new()
            });
        let from = coverage.first().filter(|c| c.records > 0)?.complete_from;
        self.rollups_complete_from
            .lock()
            .expect("coverage lock")
            .insert(rollup.to_owned(), from);
        Some(from)
    }

    /// Keeps a copy of every statement from now on.
    pub fn recording(mut self) -> Self {
        self.recorded = Some(Default::default());
        self
    }

    /// The statements run so far (when recording).
    pub fn recorded(&self) -> Vec<String> {
        self.recorded
            .as_ref()
            .map(|r| r.lock().expect("recorder lock").clone())
            .unwrap_or_default()
    }

    /// Runs `sql` exactly as written.
    ///
    /// Filter values are in the text as literals made by [`sql_string`]
    /// (through [`Conditions::eq`] and the what-if question): ClickHouse
    /// 18.16 has no server-side query parameters (`{name:Type}` came in
    /// 19.x), and the clickhouse crate's `.bind()` would put the same kind of
    /// escaped literal into the text, only later. The text goes through
    /// `query_raw`, not `query`: `query` reads every `?` in the text as a
    /// bind placeholder — in a value too, so `isp=Ask?` failed as an unbound
    /// argument, `Ask??` silently became `Ask?` and `?fields` a column list.
    /// Binding instead would make every fragment's placeholders line up with
    /// the values in textual order across composed queries (a `UNION ALL` of
    /// two filtered tables, a subquery used twice), which is easy to get
    /// silently wrong; with `query_raw` nothing in the text is special to
    /// the client, and each value is escaped once, where it enters.
    pub async fn rows<T>(&self, sql: &str) -> anyhow::Result<Vec<T>>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        if let Some(recorded) = &self.recorded {
            recorded.lock().expect("recorder lock").push(sql.to_owned());
        }
        self.client
            .query_raw(sql)
            .fetch_all()
            .await
            .map_err(|e| anyhow::anyhow!("query failed: {e}\n{sql}"))
    }
}

/// Which tables a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Rollups (what the dashboard uses): per minute, or per hour when the
    /// chart's buckets are an hour or more, with whole days from the per-day
    /// rollups where they hold them.
    Rollup,
    /// Base tables (benchmark baseline).
    Raw,
}

const DAY: u32 = 86_400;
const HOUR: u32 = 3_600;

/// The rollup resolution for a window: `(table suffix, time column)`.
pub fn rollup(window: Window) -> (&'static str, &'static str) {
    if window.bucket >= HOUR {
        ("hour", "hour")
    } else {
        ("minute", "minute")
    }
}

/// The whole UTC days inside a window whose charts use hourly buckets, as
/// `[first, end)` in unix seconds, when there is at least one: month-long
/// aggregates read those from a per-day rollup and only the partial days at
/// the edges from the hourly one. Each hour row is counted once either way
/// (an hour row starts within `[from, to]`, like the hourly query alone).
/// This assumes the server's time zone is a whole number of hours from UTC
/// (UTC is what the deployment uses): the hourly rollups start their hours
/// with `toStartOfHour`, which follows it, while days are UTC.
pub fn whole_days(window: Window) -> Option<(u32, u32)> {
    if window.bucket < HOUR {
        return None;
    }
    let first = window.from.div_ceil(DAY) * DAY;
    // A day whose last hour row (day + 23 h) still starts within the window.
    let end = (window.to + HOUR) / DAY * DAY;
    (end > first).then_some((first, end))
}

/// [`whole_days`] for charts whose every bucket is whole days (a day
/// rollup row must fall in one bucket).
pub fn whole_day_buckets(window: Window) -> Option<(u32, u32)> {
    whole_days(window).filter(|_| window.bucket.is_multiple_of(DAY))
}

/// Of `days` (from [`whole_days`]), those the per-day rollup `{family}_day`
/// holds completely; the others are read from the hourly rollup.
pub async fn covered_days(db: &Db, family: &str, days: Option<(u32, u32)>) -> Option<(u32, u32)> {
    let (first, end) = days?;
    let complete_from = db.rollup_complete_from(&format!("{family}_day")).await?;
    // Recorded as a UTC midnight; rounded up in case it is not.
    let first = first.max(complete_from.div_ceil(DAY) * DAY);
    (end > first).then_some((first, end))
}

/// Where a rollup query reads its rows: `FROM …` (with its `WHERE`) and the
/// name of the time column there.
///
/// With `days` (from [`whole_days`]), the rows are the per-day rollup
/// (`{family}_day`) for those days and the hourly one (`{family}_hour`) for
/// the rest of the window, under one time column `at`; both tables must have
/// `columns` with the same state types. Otherwise one table at the
/// resolution [`rollup`] picks. `conditions` gives the filters for a time
/// column and a window.
pub fn rollup_rows(
    family: &str,
    columns: &str,
    window: Window,
    days: Option<(u32, u32)>,
    conditions: impl Fn(&str, Window) -> Conditions,
) -> (String, &'static str) {
    match days {
        Some((first, end)) => {
            let whole = Window {
                from: first,
                to: end - 1,
                ..window
            };
            let from = format!(
                "(SELECT day AS at, {columns} FROM {family}_day WHERE {}
                  UNION ALL
                  SELECT hour AS at, {columns} FROM {family}_hour WHERE {})",
                conditions("day", whole).sql(),
                conditions("hour", window)
                    .and(&format!(
                        "(hour < toDateTime({first}) OR hour >= toDateTime({end}))"
                    ))
                    .sql(),
            );
            (from, "at")
        }
        None => {
            let (resolution, time) = rollup(window);
            (
                format!(
                    "{family}_{resolution} WHERE {}",
                    conditions(time, window).sql()
                ),
                time,
            )
        }
    }
}

/// A named series of (unix seconds, value) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(u32, f64)>,
}

/// Groups (t, key, value) rows into one series per key, keys sorted.
pub fn series(rows: impl IntoIterator<Item = (u32, String, f64)>) -> Vec<Series> {
    let mut by_key: std::collections::BTreeMap<String, Vec<(u32, f64)>> = Default::default();
    for (t, key, value) in rows {
        by_key.entry(key).or_default().push((t, value));
    }
    by_key
        .into_iter()
        .map(|(name, mut points)| {
            points.sort_by_key(|p| p.0);
            Series { name, points }
        })
        .collect()
}

/// `WHERE` conditions built from filters, for a table's column names.
pub struct Conditions(Vec<String>);

impl Conditions {
    /// Time range on `time_column`, and synthetic exclusion.
    pub fn new(time_column: &str, window: Window, filters: &Filters) -> Self {
        let mut c = vec![
            format!("{time_column} >= toDateTime({})", window.from),
            format!("{time_column} <= toDateTime({})", window.to),
        ];
        if !filters.include_synthetic() {
            c.push("synthetic = 0".into());
        }
        Conditions(c)
    }

    /// Adds `column = value` when the filter is set.
    pub fn eq(mut self, column: &str, value: &Option<String>) -> Self {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            self.0.push(format!("{column} = {}", sql_string(value)));
        }
        self
    }

    pub fn and(mut self, condition: &str) -> Self {
        self.0.push(condition.to_owned());
        self
    }

    pub fn sql(&self) -> String {
        self.0.join(" AND ")
    }
}

/// `(SELECT {columns} FROM {table} WHERE {conditions})`: rows filtered
/// before an aggregate over them. A query that selects `any(isp) AS isp`
/// cannot filter on `isp` in its own `WHERE`: ClickHouse resolves the name
/// to the alias there, an aggregate, and refuses the query.
pub fn filtered(table: &str, columns: &str, conditions: &Conditions) -> String {
    format!("(SELECT {columns} FROM {table} WHERE {})", conditions.sql())
}

/// Bucket expression: `column` rounded down to `bucket` seconds, as unix seconds.
pub fn bucket(column: &str, bucket: u32) -> String {
    format!("toUInt32(intDiv(toUInt32({column}), {bucket}) * {bucket})")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u32 = 86_400;
    const MIDNIGHT: u32 = 20_000 * DAY;

    fn window(from: u32, to: u32, bucket: u32) -> Window {
        Window { from, to, bucket }
    }

    #[test]
    fn whole_days_cover_only_days_whose_every_hour_is_in_the_window() {
        // Midnight to midnight: every day, and the hour row starting at `to`
        // is left to the hourly rollup.
        assert_eq!(
            whole_days(window(MIDNIGHT, MIDNIGHT + 7 * DAY, 3_600)),
            Some((MIDNIGHT, MIDNIGHT + 7 * DAY))
        );
        // 19:00 to 19:00: the partial first and last days are hours.
        let from = MIDNIGHT + 19 * 3_600;
        assert_eq!(
            whole_days(window(from, from + 30 * DAY, DAY)),
            Some((MIDNIGHT + DAY, MIDNIGHT + 30 * DAY))
        );
        // A day ending at 23:00 still has all 24 hour rows (the last starts at 23:00).
        assert_eq!(
            whole_days(window(MIDNIGHT, MIDNIGHT + 23 * 3_600, 3_600)),
            Some((MIDNIGHT, MIDNIGHT + DAY))
        );
        assert_eq!(
            whole_days(window(MIDNIGHT, MIDNIGHT + 22 * 3_600, 3_600)),
            None
        );
    }

    #[test]
    fn short_windows_never_read_days() {
        assert_eq!(whole_days(window(MIDNIGHT, MIDNIGHT + DAY, 900)), None);
    }
}
