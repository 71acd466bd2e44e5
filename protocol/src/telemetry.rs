//! Validation of election reports.
//!
//! A relay validates every report before it enriches and publishes it, and the
//! collector validates again before storing (a report may have been published by
//! a relay of another version). Anything outside these bounds is refused with a
//! reason a person can act on; nothing is clamped or silently repaired.

use crate::limits::MAX_REPORT_CANDIDATES;
use crate::subjects::validate_region;
use crate::v1::{CandidateReport, ElectionReport, ElectionTrigger, Transport};

/// Report schema versions this build understands.
pub const SUPPORTED_SCHEMA_VERSIONS: std::ops::RangeInclusive<u32> = 1..=1;
/// The version this build writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Largest round-trip time we believe: anything slower is a broken clock or a
/// broken client, not a network.
pub const MAX_RTT_US: u32 = 60_000_000;
/// Longest decision we believe (ten minutes).
pub const MAX_DECISION_MS: u32 = 600_000;
/// Most probe samples one candidate can have in one report.
pub const MAX_SAMPLES: u32 = 1_000_000;

const ID_LEN: usize = 16;
const MAX_TEXT: usize = 512;

/// Why a report was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("schema_version {0} is not supported (this relay understands {min}..={max})", min = SUPPORTED_SCHEMA_VERSIONS.start(), max = SUPPORTED_SCHEMA_VERSIONS.end())]
    UnsupportedVersion(u32),
    #[error("{field} must be {ID_LEN} bytes, got {len}")]
    BadId { field: &'static str, len: usize },
    #[error("report has {0} candidates; between 1 and {MAX_REPORT_CANDIDATES} are allowed")]
    CandidateCount(usize),
    #[error("trigger is missing or unknown ({0})")]
    BadTrigger(i32),
    #[error("{field} = {index} does not name one of the {count} candidates")]
    BadIndex {
        field: &'static str,
        index: u32,
        count: usize,
    },
    #[error("decision_ms = {0} is above the {MAX_DECISION_MS} ms limit")]
    DecisionTooLong(u32),
    #[error("candidate {index}: {problem}")]
    Candidate { index: usize, problem: String },
    #[error("{field} is longer than {MAX_TEXT} bytes")]
    TextTooLong { field: &'static str },
}

/// Checks a report against the schema's bounds.
pub fn validate(report: &ElectionReport) -> Result<(), ReportError> {
    if !SUPPORTED_SCHEMA_VERSIONS.contains(&report.schema_version) {
        return Err(ReportError::UnsupportedVersion(report.schema_version));
    }
    check_id("report_id", &report.report_id)?;
    check_id("client_session_id", &report.client_session_id)?;
    let count = report.candidates.len();
    if count == 0 || count > MAX_REPORT_CANDIDATES {
        return Err(ReportError::CandidateCount(count));
    }
    match ElectionTrigger::try_from(report.trigger) {
        Ok(ElectionTrigger::Unspecified) | Err(_) => {
            return Err(ReportError::BadTrigger(report.trigger));
        }
        Ok(_) => {}
    }
    for (field, index) in [
        ("winner_index", report.winner_index),
        ("previous_index", report.previous_index),
    ] {
        if let Some(index) = index
            && index as usize >= count
        {
            return Err(ReportError::BadIndex {
                field,
                index,
                count,
            });
        }
    }
    if report.decision_ms > MAX_DECISION_MS {
        return Err(ReportError::DecisionTooLong(report.decision_ms));
    }
    check_text("reason", &report.reason)?;
    if let Some(client) = &report.client {
        for (field, text) in [
            ("client.platform", &client.platform),
            ("client.client_version", &client.client_version),
            ("client.browser_family", &client.browser_family),
            (
                "client.effective_connection_type",
                &client.effective_connection_type,
            ),
            ("client.synthetic_country", &client.synthetic_country),
            ("client.synthetic_isp", &client.synthetic_isp),
        ] {
            check_text(field, text)?;
        }
    }
    for (index, candidate) in report.candidates.iter().enumerate() {
        check_candidate(candidate).map_err(|problem| ReportError::Candidate { index, problem })?;
    }
    Ok(())
}

fn check_id(field: &'static str, id: &[u8]) -> Result<(), ReportError> {
    if id.len() != ID_LEN {
        return Err(ReportError::BadId {
            field,
            len: id.len(),
        });
    }
    Ok(())
}

fn check_text(field: &'static str, text: &str) -> Result<(), ReportError> {
    if text.len() > MAX_TEXT {
        return Err(ReportError::TextTooLong { field });
    }
    Ok(())
}

fn check_candidate(c: &CandidateReport) -> Result<(), String> {
    validate_region(&c.region).map_err(|e| e.to_string())?;
    if c.relay_id.is_empty() || c.relay_id.len() > 128 {
        return Err("relay_id must be 1 to 128 bytes".into());
    }
    match Transport::try_from(c.transport) {
        Ok(Transport::Websocket | Transport::Webtransport) => {}
        _ => {
            return Err(format!(
                "transport {} is not websocket or webtransport",
                c.transport
            ));
        }
    }
    if c.error.len() > MAX_TEXT || c.endpoint.len() > MAX_TEXT {
        return Err(format!("error or endpoint is longer than {MAX_TEXT} bytes"));
    }
    if c.samples > MAX_SAMPLES || c.lost > MAX_SAMPLES {
        return Err(format!("samples and lost must be at most {MAX_SAMPLES}"));
    }
    let rtts = [
        ("rtt_min_us", c.rtt_min_us),
        ("rtt_median_us", c.rtt_median_us),
        ("rtt_p95_us", c.rtt_p95_us),
        ("rtt_mean_us", c.rtt_mean_us),
    ];
    if c.samples == 0 {
        if let Some((name, _)) = rtts.iter().find(|(_, v)| *v != 0) {
            return Err(format!("{name} is set but the candidate has no samples"));
        }
        return Ok(());
    }
    for (name, value) in rtts {
        if value == 0 || value > MAX_RTT_US {
            return Err(format!(
                "{name} = {value} µs is outside 1..={MAX_RTT_US} µs"
            ));
        }
    }
    if c.jitter_us > MAX_RTT_US {
        return Err(format!(
            "jitter_us = {} µs is above {MAX_RTT_US} µs",
            c.jitter_us
        ));
    }
    if !(c.rtt_min_us <= c.rtt_median_us && c.rtt_median_us <= c.rtt_p95_us) {
        return Err("rtt_min_us <= rtt_median_us <= rtt_p95_us does not hold".into());
    }
    if c.rtt_mean_us < c.rtt_min_us {
        return Err("rtt_mean_us is below rtt_min_us".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::CandidateOutcome;
    use bytes::Bytes;

    fn valid() -> ElectionReport {
        ElectionReport {
            schema_version: SCHEMA_VERSION,
            report_id: Bytes::from(vec![1; 16]),
            client_session_id: Bytes::from(vec![2; 16]),
            trigger: ElectionTrigger::Initial as i32,
            decision_ms: 800,
            winner_index: Some(0),
            candidates: vec![CandidateReport {
                region: "singapore".into(),
                relay_id: "sg-wt-1".into(),
                transport: Transport::Webtransport as i32,
                samples: 5,
                rtt_min_us: 40_000,
                rtt_median_us: 41_000,
                rtt_p95_us: 45_000,
                rtt_mean_us: 41_500,
                jitter_us: 1_000,
                outcome: CandidateOutcome::Winner as i32,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn accepts_a_valid_report() {
        assert_eq!(validate(&valid()), Ok(()));
    }

    #[test]
    fn refuses_reports_outside_bounds_with_a_reason() {
        let mut r = valid();
        r.candidates = vec![r.candidates[0].clone(); 33];
        assert_eq!(validate(&r), Err(ReportError::CandidateCount(33)));

        let mut r = valid();
        r.winner_index = Some(3);
        assert!(matches!(validate(&r), Err(ReportError::BadIndex { .. })));

        let mut r = valid();
        r.candidates[0].rtt_median_us = 90_000_000;
        let err = validate(&r).unwrap_err().to_string();
        assert!(err.contains("candidate 0"), "{err}");

        let mut r = valid();
        r.schema_version = 9;
        assert_eq!(validate(&r), Err(ReportError::UnsupportedVersion(9)));

        let mut r = valid();
        r.report_id = Bytes::from_static(b"short");
        assert!(matches!(validate(&r), Err(ReportError::BadId { .. })));

        let mut r = valid();
        r.candidates[0].samples = 0;
        assert!(validate(&r).is_err(), "statistics without samples");
    }
}
