//! What a relay's telemetry intake lets through, against the real relay
//! binary and a real JetStream stream: forged inputs are refused with a code
//! the client can act on, and nothing of them is stored.

mod support;

use std::time::Duration;

use rallypoint_client::Candidate;
use rallypoint_client::TransportKind::WebSocket;
use rallypoint_client_native::Peer;
use rallypoint_protocol::v1::{
    ClientFrame, ElectionReport, EnrichedElectionReport, TelemetryAck, TelemetryRefusal,
    TelemetryReport, client_frame, server_frame, telemetry_report,
};
use rallypoint_protocol::{prost::Message, subjects};
use rallypoint_testkit::nats::NatsRole;
use rallypoint_testkit::reports::ReportGenerator;
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
    let last = stream
        .info()
        .await
        .expect("stream info")
        .state
        .last_sequence;
    let mut reports = Vec::new();
    for seq in 1..=last {
        let message = stream.get_raw_message(seq).await.expect("stored message");
        reports.push(EnrichedElectionReport::decode(message.payload).expect("decodes"));
    }
    reports
}

fn synthetic(generator: &mut ReportGenerator) -> ElectionReport {
    let mut report = generator.next_report();
    let client = report
        .client
        .as_mut()
        .expect("generated reports say their client");
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
    let simulator = rallypoint_client_native::identity(lab.issuer.mint_simulator(
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
        (
            reports[0].isp.as_str(),
            reports[0].asn,
            reports[0].country.as_str()
        ),
        ("Forged Networks", 64_512, "AQ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_naming_unknown_regions_or_values_are_refused_as_invalid() {
    let lab = Lab::two_regions_with_jetstream(&["--known-regions", "us-east,singapore"]).await;
    let mut stream = telemetry_stream(&lab).await;
    let mut generator = ReportGenerator::new(lab.relays[0].candidates(), 5, false);
    let mut peer = Peer::connect(
        &lab.candidate(0, WebSocket),
        &lab.identity("lobby", "client"),
        T,
    )
    .await
    .expect("connects");

    let mut made_up_region = generator.next_report();
    made_up_region.candidates[0].region = "atlantis".into();
    let mut made_up_rule = generator.next_report();
    made_up_rule.rule = 77;
    let mut made_up_outcome = generator.next_report();
    made_up_outcome.candidates[0].outcome = 0;
    for (what, report, words) in [
        ("a region", made_up_region, "atlantis"),
        ("a rule", made_up_rule, "rule"),
        ("an outcome", made_up_outcome, "outcome"),
    ] {
        let ack = submit(&mut peer, report).await;
        assert!(!ack.accepted, "a report with made-up {what} was accepted");
        assert_eq!(ack.refusal(), TelemetryRefusal::Invalid, "{}", ack.reason);
        assert!(ack.reason.contains(words), "{what}: {}", ack.reason);
    }
    let real = generator.next_report();
    let ack = submit(&mut peer, real.clone()).await;
    assert!(ack.accepted, "a real report was refused: {}", ack.reason);

    let ids: Vec<_> = stored(&mut stream)
        .await
        .into_iter()
        .map(|r| r.report.unwrap().report_id)
        .collect();
    assert_eq!(ids, vec![real.report_id], "only the real report is stored");
}

/// Sends `count` reports through `peer`; (accepted, rate limited). Any
/// other refusal fails the test.
async fn submit_counting(
    peer: &mut Peer,
    generator: &mut ReportGenerator,
    count: usize,
) -> (usize, usize) {
    let (mut accepted, mut limited) = (0, 0);
    for _ in 0..count {
        let ack = submit(peer, generator.next_report()).await;
        match (ack.accepted, ack.refusal()) {
            (true, _) => accepted += 1,
            (false, TelemetryRefusal::RateLimited) => limited += 1,
            (false, other) => panic!("refused as {other:?}: {}", ack.reason),
        }
    }
    (accepted, limited)
}

/// Checks `accepted` against a budget of `per_minute` (a burst of the
/// whole budget, then its rate) over the time since `started`, and that
/// what was acknowledged is what is stored.
async fn within_budget(
    stream: &mut async_nats::jetstream::stream::Stream,
    whose: &str,
    per_minute: usize,
    started: tokio::time::Instant,
    accepted: usize,
) {
    let elapsed = started.elapsed();
    let budget = per_minute + (elapsed.as_secs_f64() * per_minute as f64 / 60.0).ceil() as usize;
    eprintln!("[telemetry] {whose}, over {elapsed:.1?}: {accepted} accepted (budget {budget})");
    assert!(
        (per_minute..=budget).contains(&accepted),
        "{accepted} reports accepted for {whose} with a budget of {budget}"
    );
    let stored = stored(stream).await.len();
    assert_eq!(stored, accepted, "what was acknowledged is what is stored");
}

/// Budget of the flood tests: 12 reports a minute per token.
const FLOOD_PER_MINUTE: usize = 12;
const FLOOD_ROUNDS: usize = 20;
const FLOOD_PER_ROUND: usize = 5;

/// One token reconnecting every half second, [`FLOOD_ROUNDS`] times, each
/// time to the next of `relays` in turn, sending [`FLOOD_PER_ROUND`]
/// reports a time; checks it got no more than [`FLOOD_PER_MINUTE`]'s budget.
async fn flood(lab: &Lab, relays: &[Candidate], user: &str, seed: u64) {
    let mut stream = telemetry_stream(lab).await;
    let identity = lab.identity("lobby", user);
    let mut generator = ReportGenerator::new(lab.relays[0].candidates(), seed, false);
    let (mut accepted, mut limited) = (0, 0);
    let started = tokio::time::Instant::now();
    for round in 0..FLOOD_ROUNDS {
        let mut peer = Peer::connect(&relays[round % relays.len()], &identity, T)
            .await
            .expect("connects");
        let (a, l) = submit_counting(&mut peer, &mut generator, FLOOD_PER_ROUND).await;
        (accepted, limited) = (accepted + a, limited + l);
        drop(peer);
        // Every half second, and never sooner than 300 ms after a round (a
        // slow round on a loaded machine must not start the next at once):
        // the region's relays tell each other what they accepted every
        // 100 ms, and the flood is a client's, not a race against that.
        let scheduled = started + Duration::from_millis(500) * (round as u32 + 1);
        let settled = tokio::time::Instant::now() + Duration::from_millis(300);
        tokio::time::sleep_until(scheduled.max(settled)).await;
    }
    assert_eq!(accepted + limited, FLOOD_ROUNDS * FLOOD_PER_ROUND);
    within_budget(&mut stream, user, FLOOD_PER_MINUTE, started, accepted).await;
}

/// The flood: one token reconnecting over and over (a fresh
/// connection, and so a fresh per-connection budget, every half second),
/// shortened from 60 s to 10 s with a budget of 12 a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_reconnecting_twenty_times_gets_no_more_than_its_budget_stored() {
    let lab = Lab::two_regions_with_jetstream(&["--reports-per-minute", "12"]).await;
    flood(&lab, &[lab.candidate(0, WebSocket)], "flooder", 11).await;
}

/// The same flood spread over the two relays of one region, alternating
/// between them (each hears what the other accepted within ~100 ms, and a
/// round comes every 500 ms): the region holds the token to one budget, not
/// one per relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_alternating_between_a_regions_relays_gets_no_more_than_one_budget() {
    let args = ["--reports-per-minute", "12"];
    let mut lab = Lab::two_regions_with_jetstream(&args).await;
    let second = lab.add_relay("us-east", "us-east-1", &args).await;
    let relays = [
        lab.candidate(0, WebSocket),
        lab.candidate(second, WebSocket),
    ];
    flood(&lab, &relays, "spreader", 13).await;
}

/// Many tokens from one machine: each within its own budget, together held
/// to the address's (all of this test's clients come from 127.0.0.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tokens_from_one_address_get_no_more_than_the_address_budget() {
    const PER_ADDRESS: usize = 20;
    const TOKENS: usize = 10;
    const PER_TOKEN: usize = 5;
    let lab = Lab::two_regions_with_jetstream(&[
        "--reports-per-minute",
        "1000",
        "--reports-per-minute-per-address",
        "20",
    ])
    .await;
    let mut stream = telemetry_stream(&lab).await;
    let candidate = lab.candidate(0, WebSocket);
    let mut generator = ReportGenerator::new(lab.relays[0].candidates(), 12, false);
    let (mut accepted, mut limited) = (0, 0);
    let started = tokio::time::Instant::now();
    for token in 0..TOKENS {
        let identity = lab.identity("lobby", &format!("sybil-{token}"));
        let mut peer = Peer::connect(&candidate, &identity, T)
            .await
            .expect("connects");
        let (a, l) = submit_counting(&mut peer, &mut generator, PER_TOKEN).await;
        (accepted, limited) = (accepted + a, limited + l);
    }
    assert_eq!(accepted + limited, TOKENS * PER_TOKEN);
    within_budget(&mut stream, "one address", PER_ADDRESS, started, accepted).await;
}

