//! The store's exactly-once writes against a real ClickHouse 18.16: a batch
//! written again (a redelivery) adds nothing, a batch overlapping stored
//! reports adds only the new ones — both for live batches (checked by the
//! seconds they were received in) and for batches spread over many seconds
//! (checked by id).

use rallypoint_collector::rows::{ReportRows, rows};
use rallypoint_collector::store::{Store, Written};
use rallypoint_lab::clickhouse::ClickHouseServer;
use rallypoint_lab::reports::{ReportGenerator, two_region_candidates};
use rallypoint_protocol::encode;
use rallypoint_protocol::v1::EnrichedElectionReport;

/// `count` reports received `spread_seconds` apart, starting at `first_ms`.
fn batch(
    generator: &mut ReportGenerator,
    count: usize,
    first_ms: u64,
    spread_seconds: u64,
) -> Vec<ReportRows> {
    (0..count)
        .map(|i| {
            let enriched = EnrichedElectionReport {
                report: Some(generator.next_report()),
                relay_id: "us-east-ws-0".into(),
                relay_region: "us-east".into(),
                received_ms: first_ms + i as u64 * spread_seconds * 1000,
                asn: 64500,
                isp: "Example".into(),
                country: "US".into(),
                peer_id: "p".into(),
            };
            rows(&encode(&enriched)).expect("a generated report is valid")
        })
        .collect()
}

fn candidates_of(reports: &[ReportRows]) -> usize {
    reports.iter().map(|r| r.candidates.len()).sum()
}

async fn counts(server: &ClickHouseServer) -> (u64, u64) {
    (
        server
            .count("SELECT count() FROM rp_elections")
            .await
            .unwrap(),
        server
            .count("SELECT count() FROM rp_candidates")
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_stored_reports_adds_nothing_and_overlaps_add_only_the_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = ClickHouseServer::start(dir.path()).await.unwrap();
    let store = Store::open(&server.url(), "default", "", "default", 90)
        .await
        .unwrap();
    let mut generator = ReportGenerator::new(two_region_candidates(), 3, true);
    let now_ms = 1_790_000_000_000;

    for (name, spread_seconds) in [("live batch", 0), ("backlog batch over 300 s", 1)] {
        let first = batch(&mut generator, 300, now_ms, spread_seconds);
        let second = batch(&mut generator, 100, now_ms + 500, spread_seconds);
        let (elections_before, candidates_before) = counts(&server).await;

        let written = store.write(&first, &[]).await.unwrap();
        assert_eq!(
            written,
            Written {
                elections: 300,
                candidates: candidates_of(&first),
                dead_letters: 0,
                duplicates: 0
            },
            "{name}: first write"
        );

        let again = store.write(&first, &[]).await.unwrap();
        assert_eq!(
            again,
            Written {
                duplicates: 300,
                ..Written::default()
            },
            "{name}: the same batch again must be skipped whole"
        );

        // Half old, all of the new: only the new ones land.
        let mut overlapping: Vec<ReportRows> = first[150..].to_vec();
        overlapping.extend(second.iter().cloned());
        let mixed = store.write(&overlapping, &[]).await.unwrap();
        assert_eq!(
            mixed,
            Written {
                elections: 100,
                candidates: candidates_of(&second),
                dead_letters: 0,
                duplicates: 150
            },
            "{name}: an overlapping batch"
        );

        let (elections, candidates) = counts(&server).await;
        assert_eq!(
            elections - elections_before,
            400,
            "{name}: stored elections"
        );
        assert_eq!(
            candidates - candidates_before,
            (candidates_of(&first) + candidates_of(&second)) as u64,
            "{name}: stored candidate rows"
        );
    }
}
