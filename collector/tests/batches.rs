//! Batches bounded by bytes, with real parts: a backlog of large reports in
//! the telemetry streams of a NATS super-cluster, one collector process and
//! ClickHouse 18.16.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use rallypoint_collector::streams::{self, StreamBounds};
use rallypoint_lab::clickhouse::ClickHouseServer;
use rallypoint_lab::collector::{CollectorProcess, CollectorSpec};
use rallypoint_lab::nats::{SuperCluster, SuperClusterSpec};
use rallypoint_lab::reports::ReportGenerator;
use rallypoint_protocol::v1::EnrichedElectionReport;
use rallypoint_protocol::{encode, hex};

/// A valid report near the largest a client may send: 16 candidates with
/// long endpoints and the longest reason.
fn large_report(generator: &mut ReportGenerator) -> EnrichedElectionReport {
    let mut report = generator.next_report();
    report.reason = "r".repeat(512);
    let loser = report
        .candidates
        .iter()
        .find(|c| c.error.is_empty())
        .cloned()
        .unwrap();
    report.candidates.truncate(4);
    while report.candidates.len() < 16 {
        report.candidates.push(loser.clone());
    }
    for candidate in &mut report.candidates {
        candidate.endpoint = format!("wss://{}/", "e".repeat(500));
    }
    if let Some(winner) = report.winner_index {
        report.winner_index = Some(winner.min(3));
    }
    EnrichedElectionReport {
        report: Some(report),
        relay_id: "us-east-ws-0".into(),
        relay_region: "us-east".into(),
        received_ms: 1_790_000_000_000,
        asn: 64500,
        isp: "Example".into(),
        country: "US".into(),
        peer_id: "p".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_large_reports_is_taken_in_batches_bounded_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = SuperCluster::start(SuperClusterSpec::reference(true), &dir.path().join("nats"))
        .await
        .unwrap();
    let mut clickhouse = ClickHouseServer::start(&dir.path().join("clickhouse"))
        .await
        .unwrap();
    let js = jetstream::new(
        async_nats::connect(nats.urls("us-east")[0].clone())
            .await
            .unwrap(),
    );
    let regions = vec![("us-east".to_owned(), 3), ("singapore".to_owned(), 1)];
    let bounds = StreamBounds {
        duplicate_window: Duration::from_secs(600),
        regional_max_bytes: 256 << 20,
        central_max_bytes: 512 << 20,
        max_msg_size: 80 * 1024,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = streams::ensure(&js, &regions, "us-east", 3, &bounds).await {
        assert!(Instant::now() < deadline, "{e:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The backlog a collector finds after an outage.
    const N: u64 = 400;
    let mut generator =
        ReportGenerator::new(rallypoint_lab::reports::two_region_candidates(), 21, false);
    let mut total_bytes = 0;
    for _ in 0..N {
        let enriched = large_report(&mut generator);
        rallypoint_protocol::telemetry::validate(enriched.report.as_ref().unwrap()).unwrap();
        let id = hex(&enriched.report.as_ref().unwrap().report_id);
        let payload = encode(&enriched);
        total_bytes += payload.len();
        let message = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(id);
        js.send_publish("telemetry.election.us-east", message)
            .await
            .unwrap()
            .await
            .unwrap();
    }

    const BATCH_BYTES: usize = 1 << 20;
    let mut collector = CollectorProcess::start(
        CollectorSpec {
            name: "collector-0".into(),
            nats_urls: nats.urls("us-east"),
            regions: vec!["us-east:3".into(), "singapore:1".into()],
            central_region: "us-east".into(),
            central_replicas: 3,
            clickhouse_url: clickhouse.url(),
            extra_args: vec![
                "--batch-bytes".into(),
                "1MiB".into(),
                "--batch-wait".into(),
                "3s".into(),
                "--workers".into(),
                "1".into(),
                "--regional-max-bytes".into(),
                "256MiB".into(),
                "--central-max-bytes".into(),
                "512MiB".into(),
            ],
        },
        &dir.path().join("collector"),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let stats = loop {
        let stats = collector.stats().await.unwrap();
        if stats["elections_stored"].as_u64() == Some(N) {
            break stats;
        }
        assert!(Instant::now() < deadline, "not all stored: {stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let batches = stats["batches"].as_u64().unwrap();
    let fewest = total_bytes.div_ceil(BATCH_BYTES) as u64;
    eprintln!(
        "{N} reports, {total_bytes} bytes of payload, {batches} batches (at least {fewest}); peak RSS {:?}",
        collector.peak_memory()
    );
    assert!(
        batches >= fewest,
        "{batches} batches for {total_bytes} bytes: not bounded by 1 MiB"
    );
    assert_eq!(
        clickhouse
            .count("SELECT count() FROM rp_elections")
            .await
            .unwrap(),
        N
    );
    collector.stop().await;
    clickhouse.stop().await;
    nats.stop().await;
}
