//! Session explorer: every election of one client session, in order, with
//! every candidate it measured.

use clickhouse::Row;
use serde::Deserialize;

use super::{Conditions, Db, filtered};
use crate::filters::Filters;

#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct RecentSession {
    pub session: String,
    pub first_seen: u32,
    pub elections: u64,
    pub country: String,
    pub isp: String,
}

#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct SessionElection {
    pub report: String,
    pub received_at: u32,
    pub session_seq: u32,
    pub trigger: String,
    pub rule: String,
    pub decision_ms: u32,
    pub winner_region: String,
    pub winner_transport: String,
    pub winner_rtt_ms: f64,
    pub previous_region: String,
    pub relay_region: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct SessionCandidate {
    pub report: String,
    pub idx: u8,
    pub region: String,
    pub transport: String,
    pub samples: u32,
    pub lost: u32,
    pub median_ms: f64,
    pub p95_ms: f64,
    pub outcome: String,
    pub error: String,
}

pub async fn recent(db: &Db, filters: &Filters, now: u32) -> anyhow::Result<Vec<RecentSession>> {
    let conditions = Conditions::new("received_at", filters.window(now), filters)
        .eq("country", &filters.country)
        .eq("isp", &filters.isp);
    db.rows(&format!(
        "SELECT lower(hex(session_id)) AS session, toUInt32(min(received_at)) AS first_seen,
            toUInt64(count()) AS elections, any(country) AS country, any(isp) AS isp
         FROM {} GROUP BY session ORDER BY first_seen DESC LIMIT 25",
        filtered(
            "rp_elections",
            "session_id, received_at, country, isp",
            &conditions
        )
    ))
    .await
}

/// A client session id, checked: 16 bytes as 32 hex digits, upper case (as
/// ClickHouse's `hex()` writes them), so it can be compared in SQL as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionId(String);

impl SessionId {
    /// The id in `text`, or why it is none, in words for people.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(SessionId(text.to_ascii_uppercase()))
        } else {
            Err("A session id is 32 hex characters (0-9 and a-f).".into())
        }
    }
}

/// The elections (ordered) and candidates of one session, any time.
pub async fn session(
    db: &Db,
    session: &SessionId,
) -> anyhow::Result<(Vec<SessionElection>, Vec<SessionCandidate>)> {
    let id = &session.0;
    let elections = db
        .rows(&format!(
            "SELECT lower(hex(report_id)) AS report, toUInt32(received_at) AS received_at, session_seq,
                trigger, rule, decision_ms, winner_region, winner_transport,
                toFloat64(winner_rtt_us / 1000) AS winner_rtt_ms, previous_region, relay_region, reason
             FROM rp_elections WHERE hex(session_id) = '{id}'
             ORDER BY session_seq, received_at"
        ))
        .await?;
    let candidates = db
        .rows(&format!(
            "SELECT lower(hex(report_id)) AS report, idx, region, transport, samples, lost,
                toFloat64(rtt_median_us / 1000) AS median_ms, toFloat64(rtt_p95_us / 1000) AS p95_ms, outcome, error
             FROM rp_candidates WHERE hex(session_id) = '{id}' ORDER BY report, idx"
        ))
        .await?;
    Ok((elections, candidates))
}
