//! Election reports from clients: validated, rate-limited, enriched at the edge
//! and published to JetStream.
//!
//! The client's IP is used here — to look up ASN, ISP and country — and never
//! leaves this module: the published `EnrichedElectionReport` has no field that
//! could hold it. `Nats-Msg-Id` is the report id, so a report sent twice (a
//! client retrying after a lost ack) is stored once by JetStream's duplicate
//! window, and once more by the collector's idempotent insert.

mod geo;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use rallypoint_protocol::telemetry::KnownRegions;
use rallypoint_protocol::v1::{
    ElectionReport, EnrichedElectionReport, ServerFrame, TelemetryAck, TelemetryRefusal,
    server_frame,
};
use rallypoint_protocol::{encode, subjects, telemetry};

pub use geo::{GeoLookup, NetworkInfo, client_address};

use crate::metrics::Stats;
use crate::outbox::Outbox;

/// How long a relay waits for JetStream to acknowledge a report.
const PUBLISH_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// The relay side of election telemetry.
#[derive(Clone)]
pub struct Intake {
    jetstream: async_nats::jetstream::Context,
    relay_id: String,
    region: String,
    geo: Arc<GeoLookup>,
    stats: Arc<Stats>,
}

/// Where a report came from, as far as the intake may know.
pub struct ReportSource {
    pub client_ip: Option<IpAddr>,
    /// The token carries the simulator's `synthetic` claim: only then may a
    /// report be labelled synthetic and bring its own network context.
    pub may_send_synthetic: bool,
}

impl Intake {
    pub fn new(
        nats: async_nats::Client,
        relay_id: String,
        region: String,
        geo: GeoLookup,
        stats: Arc<Stats>,
    ) -> Self {
        let jetstream = async_nats::jetstream::new(nats);
        Intake {
            jetstream,
            relay_id,
            region,
            geo: Arc::new(geo),
            stats,
        }
    }

    /// Validates (against `regions`) and enriches `report`, then publishes it
    /// in the background and answers the client on `outbox` with a
    /// `TelemetryAck` once JetStream has stored it (or refused). Never blocks
    /// the connection's frame loop.
    pub fn submit(
        &self,
        report: ElectionReport,
        source: ReportSource,
        regions: KnownRegions<'_>,
        outbox: &Outbox,
    ) {
        let report_id = report.report_id.clone();
        if let Err(e) = telemetry::validate_for(&report, regions) {
            let reason = format!("invalid report: {e}");
            return self.refuse(report_id, TelemetryRefusal::Invalid, reason, outbox);
        }
        if report.client.as_ref().is_some_and(|c| c.synthetic) && !source.may_send_synthetic {
            let reason = "synthetic reports are accepted only from tokens minted for the \
                          simulator (claim `synthetic`); send real reports without the label"
                .to_owned();
            return self.refuse(
                report_id,
                TelemetryRefusal::SyntheticNotAllowed,
                reason,
                outbox,
            );
        }
        let enriched = self.enrich(report, source);
        let subject = subjects::telemetry_election(&self.region);
        let jetstream = self.jetstream.clone();
        let stats = self.stats.clone();
        let outbox = outbox.clone();
        tokio::spawn(async move {
            let frame = match publish(&jetstream, subject, &report_id, encode(&enriched)).await {
                Ok(()) => {
                    stats.reports_accepted.fetch_add(1, Relaxed);
                    ack(report_id, None)
                }
                Err(reason) => {
                    stats.reports_rejected.fetch_add(1, Relaxed);
                    ack(report_id, Some((TelemetryRefusal::Unavailable, reason)))
                }
            };
            outbox.frame(frame);
        });
    }

    /// Refuses a report: counted, and answered with a code the client acts on
    /// and a reason for people. Every refusal of a report goes through here
    /// or through the publish failure above.
    pub fn refuse(
        &self,
        report_id: Bytes,
        refusal: TelemetryRefusal,
        reason: String,
        outbox: &Outbox,
    ) {
        self.stats.reports_rejected.fetch_add(1, Relaxed);
        outbox.frame(ack(report_id, Some((refusal, reason))));
    }

    fn enrich(&self, report: ElectionReport, source: ReportSource) -> EnrichedElectionReport {
        let network = match &report.client {
            // `rallypoint simulate` invents a network context for its labelled
            // synthetic reports (`submit` let them through only from a token
            // with the simulator's claim); real reports always get the edge
            // lookup.
            Some(client) if client.synthetic => NetworkInfo {
                asn: client.synthetic_asn,
                isp: non_empty_or_unknown(&client.synthetic_isp),
                country: non_empty_or_unknown(&client.synthetic_country),
            },
            _ => source
                .client_ip
                .map(|ip| self.geo.lookup(ip))
                .unwrap_or_default(),
        };
        EnrichedElectionReport {
            report: Some(report),
            relay_id: self.relay_id.clone(),
            relay_region: self.region.clone(),
            received_ms: rallypoint_service::clock::unix_millis(),
            asn: network.asn,
            isp: network.isp,
            country: network.country,
        }
    }
}

async fn publish(
    jetstream: &async_nats::jetstream::Context,
    subject: String,
    report_id: &[u8],
    payload: Bytes,
) -> Result<(), String> {
    let message = async_nats::jetstream::message::PublishMessage::build()
        .payload(payload)
        .message_id(hex(report_id));
    let ack = jetstream
        .send_publish(subject, message)
        .await
        .map_err(|e| format!("telemetry stream unavailable ({e}); keep the report and retry"))?;
    match tokio::time::timeout(PUBLISH_ACK_TIMEOUT, ack).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!(
            "telemetry stream refused the report ({e}); retry later"
        )),
        Err(_) => Err("telemetry stream did not acknowledge in time; retry later".into()),
    }
}

/// A `TelemetryAck`: accepted when `refused` is `None`.
fn ack(report_id: Bytes, refused: Option<(TelemetryRefusal, String)>) -> Bytes {
    let (refusal, reason) = refused.unwrap_or((TelemetryRefusal::Unspecified, String::new()));
    encode(&ServerFrame::of(server_frame::Kind::TelemetryAck(
        TelemetryAck {
            report_id,
            accepted: refusal == TelemetryRefusal::Unspecified,
            reason,
            refusal: refusal as i32,
        },
    )))
}

fn non_empty_or_unknown(text: &str) -> String {
    if text.is_empty() {
        geo::UNKNOWN.to_owned()
    } else {
        text.to_owned()
    }
}

/// Lower-case hex of an id (report ids become `Nats-Msg-Id`s).
pub use rallypoint_protocol::hex;
