//! From a JetStream message to ClickHouse rows — or to a dead letter with the
//! reason it could not be stored.

use clickhouse::Row;
use rallypoint_protocol::names;
use rallypoint_protocol::prost::Message as _;
use rallypoint_protocol::telemetry;
use rallypoint_protocol::v1::{CandidateReport, EnrichedElectionReport};
use serde::Serialize;

#[derive(Debug, Clone, Row, Serialize, PartialEq)]
pub struct ElectionRow {
    pub report_id: [u8; 16],
    pub received_at: u32,
    pub received_ms: u64,
    pub client_time_ms: u64,
    pub session_id: [u8; 16],
    pub session_seq: u32,
    pub relay_id: String,
    pub relay_region: String,
    pub trigger: String,
    pub rule: String,
    pub decision_ms: u32,
    pub has_winner: u8,
    pub winner_region: String,
    pub winner_relay_id: String,
    pub winner_transport: String,
    pub winner_rtt_us: u32,
    pub previous_region: String,
    pub previous_relay_id: String,
    pub previous_transport: String,
    pub candidates: u8,
    pub failed: u8,
    pub country: String,
    pub asn: u32,
    pub isp: String,
    pub platform: String,
    pub client_version: String,
    pub browser_family: String,
    pub effective_connection_type: String,
    pub synthetic: u8,
    pub reason: String,
    pub schema_version: u16,
}

#[derive(Debug, Clone, Row, Serialize, PartialEq)]
pub struct CandidateRow {
    pub report_id: [u8; 16],
    pub received_at: u32,
    pub idx: u8,
    pub session_id: [u8; 16],
    pub trigger: String,
    pub region: String,
    pub relay_id: String,
    pub transport: String,
    pub endpoint: String,
    pub shadow: u8,
    pub connect_ms: u32,
    pub error: String,
    pub samples: u32,
    pub lost: u32,
    pub rtt_min_us: u32,
    pub rtt_median_us: u32,
    pub rtt_p95_us: u32,
    pub rtt_mean_us: u32,
    pub jitter_us: u32,
    pub outcome: String,
    pub country: String,
    pub asn: u32,
    pub isp: String,
    pub platform: String,
    pub synthetic: u8,
}

#[derive(Debug, Clone, Row, Serialize, PartialEq)]
pub struct DeadLetterRow {
    /// The message's sequence in `stream`: with it, the dead letter's key
    /// (a redelivered message is dead-lettered once).
    pub stream_seq: u64,
    /// The stream it came from (its sequences start again at 1 when it is
    /// made anew).
    pub stream: String,
    pub first_seen: u32,
    pub subject: String,
    pub reason: String,
    pub payload_hex: String,
}

/// One report's rows.
#[derive(Debug, Clone)]
pub struct ReportRows {
    pub election: ElectionRow,
    pub candidates: Vec<CandidateRow>,
}

impl ReportRows {
    /// The same rows filed under another receive second (that of the
    /// report's first copy, see `keys`).
    pub fn received_at(&self, second: u32) -> ReportRows {
        let mut rows = self.clone();
        rows.election.received_at = second;
        for candidate in &mut rows.candidates {
            candidate.received_at = second;
        }
        rows
    }
}

/// Decodes and validates a message payload into rows; `Err` is the reason to
/// dead-letter it.
pub fn rows(payload: &[u8]) -> Result<ReportRows, String> {
    let enriched = EnrichedElectionReport::decode(payload)
        .map_err(|e| format!("not an EnrichedElectionReport: {e}"))?;
    let report = enriched
        .report
        .as_ref()
        .ok_or("EnrichedElectionReport without a report")?;
    telemetry::validate(report).map_err(|e| format!("invalid report: {e}"))?;
    if enriched.received_ms == 0 {
        return Err("received_ms is missing".into());
    }
    let id = |bytes: &[u8]| -> [u8; 16] { bytes.try_into().expect("validated: 16 bytes") };
    let report_id = id(&report.report_id);
    let session_id = id(&report.client_session_id);
    let received_at = (enriched.received_ms / 1000) as u32;
    let client = report.client.clone().unwrap_or_default();
    let synthetic = u8::from(client.synthetic);
    let trigger = names::trigger(report.trigger).to_owned();
    let at = |index: Option<u32>| index.and_then(|i| report.candidates.get(i as usize));
    let winner = at(report.winner_index);
    let previous = at(report.previous_index);
    let transport = |c: Option<&CandidateReport>| {
        c.map(|c| names::transport(c.transport).to_owned())
            .unwrap_or_default()
    };
    let election = ElectionRow {
        report_id,
        received_at,
        received_ms: enriched.received_ms,
        client_time_ms: report.client_time_ms,
        session_id,
        session_seq: report.session_seq,
        relay_id: enriched.relay_id.clone(),
        relay_region: enriched.relay_region.clone(),
        trigger: trigger.clone(),
        rule: names::rule(report.rule).to_owned(),
        decision_ms: report.decision_ms,
        has_winner: u8::from(winner.is_some()),
        winner_region: winner.map(|c| c.region.clone()).unwrap_or_default(),
        winner_relay_id: winner.map(|c| c.relay_id.clone()).unwrap_or_default(),
        winner_transport: transport(winner),
        winner_rtt_us: winner.map(|c| c.rtt_median_us).unwrap_or(0),
        previous_region: previous.map(|c| c.region.clone()).unwrap_or_default(),
        previous_relay_id: previous.map(|c| c.relay_id.clone()).unwrap_or_default(),
        previous_transport: transport(previous),
        candidates: report.candidates.len() as u8,
        failed: report
            .candidates
            .iter()
            .filter(|c| !c.error.is_empty())
            .count() as u8,
        country: enriched.country.clone(),
        asn: enriched.asn,
        isp: enriched.isp.clone(),
        platform: client.platform.clone(),
        client_version: client.client_version.clone(),
        browser_family: client.browser_family.clone(),
        effective_connection_type: client.effective_connection_type.clone(),
        synthetic,
        reason: report.reason.clone(),
        schema_version: report.schema_version as u16,
    };
    let candidates = report
        .candidates
        .iter()
        .enumerate()
        .map(|(idx, c)| CandidateRow {
            report_id,
            received_at,
            idx: idx as u8,
            session_id,
            trigger: trigger.clone(),
            region: c.region.clone(),
            relay_id: c.relay_id.clone(),
            transport: names::transport(c.transport).to_owned(),
            endpoint: c.endpoint.clone(),
            shadow: u8::from(c.shadow),
            connect_ms: c.connect_ms,
            error: c.error.clone(),
            samples: c.samples,
            lost: c.lost,
            rtt_min_us: c.rtt_min_us,
            rtt_median_us: c.rtt_median_us,
            rtt_p95_us: c.rtt_p95_us,
            rtt_mean_us: c.rtt_mean_us,
            jitter_us: c.jitter_us,
            outcome: names::outcome(c.outcome).to_owned(),
            country: enriched.country.clone(),
            asn: enriched.asn,
            isp: enriched.isp.clone(),
            platform: client.platform.clone(),
            synthetic,
        })
        .collect();
    Ok(ReportRows {
        election,
        candidates,
    })
}

/// Lower-case hex (dead-letter payloads, id filters).
pub use rallypoint_protocol::hex;
