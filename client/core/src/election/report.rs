//! Turning an election's state into an `ElectionReport` (the telemetry schema
//! in `protocol/proto/rallypoint/v1/telemetry.proto`).

use std::time::Duration;

use bytes::Bytes;
use rallypoint_protocol::telemetry::SCHEMA_VERSION;
use rallypoint_protocol::v1::{
    CandidateOutcome, CandidateReport, ClientContext, DecisionRule, ElectionReport, ElectionTrigger,
};

use super::stats::Summary;
use crate::candidate::Candidate;

pub(super) struct SlotView<'a> {
    pub candidate: &'a Candidate,
    pub summary: Summary,
    pub connect_time: Option<Duration>,
    pub error: Option<&'a str>,
}

pub(super) struct Inputs<'a, I: Iterator<Item = SlotView<'a>>> {
    pub slots: I,
    pub outcomes: Vec<CandidateOutcome>,
    pub trigger: ElectionTrigger,
    pub rule: DecisionRule,
    pub took: Duration,
    pub winner: Option<usize>,
    pub previous: Option<usize>,
    pub reason: String,
    pub session_seq: u32,
    pub client_session_id: Bytes,
    pub client: ClientContext,
}

const MAX_TEXT: usize = 500;

pub(super) fn build<'a, I: Iterator<Item = SlotView<'a>>>(inputs: Inputs<'a, I>) -> ElectionReport {
    let candidates = inputs
        .slots
        .zip(inputs.outcomes)
        .map(|(slot, outcome)| {
            let s = slot.summary;
            let clamp = |us: u64| us.min(u32::MAX as u64) as u32;
            CandidateReport {
                region: slot.candidate.region.clone(),
                relay_id: slot.candidate.relay_id.clone(),
                transport: slot.candidate.transport.to_proto() as i32,
                connect_ms: slot
                    .connect_time
                    .map(|d| d.as_millis().min(u32::MAX as u128) as u32)
                    .unwrap_or(0),
                error: truncate(slot.error.unwrap_or_default()),
                samples: s.samples,
                lost: s.lost,
                rtt_min_us: clamp(s.min),
                rtt_median_us: clamp(s.median),
                rtt_p95_us: clamp(s.p95),
                rtt_mean_us: clamp(s.mean),
                jitter_us: clamp(s.jitter),
                outcome: outcome as i32,
                endpoint: truncate(&slot.candidate.endpoint()),
                shadow: slot.candidate.shadow,
            }
        })
        .collect();
    ElectionReport {
        schema_version: SCHEMA_VERSION,
        report_id: Bytes::new(),
        client_session_id: inputs.client_session_id,
        client_time_ms: 0,
        trigger: inputs.trigger as i32,
        rule: inputs.rule as i32,
        decision_ms: inputs.took.as_millis().min(u32::MAX as u128) as u32,
        winner_index: inputs.winner.map(|w| w as u32),
        previous_index: inputs.previous.map(|p| p as u32),
        candidates,
        client: Some(inputs.client),
        reason: truncate(&inputs.reason),
        session_seq: inputs.session_seq,
    }
}

fn truncate(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Fills what the election does not know: the report id (16 bytes, the
/// idempotency key all the way to ClickHouse) and the wall clock, both
/// from the session, which derives them from data its driver handed in.
pub fn finish_report(report: &mut ElectionReport, report_id: [u8; 16], unix_ms: u64) {
    report.report_id = Bytes::copy_from_slice(&report_id);
    report.client_time_ms = unix_ms;
}
