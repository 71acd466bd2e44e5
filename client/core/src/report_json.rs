//! The JSON form of an `ElectionReport` that `rallypoint probe --json` prints
//! and the README documents. Enums are lower-case words, times are
//! milliseconds with microsecond precision, ids are hex.

use rallypoint_protocol::hex;
use rallypoint_protocol::names::{outcome, rule, transport, trigger};
use rallypoint_protocol::v1::ElectionReport;
use serde_json::{Value, json};

pub fn report_json(report: &ElectionReport) -> Value {
    let ms = |us: u32| us as f64 / 1000.0;
    let candidates: Vec<Value> = report
        .candidates
        .iter()
        .map(|c| {
            json!({
                "region": c.region,
                "relay_id": c.relay_id,
                "transport": transport(c.transport),
                "endpoint": c.endpoint,
                "shadow": c.shadow,
                "connect_ms": c.connect_ms,
                "error": if c.error.is_empty() { Value::Null } else { json!(c.error) },
                "samples": c.samples,
                "lost": c.lost,
                "rtt_ms": if c.samples == 0 { Value::Null } else { json!({
                    "min": ms(c.rtt_min_us),
                    "median": ms(c.rtt_median_us),
                    "p95": ms(c.rtt_p95_us),
                    "mean": ms(c.rtt_mean_us),
                    "jitter": ms(c.jitter_us),
                })},
                "outcome": outcome(c.outcome),
            })
        })
        .collect();
    let client = report.client.clone().unwrap_or_default();
    json!({
        "schema_version": report.schema_version,
        "report_id": hex(&report.report_id),
        "session_id": hex(&report.client_session_id),
        "session_seq": report.session_seq,
        "client_time_ms": report.client_time_ms,
        "trigger": trigger(report.trigger),
        "rule": rule(report.rule),
        "decision_ms": report.decision_ms,
        "winner": report.winner_index,
        "previous": report.previous_index,
        "reason": report.reason,
        "client": {
            "platform": client.platform,
            "version": client.client_version,
            "browser_family": client.browser_family,
            "effective_connection_type": client.effective_connection_type,
        },
        "candidates": candidates,
    })
}
