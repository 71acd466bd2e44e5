//! Capacity planning: how many sessions each region serves by hour and day,
//! how that grows, and what-if: where clients would go, and at what RTT, if a
//! region were removed or a (shadow) region added — recomputed from the RTTs
//! every client measured to every candidate in past reports.
//!
//! "Active sessions" in an hour are the client sessions whose elections named
//! that region the winner in that hour: a lower bound of the concurrent peak,
//! and the measure reports support without a per-session heartbeat.

use std::collections::BTreeMap;

use clickhouse::Row;
use serde::Deserialize;

use super::{Conditions, Db, filtered};
use crate::filters::{Filters, Window, sql_string};

/// Capacity always looks back at least this far, so daily peaks and
/// week-over-week growth have data.
const MIN_LOOKBACK: u32 = 14 * 86_400;

#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct HourlySessions {
    pub hour: u32,
    pub region: String,
    pub sessions: u64,
}

/// One region's daily load.
#[derive(Debug, Clone, PartialEq)]
pub struct DailyLoad {
    pub region: String,
    /// (day start, peak hour sessions, p95 over the day's hours)
    pub days: Vec<(u32, u64, u64)>,
    /// Mean daily peak of the last 7 days over the 7 before, minus one.
    pub week_over_week: Option<f64>,
}

pub async fn hourly(db: &Db, filters: &Filters, now: u32) -> anyhow::Result<Vec<HourlySessions>> {
    let mut window = filters.window(now);
    window.from = window.from.min(window.to.saturating_sub(MIN_LOOKBACK));
    db.rows(&format!(
        "SELECT toUInt32(hour) AS hour, winner_region AS region,
            toUInt64(uniqMerge(sessions)) AS sessions
         FROM rp_elections_hour WHERE {} AND winner_region != ''
         GROUP BY hour, region ORDER BY hour, region",
        Conditions::new("hour", window, filters)
            .eq("country", &filters.country)
            .sql()
    ))
    .await
}

/// Daily peaks and p95s per region, and week-over-week growth.
pub fn daily(hours: &[HourlySessions], now_day_end: u32) -> Vec<DailyLoad> {
    let mut by_region: BTreeMap<&str, BTreeMap<u32, Vec<u64>>> = BTreeMap::new();
    for h in hours {
        by_region
            .entry(&h.region)
            .or_default()
            .entry(h.hour - h.hour % 86_400)
            .or_default()
            .push(h.sessions);
    }
    by_region
        .into_iter()
        .map(|(region, days)| {
            let days: Vec<(u32, u64, u64)> = days
                .into_iter()
                .map(|(day, mut values)| {
                    // Hours without sessions count as zero: a day has 24 of them.
                    values.resize(values.len().max(24), 0);
                    values.sort_unstable();
                    let p95 = values[((values.len() - 1) as f64 * 0.95).round() as usize];
                    (day, *values.last().expect("24 values"), p95)
                })
                .collect();
            let mean_peak = |from: u32, to: u32| {
                let peaks: Vec<u64> = days
                    .iter()
                    .filter(|(d, _, _)| *d >= from && *d < to)
                    .map(|(_, peak, _)| *peak)
                    .collect();
                (!peaks.is_empty()).then(|| peaks.iter().sum::<u64>() as f64 / peaks.len() as f64)
            };
            let week = 7 * 86_400;
            let this = mean_peak(now_day_end.saturating_sub(week), now_day_end);
            let last = mean_peak(
                now_day_end.saturating_sub(2 * week),
                now_day_end.saturating_sub(week),
            );
            DailyLoad {
                region: region.to_owned(),
                days,
                week_over_week: match (this, last) {
                    (Some(this), Some(last)) if last > 0.0 => Some(this / last - 1.0),
                    _ => None,
                },
            }
        })
        .collect()
}

/// Participants one relay core carries in video calls (rooms of five, each
/// receiving the others' audio at 50 and video at 30 frames/s), measured by
/// `rallypoint bench capacity` for the costlier layout: every room spread
/// over two relays (`--relays 2`), so each frame is also published to NATS
/// and forwarded by the other relay, as in a call between regions. Over
/// WebTransport, the costlier transport, two runs carried 80 participants on
/// 0.82 and 0.89 relay cores (both relays together: 97 and 90 per core; the
/// second run's knee, the next level the first's); rounded down for
/// headroom. Re-measured on 2026-12-05 after the relay's WebTransport
/// datagrams lost two task hops: 0.82 and 0.88 cores, 98 and 91 per core —
/// unchanged, as this load's video goes on streams. A room on one relay
/// costs less (143 per core at the
/// same level, its media kept off NATS). See BENCHMARKS.md, "Relay capacity
/// at call rates". The dashboard's default for `--participants-per-relay-core`,
/// which a deployment sets from its own hardware; re-measure and update it
/// when the relay's forwarding path changes.
pub const PARTICIPANTS_PER_RELAY_CORE: u64 = 80;