/// The same machine's tokens spread over the two relays of one region, each
/// token on the other relay than the one before (the relays share the
/// region's address key, so each hears the address's reports as a keyed
/// digest within ~100 ms): the region holds the machine to one address
/// budget, not one per relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tokens_from_one_address_spread_over_a_regions_relays_get_one_address_budget() {
    const PER_ADDRESS: usize = 20;
    const TOKENS: usize = 10;
    const PER_TOKEN: usize = 5;
    let args = [
        "--reports-per-minute",
        "1000",
        "--reports-per-minute-per-address",
        "20",
    ];
    let mut lab = Lab::two_regions_with_jetstream(&args).await;
    let second = lab.add_relay("us-east", "us-east-1", &args).await;
    let relays = [
        lab.candidate(0, WebSocket),
        lab.candidate(second, WebSocket),
    ];
    let mut stream = telemetry_stream(&lab).await;
    let mut generator = ReportGenerator::new(lab.relays[0].candidates(), 14, false);
    let (mut accepted, mut limited) = (0, 0);
    let started = tokio::time::Instant::now();
    for token in 0..TOKENS {
        let identity = lab.identity("lobby", &format!("sybil-{token}"));
        let mut peer = Peer::connect(&relays[token % relays.len()], &identity, T)
            .await
            .expect("connects");
        let (a, l) = submit_counting(&mut peer, &mut generator, PER_TOKEN).await;
        (accepted, limited) = (accepted + a, limited + l);
        // Longer than a tally interval: the other relay has heard.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(accepted + limited, TOKENS * PER_TOKEN);
    within_budget(
        &mut stream,
        "one address over two relays",
        PER_ADDRESS,
        started,
        accepted,
    )
    .await;
}
