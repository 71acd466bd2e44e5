//! Region × ISP: the RTT every client measured to every region (not only the
//! one it picked), by ISP — where a region serves an ISP well or badly.

use clickhouse::Row;
use serde::Deserialize;

use super::{Conditions, Db, Series, Source, bucket, rollup, series};
use crate::filters::{Filters, Window};

#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct Cell {
    pub region: String,
    pub isp: String,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub samples: u64,
}

fn source_parts(
    source: Source,
    window: Window,
) -> (String, &'static str, &'static str, &'static str) {
    match source {
        Source::Rollup => {
            let (resolution, time) = rollup(window);
            (
                format!("rp_rtt_{resolution}"),
                time,
                "quantilesMerge(0.5, 0.9, 0.95, 0.99)(rtt)",
                "countMerge(measurements)",
            )
        }
        Source::Raw => (
            "rp_candidates".to_owned(),
            "received_at",
            "quantiles(0.5, 0.9, 0.95, 0.99)(rtt_median_us)",
            "count()",
        ),
    }
}

fn conditions(time: &str, filters: &Filters, now: u32, source: Source) -> Conditions {
    let c = Conditions::new(time, filters.window(now), filters)
        .eq("country", &filters.country)
        .eq("transport", &filters.transport)
        .and("shadow = 0");
    match source {
        Source::Raw => c.and("samples > 0"),
        Source::Rollup => c,
    }
}

/// Every (region, ISP) cell with p50/p95 RTT in ms and the number of measurements.
pub async fn cells(
    db: &Db,
    filters: &Filters,
    now: u32,
    source: Source,
) -> anyhow::Result<Vec<Cell>> {
    let (table, time, quantiles, count) = source_parts(source, filters.window(now));
    db.rows(&format!(
        "SELECT region, isp, toFloat64(q[1] / 1000) AS p50_ms, toFloat64(q[3] / 1000) AS p95_ms, measured AS samples FROM (
            SELECT region, isp, {quantiles} AS q, toUInt64({count}) AS measured
            FROM {table} WHERE {} GROUP BY region, isp)
         ORDER BY isp, region",
        conditions(time, filters, now, source).sql()
    ))
    .await
}

#[derive(Row, Deserialize)]
struct Point {
    t: u32,
    p50: f64,
    p95: f64,
}

/// One cell over time: p50 and p95 series (ms).
pub async fn cell_series(db: &Db, filters: &Filters, now: u32) -> anyhow::Result<Vec<Series>> {
    let window = filters.window(now);
    let (table, time, quantiles, _) = source_parts(Source::Rollup, window);
    let t = bucket(time, window.bucket);
    let points: Vec<Point> = db
        .rows(&format!(
            "SELECT t, toFloat64(q[1] / 1000) AS p50, toFloat64(q[3] / 1000) AS p95 FROM (
                SELECT {t} AS t, {quantiles} AS q FROM {table} WHERE {} GROUP BY t) ORDER BY t",
            conditions(time, filters, now, Source::Rollup)
                .eq("region", &filters.region)
                .eq("isp", &filters.isp)
                .sql()
        ))
        .await?;
    Ok(series(points.iter().flat_map(|p| {
        [
            (p.t, "p50".to_owned(), p.p50),
            (p.t, "p95".to_owned(), p.p95),
        ]
    })))
}
