//! Region × ISP: the RTT every client measured to every region (not only the
//! one it picked), and the share of its probes lost, by ISP — where a region
//! serves an ISP well or badly, slowly or lossily.

use clickhouse::Row;
use serde::Deserialize;

use super::{
    Conditions, Db, Series, Source, bucket, covered_days, rollup_rows, series, whole_day_buckets,
    whole_days,
};
use crate::filters::{Filters, Window};

#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct Cell {
    pub region: String,
    pub isp: String,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub samples: u64,
    /// Lost probes as a share of all probes sent (%).
    pub loss_pct: f64,
}

/// Quantile, count, answered-probe and lost-probe expressions over the
/// rollup states or the raw rows.
fn aggregates(source: Source) -> [&'static str; 4] {
    match source {
        Source::Rollup => [
            "quantilesMerge(0.5, 0.9, 0.95, 0.99)(rtt)",
            "countMerge(measurements)",
            "sumMerge(probes)",
            "sumMerge(lost)",
        ],
        Source::Raw => [
            "quantiles(0.5, 0.9, 0.95, 0.99)(rtt_median_us)",
            "count()",
            "sum(samples)",
            "sum(lost)",
        ],
    }
}

fn conditions(time: &str, window: Window, filters: &Filters, source: Source) -> Conditions {
    let c = Conditions::new(time, window, filters)
        .eq("country", &filters.country)
        .eq("transport", &filters.transport)
        .and("shadow = 0");
    match source {
        Source::Raw => c.and("samples > 0"),
        Source::Rollup => c,
    }
}

/// The rows the cells aggregate: `FROM …` (with its `WHERE`). Windows of a
/// week or more merge whole days from `rp_rtt_day` and the partial days at
/// the edges from `rp_rtt_hour` — over 30 days, ~54 states per cell instead
/// of 720.
fn cell_rows(filters: &Filters, now: u32, source: Source, days: Option<(u32, u32)>) -> String {
    let window = filters.window(now);
    let conditions = |time: &str, window: Window| conditions(time, window, filters, source);
    match source {
        Source::Raw => format!(
            "rp_candidates WHERE {}",
            conditions("received_at", window).sql()
        ),
        Source::Rollup => {
            rollup_rows(
                "rp_rtt",
                "region, isp, rtt, measurements, probes, lost",
                window,
                days,
                conditions,
            )
            .0
        }
    }
}

/// Every (region, ISP) cell with p50/p95 RTT in ms, the number of
/// measurements and the share of probes lost.
pub async fn cells(
    db: &Db,
    filters: &Filters,
    now: u32,
    source: Source,
) -> anyhow::Result<Vec<Cell>> {
    let [quantiles, count, answered, lost] = aggregates(source);
    let days = covered_days(db, "rp_rtt", whole_days(filters.window(now))).await;
    db.rows(&format!(
        "SELECT region, isp, toFloat64(q[1] / 1000) AS p50_ms, toFloat64(q[3] / 1000) AS p95_ms, measured AS samples,
            if(answered + lost = 0, toFloat64(0), toFloat64(100 * lost / (answered + lost))) AS loss_pct FROM (
            SELECT region, isp, {quantiles} AS q, toUInt64({count}) AS measured,
                toUInt64({answered}) AS answered, toUInt64({lost}) AS lost
            FROM {} GROUP BY region, isp)
         ORDER BY isp, region",
        cell_rows(filters, now, source, days)
    ))
    .await
}

#[derive(Row, Deserialize)]
struct Point {
    t: u32,
    p50: f64,
    p95: f64,
}

/// One cell over time: p50 and p95 series (ms), per chart bucket.
pub async fn cell_series(db: &Db, filters: &Filters, now: u32) -> anyhow::Result<Vec<Series>> {
    let window = filters.window(now);
    let [quantiles, ..] = aggregates(Source::Rollup);
    let days = covered_days(db, "rp_rtt", whole_day_buckets(window)).await;
    let (from, time) = rollup_rows(
        "rp_rtt",
        "region, isp, rtt",
        window,
        days,
        |time, window| {
            conditions(time, window, filters, Source::Rollup)
                .eq("region", &filters.region)
                .eq("isp", &filters.isp)
        },
    );
    let t = bucket(time, window.bucket);
    let points: Vec<Point> = db
        .rows(&format!(
            "SELECT t, toFloat64(q[1] / 1000) AS p50, toFloat64(q[3] / 1000) AS p95 FROM (
                SELECT {t} AS t, {quantiles} AS q FROM {from} GROUP BY t) ORDER BY t"
        ))
        .await?;
    Ok(series(points.iter().flat_map(|p| {
        [
            (p.t, "p50".to_owned(), p.p50),
            (p.t, "p95".to_owned(), p.p95),
        ]
    })))
}
