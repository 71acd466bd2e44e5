//! Overview: election volume, winners' RTT per region, failover rate and the
//! distribution of decision times.

use clickhouse::Row;
use serde::Deserialize;

use super::{
    Conditions, Db, Series, Source, bucket, covered_days, rollup, rollup_rows, series,
    whole_day_buckets,
};
use crate::filters::Filters;

#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    /// Elections per bucket, one series per winner region.
    pub elections: Vec<Series>,
    /// Winners' p50 / p95 RTT (ms) per winner region.
    pub rtt_p50: Vec<Series>,
    pub rtt_p95: Vec<Series>,
    /// Failovers and drains per initial election, per bucket.
    pub failover_rate: Series,
    /// Initial elections by decision time, in 100 ms buckets: (lower bound ms, count).
    pub decision_histogram: Vec<(u32, u64)>,
    pub total_elections: u64,
    pub total_failovers: u64,
}

#[derive(Row, Deserialize)]
struct RegionPoint {
    t: u32,
    region: String,
    elections: u64,
    p50: f64,
    p95: f64,
}

#[derive(Row, Deserialize)]
struct TriggerPoint {
    t: u32,
    initial: u64,
    failovers: u64,
}

#[derive(Row, Deserialize)]
struct Bin {
    lower_ms: u32,
    count: u64,
}

pub async fn load(
    db: &Db,
    filters: &Filters,
    now: u32,
    source: Source,
) -> anyhow::Result<Overview> {
    let window = filters.window(now);
    // Every election table has these columns; only the time column differs.
    let filtered_on = |time: &str, window| {
        Conditions::new(time, window, filters)
            .eq("country", &filters.country)
            .eq("isp", &filters.isp)
            .eq("winner_transport", &filters.transport)
    };
    let days = match source {
        Source::Rollup => covered_days(db, "rp_elections", whole_day_buckets(window)).await,
        Source::Raw => None,
    };
    // Rows (`FROM … WHERE …`) and their time column.
    let rows = |columns: &str| match source {
        Source::Rollup => rollup_rows("rp_elections", columns, window, days, filtered_on),
        Source::Raw => (
            format!(
                "rp_elections WHERE {}",
                filtered_on("received_at", window).sql()
            ),
            "received_at",
        ),
    };
    let (count, rtt) = match source {
        Source::Rollup => (
            "countMerge(elections)",
            "quantilesMerge(0.5, 0.95)(winner_rtt)",
        ),
        Source::Raw => ("count()", "quantiles(0.5, 0.95)(winner_rtt_us)"),
    };
    // Elections without a winner have no region to chart.
    let (from, time) = rows("winner_region, elections, winner_rtt");
    let t = bucket(time, window.bucket);
    let regions = format!(
        "SELECT t, region, elections, toFloat64(q[1] / 1000) AS p50, toFloat64(q[2] / 1000) AS p95 FROM (
            SELECT {t} AS t, winner_region AS region, toUInt64({count}) AS elections, {rtt} AS q
            FROM {from} GROUP BY t, region HAVING region != '') ORDER BY t, region"
    );
    let (from, time) = rows("trigger, elections");
    let t = bucket(time, window.bucket);
    let triggers = format!(
        "SELECT {t} AS t,
            toUInt64(sumIf(n, trigger = 'initial')) AS initial,
            toUInt64(sumIf(n, trigger IN ('failover', 'drain'))) AS failovers
         FROM (SELECT {time}, trigger, toUInt64({count}) AS n FROM {from} GROUP BY {time}, trigger)
         GROUP BY t ORDER BY t"
    );
    let initial = |time| filtered_on(time, window).and("trigger = 'initial'").sql();
    // Only long ranges have a histogram rollup (hourly bins): a day of
    // elections scans quickly, and every rollup costs each insert.
    let histogram = match (source, rollup(window).0) {
        (Source::Rollup, "hour") => format!(
            "SELECT lower_ms, toUInt64(sum(elections)) AS count
             FROM rp_decisions_hour WHERE {}
             GROUP BY lower_ms ORDER BY lower_ms",
            initial("hour")
        ),
        _ => format!(
            "SELECT toUInt32(intDiv(decision_ms, 100) * 100) AS lower_ms, toUInt64(count()) AS count
             FROM rp_elections WHERE {}
             GROUP BY lower_ms ORDER BY lower_ms",
            initial("received_at")
        ),
    };
    // Independent queries, run together: the view waits for the slowest,
    // not the sum.
    let (regions, triggers, bins): (Vec<RegionPoint>, Vec<TriggerPoint>, Vec<Bin>) =
        tokio::try_join!(db.rows(&regions), db.rows(&triggers), db.rows(&histogram))?;
    Ok(Overview {
        elections: series(
            regions
                .iter()
                .map(|r| (r.t, r.region.clone(), r.elections as f64)),
        ),
        rtt_p50: series(regions.iter().map(|r| (r.t, r.region.clone(), r.p50))),
        rtt_p95: series(regions.iter().map(|r| (r.t, r.region.clone(), r.p95))),
        failover_rate: Series {
            name: "failovers per call".into(),
            points: triggers
                .iter()
                .filter(|p| p.initial > 0)
                .map(|p| (p.t, p.failovers as f64 / p.initial as f64))
                .collect(),
        },
        total_elections: triggers.iter().map(|p| p.initial).sum(),
        total_failovers: triggers.iter().map(|p| p.failovers).sum(),
        decision_histogram: bins.iter().map(|b| (b.lower_ms, b.count)).collect(),
    })
}
