//! Validation of election reports.
//!
//! A relay validates every report before it enriches and publishes it, and the
//! collector validates again before storing (a report may have been published by
//! a relay of another version). Anything outside these bounds is refused with a
//! reason a person can act on; nothing is clamped or silently repaired.

use crate::limits::MAX_REPORT_CANDIDATES;
use crate::subjects::validate_region;
use crate::v1::{
    CandidateOutcome, CandidateReport, DecisionRule, ElectionReport, ElectionTrigger,
    TelemetryRefusal, Transport,
};

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
    #[error("rule is missing or unknown ({0})")]
    BadRule(i32),
    #[error("candidate {index}: region {region:?} is not one this deployment serves or plans")]
    UnknownRegion { index: usize, region: String },
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

/// The regions a report's candidates may name: those of the deployment's
/// candidate lists (shadow regions included). A report naming any other region
/// is made up, and would put a region that does not exist on the dashboards.
#[derive(Debug, Clone, Copy)]
pub enum KnownRegions<'a> {
    /// Any well-formed region name (a relay not told its deployment's regions,
    /// or the collector, which stores what relays already checked).
    Any,
    /// Exactly these.
    Only(&'a [String]),
}

impl KnownRegions<'_> {
    fn allows(&self, region: &str) -> bool {
        match self {
            KnownRegions::Any => true,
            KnownRegions::Only(known) => known.iter().any(|k| k == region),
        }
    }
}

/// Checks a report against the schema's bounds.
pub fn validate(report: &ElectionReport) -> Result<(), ReportError> {
    validate_for(report, KnownRegions::Any)
}

/// Checks a report against the schema's bounds, and its candidates' regions
/// against `regions` (what a relay does before publishing).
pub fn validate_for(report: &ElectionReport, regions: KnownRegions<'_>) -> Result<(), ReportError> {
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
    match DecisionRule::try_from(report.rule) {
        Ok(DecisionRule::Unspecified) | Err(_) => return Err(ReportError::BadRule(report.rule)),
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
        if !regions.allows(&candidate.region) {
            return Err(ReportError::UnknownRegion {
                index,
                region: candidate.region.clone(),
            });
        }
    }
    Ok(())
}

/// Whether a report refused for `refusal` must be dropped rather than sent
/// again: the same report would be refused the same way, whichever relay
/// gets it. A relay too old to send a code (`Unspecified`) is judged by its
/// human `reason`, which then began with "invalid" for such reports.
pub fn refusal_is_final(refusal: TelemetryRefusal, reason: &str) -> bool {
    match refusal {
        TelemetryRefusal::Invalid | TelemetryRefusal::SyntheticNotAllowed => true,
        TelemetryRefusal::RateLimited | TelemetryRefusal::Unavailable => false,
        TelemetryRefusal::Unspecified => reason.starts_with("invalid"),
    }
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
    match CandidateOutcome::try_from(c.outcome) {
        Ok(CandidateOutcome::Unspecified) | Err(_) => {
            return Err(format!("outcome {} is missing or unknown", c.outcome));
        }
        Ok(_) => {}
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
            rule: DecisionRule::Early as i32,
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

    #[test]
    fn rule_and_outcome_must_be_known_and_specified() {
        for rule in [DecisionRule::Unspecified as i32, 99] {
            let mut r = valid();
            r.rule = rule;
            assert_eq!(validate(&r), Err(ReportError::BadRule(rule)));
        }
        for outcome in [CandidateOutcome::Unspecified as i32, 99] {
            let mut r = valid();
            r.candidates[0].outcome = outcome;
            let err = validate(&r).unwrap_err().to_string();
            assert!(err.contains("candidate 0: outcome"), "{err}");
        }
    }

    #[test]
    fn candidate_regions_must_be_known_when_the_regions_are() {
        let known = ["us-east".to_owned(), "singapore".to_owned()];
        assert_eq!(validate_for(&valid(), KnownRegions::Only(&known)), Ok(()));
        let mut r = valid();
        r.candidates[0].region = "atlantis".into();
        assert_eq!(
            validate(&r),
            Ok(()),
            "any well-formed region without a list"
        );
        assert_eq!(
            validate_for(&r, KnownRegions::Only(&known)),
            Err(ReportError::UnknownRegion {
                index: 0,
                region: "atlantis".into()
            })
        );
    }

    #[test]
    fn only_schema_and_forgery_refusals_are_final() {
        assert!(refusal_is_final(TelemetryRefusal::Invalid, ""));
        assert!(refusal_is_final(TelemetryRefusal::SyntheticNotAllowed, ""));
        assert!(!refusal_is_final(TelemetryRefusal::RateLimited, "invalid"));
        assert!(!refusal_is_final(TelemetryRefusal::Unavailable, ""));
        assert!(refusal_is_final(
            TelemetryRefusal::Unspecified,
            "invalid report: x"
        ));
        assert!(!refusal_is_final(
            TelemetryRefusal::Unspecified,
            "rate limited"
        ));
    }
}