/// Relay cores a region needs for `sessions` concurrent participants at
/// `per_core` participants per relay core (none for no sessions).
pub fn relay_cores_needed(sessions: u64, per_core: u64) -> u64 {
    sessions.div_ceil(per_core.max(1))
}

/// The what-if question.
#[derive(Debug, Clone, PartialEq)]
pub struct WhatIf {
    pub remove: Option<String>,
    pub add: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct WhatIfGroup {
    pub country: String,
    pub isp: String,
    pub elections: u64,
    /// Elections whose best region changes.
    pub moved: u64,
    /// Elections left without any usable candidate.
    pub stranded: u64,
    /// RTT change (new − old) in ms, over elections that keep a candidate.
    pub delta_p50_ms: f64,
    pub delta_p95_ms: f64,
    pub old_p50_ms: f64,
    pub new_p50_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct WhatIfRegion {
    pub region: String,
    pub before: u64,
    pub after: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WhatIfResult {
    pub groups: Vec<WhatIfGroup>,
    pub regions: Vec<WhatIfRegion>,
}

/// For every initial election in the window: the best candidate (lowest
/// measured RTT, usable, not a shadow) as it was, and as it would be with the
/// region removed and/or the shadow region electable.
pub async fn what_if(
    db: &Db,
    filters: &Filters,
    now: u32,
    question: &WhatIf,
) -> anyhow::Result<WhatIfResult> {
    let window: Window = filters.window(now);
    let usable = "samples > 0 AND error = ''";
    let before = format!("{usable} AND shadow = 0");
    let mut after = match &question.add {
        Some(add) => format!("{usable} AND (shadow = 0 OR region = {})", sql_string(add)),
        None => before.clone(),
    };
    if let Some(remove) = &question.remove {
        after = format!("{after} AND region != {}", sql_string(remove));
    }
    let initial = Conditions::new("received_at", window, filters)
        .eq("country", &filters.country)
        .and("trigger = 'initial'");
    let candidates = filtered(
        "rp_candidates",
        "report_id, country, isp, region, rtt_median_us, samples, error, shadow",
        &initial,
    );
    let per_election = format!(
        "SELECT report_id, any(country) AS country, any(isp) AS isp,
            argMinIf(region, rtt_median_us, {before}) AS old_region,
            toInt64(minIf(rtt_median_us, {before})) AS old_rtt,
            argMinIf(region, rtt_median_us, {after}) AS new_region,
            toInt64(minIf(rtt_median_us, {after})) AS new_rtt,
            countIf({after}) AS new_usable
         FROM {candidates}
         GROUP BY report_id
         HAVING countIf({before}) > 0"
    );
    let groups = db
        .rows(&format!(
            "SELECT country, isp, toUInt64(count()) AS elections,
                toUInt64(countIf(new_usable > 0 AND new_region != old_region)) AS moved,
                toUInt64(countIf(new_usable = 0)) AS stranded,
                toFloat64(quantileIf(0.5)(new_rtt - old_rtt, new_usable > 0) / 1000) AS delta_p50_ms,
                toFloat64(quantileIf(0.95)(new_rtt - old_rtt, new_usable > 0) / 1000) AS delta_p95_ms,
                toFloat64(quantile(0.5)(old_rtt) / 1000) AS old_p50_ms,
                toFloat64(quantileIf(0.5)(new_rtt, new_usable > 0) / 1000) AS new_p50_ms
             FROM ({per_election}) GROUP BY country, isp ORDER BY elections DESC, country, isp"
        ))
        .await?;
    let regions = db
        .rows(&format!(
            "SELECT region, toUInt64(sum(b)) AS before, toUInt64(sum(a)) AS after FROM (
                SELECT old_region AS region, 1 AS b, 0 AS a FROM ({per_election})
                UNION ALL
                SELECT new_region AS region, 0 AS b, 1 AS a FROM ({per_election}) WHERE new_usable > 0
             ) GROUP BY region ORDER BY region"
        ))
        .await?;
    Ok(WhatIfResult { groups, regions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_are_sessions_over_the_measured_capacity_rounded_up() {
        let per_core = PARTICIPANTS_PER_RELAY_CORE;
        assert_eq!(relay_cores_needed(0, per_core), 0);
        assert_eq!(relay_cores_needed(1, per_core), 1);
        assert_eq!(relay_cores_needed(per_core, per_core), 1);
        assert_eq!(relay_cores_needed(per_core + 1, per_core), 2);
        assert_eq!(relay_cores_needed(250, 100), 3);
    }
}
