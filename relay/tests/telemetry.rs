//! What a relay's telemetry intake lets through, against the real relay
//! binary and a real JetStream stream: forged inputs are refused with a code
//! the client can act on, and nothing of them is stored.

mod support;

use std::time::Duration;

use rallypoint_client::TransportKind::WebSocket;
use rallypoint_client_native::{ClientIdentity, Peer};
use rallypoint_lab::nats::NatsRole;
use rallypoint_lab::reports::ReportGenerator;
use rallypoint_protocol::v1::{
    ClientFrame, ElectionReport, EnrichedElectionReport, TelemetryAck, TelemetryRefusal,
    TelemetryReport, client_frame, server_frame, telemetry_report,
};
use rallypoint_protocol::{prost::Message, subjects};
use support::*;

const STREAM: &str = "TEST_TELEMETRY";

/// A stream holding every region's telemetry, as the collector's would.
async fn telemetry_stream(lab: &Lab) -> async_nats::jetstream::stream::Stream {
    let admin = lab
        .nats
        .access(NatsRole::Admin, "us-east")
        .connect()
        .await
        .expect("admin connects");
    async_nats::jetstream::new(admin)
        .create_stream(async_nats::jetstream::stream::Config {
            name: STREAM.into(),
            subjects: vec![format!("{}.>", subjects::TELEMETRY_ELECTION_PREFIX)],
            ..Default::default()
        })
        .await
        .expect("stream created")
}

/// Sends `report` and waits for its acknowledgement.
async fn submit(peer: &mut Peer, report: ElectionReport) -> TelemetryAck {
    let id = report.report_id.clone();
    peer.conn
        .send(&ClientFrame::of(client_frame::Kind::Telemetry(
            TelemetryReport {
                kind: Some(telemetry_report::Kind::Election(report)),
            },
        )));
    peer.expect("TelemetryAck", T, |kind| match kind {
        server_frame::Kind::TelemetryAck(ack) if ack.report_id == id => Some(ack.clone()),
        _ => None,
    })
    .await
    .expect("acknowledged")
}

/// Every report the stream holds.
async fn stored(stream: &mut async_nats::jetstream::stream::Stream) -> Vec<EnrichedElectionReport> {
    let last = stream.info().await.expect("stream info").state.last_sequence;
    let mut reports = Vec::new();
    for seq in 1..=last {
        let message = stream.get_raw_message(seq).await.expect("stored message");
        reports.push(EnrichedElectionReport::decode(message.payload).expect("decodes"));
    }
    reports
}

fn synthetic(generator: &mut ReportGenerator) -> ElectionReport {
    let mut report = generator.next_report();
    let client = report.client.as_mut().expect("generated reports say their client");
    assert!(client.synthetic, "the generator labels its reports");
    client.synthetic_isp = "Forged Networks".into();
    client.synthetic_asn = 64_512;
    client.synthetic_country = "AQ".into();
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_simulator_tokens_may_send_synthetic_reports() {
    let lab = Lab::two_regions_with_jetstream(&[]).await;
    let mut stream = telemetry_stream(&lab).await;
    let candidate = lab.candidate(0, WebSocket);
    let mut generator = ReportGenerator::new(lab.relays[0].candidates(), 3, true);

    // A browser's token: its synthetic report is refused, and says why.
    let mut browser = Peer::connect(&candidate, &lab.identity("lobby", "browser"), T)
        .await
        .expect("connects");
    let forged = synthetic(&mut generator);
    let ack = submit(&mut browser, forged.clone()).await;
    assert!(!ack.accepted, "a forged synthetic report was accepted");
    assert_eq!(
        ack.refusal(),
        TelemetryRefusal::SyntheticNotAllowed,
        "refused as {:?}: {}",
        ack.refusal(),
        ack.reason
    );
    assert!(
        ack.reason.contains("synthetic"),
        "the reason says what was wrong: {}",
        ack.reason
    );

    // The simulator's token: the same kind of report is stored with the
    // network it invented.
    let simulator = ClientIdentity::new(lab.issuer.mint_simulator(
        "lobby",
        "simulator",
        "simulator",
        Duration::from_secs(600),
    ));
    let mut simulator = Peer::connect(&candidate, &simulator, T)
        .await
        .expect("connects");
    let labelled = synthetic(&mut generator);
    let ack = submit(&mut simulator, labelled.clone()).await;
    assert!(ack.accepted, "simulator report refused: {}", ack.reason);
    assert_eq!(ack.refusal(), TelemetryRefusal::Unspecified);

    let reports = stored(&mut stream).await;
    assert_eq!(
        reports
            .iter()
            .map(|r| r.report.as_ref().unwrap().report_id.clone())
            .collect::<Vec<_>>(),
        vec![labelled.report_id],
        "only the simulator's report is stored"
    );
    assert_eq!(
        (reports[0].isp.as_str(), reports[0].asn, reports[0].country.as_str()),
        ("Forged Networks", 64_512, "AQ")
    );
}
