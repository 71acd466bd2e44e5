//! Outcomes: which region wins for which ISP and country, how often
//! WebTransport is chosen, and why calls moved.

use clickhouse::Row;
use serde::Deserialize;

use super::{Conditions, Db, covered_days, rollup, rollup_rows, whole_days};
use crate::filters::Filters;

#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct Share {
    /// The group (ISP, country or "all").
    pub group: String,
    /// What was chosen (region or transport).
    pub choice: String,
    pub elections: u64,
}

#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct Reason {
    pub trigger: String,
    pub rule: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcomes {
    pub by_isp: Vec<Share>,
    pub by_country: Vec<Share>,
    pub transports: Vec<Share>,
    pub reasons: Vec<Reason>,
}

pub async fn load(db: &Db, filters: &Filters, now: u32) -> anyhow::Result<Outcomes> {
    let window = filters.window(now);
    let initial = |time: &str, window| {
        Conditions::new(time, window, filters)
            .eq("country", &filters.country)
            .eq("winner_transport", &filters.transport)
            .and("trigger = 'initial'")
            .and("winner_region != ''")
    };
    let days = covered_days(db, "rp_elections", whole_days(window)).await;
    let (from, _) = rollup_rows(
        "rp_elections",
        "isp, country, winner_region, winner_transport, elections",
        window,
        days,
        initial,
    );
    let share = |group: &str, choice: &str| {
        format!(
            "SELECT {group} AS group, {choice} AS choice, toUInt64(countMerge(elections)) AS elections
             FROM {from} GROUP BY group, choice ORDER BY group, choice"
        )
    };
    // Long ranges count from the hourly rollup of later elections, when it
    // holds the whole window; a day of elections scans quickly.
    let moves_complete_from = db.rollup_complete_from("rp_moves_hour").await;
    let (reasons_from, counted) = match (rollup(window), moves_complete_from) {
        (("hour", time), Some(from)) if window.from >= from => (
            format!(
                "rp_moves_hour WHERE {}",
                Conditions::new(time, window, filters)
                    .eq("country", &filters.country)
                    .sql()
            ),
            "sum(elections)",
        ),
        _ => (
            format!(
                "rp_elections WHERE {} AND trigger != 'initial'",
                Conditions::new("received_at", window, filters)
                    .eq("country", &filters.country)
                    .sql()
            ),
            "count()",
        ),
    };
    let reasons = format!(
        "SELECT trigger, rule, toUInt64({counted}) AS count FROM {reasons_from}
         GROUP BY trigger, rule ORDER BY count DESC, trigger, rule"
    );
    let (by_isp, by_country, transports) = (
        share("isp", "winner_region"),
        share("country", "winner_region"),
        share("'all'", "winner_transport"),
    );
    // Independent queries, run together: the view waits for the slowest.
    let (by_isp, by_country, transports, reasons) = tokio::try_join!(
        db.rows(&by_isp),
        db.rows(&by_country),
        db.rows(&transports),
        db.rows(&reasons),
    )?;
    Ok(Outcomes {
        by_isp,
        by_country,
        transports,
        reasons,
    })
}

/// Shares within each group, as fractions, for `group`.
pub fn fractions<'a>(shares: &'a [Share], group: &str) -> Vec<(&'a str, f64)> {
    let total: u64 = shares
        .iter()
        .filter(|s| s.group == group)
        .map(|s| s.elections)
        .sum();
    shares
        .iter()
        .filter(|s| s.group == group && total > 0)
        .map(|s| (s.choice.as_str(), s.elections as f64 / total as f64))
        .collect()
}
