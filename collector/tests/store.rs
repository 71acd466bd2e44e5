//! The store's exactly-once writes against a real ClickHouse 18.16: a batch
//! written again (a redelivery) adds nothing, a batch overlapping stored
//! reports adds only the new ones — both for live batches (checked by the
//! seconds they were received in) and for batches spread over many seconds
//! (checked by id). A copy of a report that arrives later, through another
//! region, is filed with the first and counted once — also for reports
//! stored before the report-key migration.

mod common;

use common::received;

use std::collections::HashMap;

use rallypoint_collector::keys::{self, KeyRow};
use rallypoint_collector::layout::Layout;
use rallypoint_collector::rows::ElectionRow;
use rallypoint_collector::rows::ReportRows;
use rallypoint_collector::schema;
use rallypoint_collector::store::{Store, Written};
use rallypoint_protocol::v1::ElectionReport;
use rallypoint_testkit::clickhouse::{ClickHouseRole, ClickHouseServer};
use rallypoint_testkit::reports::{ReportGenerator, two_region_candidates};

/// `count` reports received `spread_seconds` apart, starting at `first_ms`.
fn batch(
    generator: &mut ReportGenerator,
    count: usize,
    first_ms: u64,
    spread_seconds: u64,
) -> Vec<ReportRows> {
    let reports: Vec<ElectionReport> = (0..count).map(|_| generator.next_report()).collect();
    received(&reports, "us-east", first_ms, spread_seconds)
}

fn candidates_of(reports: &[ReportRows]) -> usize {
    reports.iter().map(|r| r.candidates.len()).sum()
}

/// A ClickHouse 18.16 of its own with the current schema.
async fn fresh_store() -> (tempfile::TempDir, ClickHouseServer, Store) {
    let dir = tempfile::tempdir().unwrap();
    let server = ClickHouseServer::start(dir.path()).await.unwrap();
    let store = common::admin_store(&server, 90).await;
    (dir, server, store)
}

/// A client writing straight to the tables (what the store would not do).
fn raw_client(server: &ClickHouseServer) -> clickhouse::Client {
    server.login(ClickHouseRole::Admin).args().client().unwrap()
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
    let (_dir, server, store) = fresh_store().await;
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
                duplicates: 0,
                found_candidates: 0,
                found_elections: 0,
            },
            "{name}: first write"
        );

        let again = store.write(&first, &[]).await.unwrap();
        assert_eq!(
            again,
            Written {
                duplicates: 300,
                found_candidates: 300,
                found_elections: 300,
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
                duplicates: 150,
                found_candidates: 150,
                found_elections: 150,
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

/// Raw distinct reports, raw rows, and what each rollup counted.
async fn report_counts(server: &ClickHouseServer) -> Vec<(&'static str, u64)> {
    let mut counts = Vec::new();
    for sql in [
        "SELECT uniqExact(report_id) FROM rp_elections",
        "SELECT count() FROM rp_elections",
        "SELECT countMerge(elections) FROM rp_elections_minute",
        "SELECT countMerge(elections) FROM rp_elections_hour",
        "SELECT countMerge(elections) FROM rp_elections_day",
        "SELECT sum(elections) FROM rp_decisions_hour",
    ] {
        counts.push((sql, server.count(sql).await.unwrap()));
    }
    counts
}

fn all_equal(counts: &[(&str, u64)], expected: u64) {
    for (sql, count) in counts {
        assert_eq!(*count, expected, "{sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_copy_from_another_region_and_a_claim_without_rows_are_stored_once() {
    let (_dir, server, store) = fresh_store().await;
    let mut generator = ReportGenerator::new(two_region_candidates(), 5, true);
    let t0 = 1_790_000_000_000;
    let reports: Vec<ElectionReport> = (0..200).map(|_| generator.next_report()).collect();

    let first = store
        .write(&received(&reports, "us-east", t0, 1), &[])
        .await
        .unwrap();
    assert_eq!(first.elections, 200);
    // Eleven minutes later, through singapore: filed at the first copies'
    // 200 seconds, so checked by id at those seconds.
    let copy = received(&reports, "singapore", t0 + 660_000, 1);
    let again = store.write(&copy, &[]).await.unwrap();
    assert_eq!(
        again,
        Written {
            duplicates: 200,
            found_candidates: 200,
            found_elections: 200,
            ..Written::default()
        }
    );
    all_equal(&report_counts(&server).await, 200);
    assert_eq!(
        server
            .count("SELECT count() FROM rp_elections WHERE relay_region = 'singapore'")
            .await
            .unwrap(),
        0,
        "the first copy's rows stay"
    );

    // A crash after the claim, before the rows: the keys alone are there.
    let claimed: Vec<ElectionReport> = (0..50).map(|_| generator.next_report()).collect();
    let original = received(&claimed, "us-east", t0 + 5_000, 0);
    let client = raw_client(&server);
    let mut insert = client.insert::<KeyRow>("rp_report_keys").await.unwrap();
    for key in keys::claims(&original) {
        insert.write(&key).await.unwrap();
    }
    insert.end().await.unwrap();
    // Another region's copy stores them, filed at the first copy's second;
    // the original, redelivered, finds them stored.
    let late = store
        .write(&received(&claimed, "singapore", t0 + 900_000, 0), &[])
        .await
        .unwrap();
    assert_eq!(late.elections, 50);
    let redelivered = store.write(&original, &[]).await.unwrap();
    assert_eq!(redelivered.duplicates, 50);
    all_equal(&report_counts(&server).await, 250);
    assert_eq!(
        server
            .count(&format!(
                "SELECT count() FROM rp_elections WHERE relay_region = 'singapore' AND received_at = {}",
                (t0 + 5_000) / 1000
            ))
            .await
            .unwrap(),
        50
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_stored_before_the_key_migration_are_recognised_in_a_late_copy() {
    let dir = tempfile::tempdir().unwrap();
    let server = ClickHouseServer::start(dir.path()).await.unwrap();
    let client = raw_client(&server);
    // A deployment of the schema before report keys, with reports in it.
    assert_eq!(
        schema::migrate_to(&client, &Layout::Single, 9)
            .await
            .unwrap(),
        9
    );
    let mut generator = ReportGenerator::new(two_region_candidates(), 6, true);
    let t0 = 1_790_000_000_000;
    let reports: Vec<ElectionReport> = (0..120).map(|_| generator.next_report()).collect();
    let mut insert = client.insert::<ElectionRow>("rp_elections").await.unwrap();
    for rows in received(&reports, "us-east", t0, 1) {
        insert.write(&rows.election).await.unwrap();
    }
    insert.end().await.unwrap();

    let store = common::admin_store(&server, 90).await;
    let copy = store
        .write(&received(&reports, "singapore", t0 + 3_600_000, 0), &[])
        .await
        .unwrap();
    assert_eq!(copy.duplicates, 120, "{copy:?}");
    all_equal(&report_counts(&server).await, 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_keys_are_found_whether_their_seconds_are_read_whole_or_named_by_id() {
    let (_dir, server, store) = fresh_store().await;
    let client = raw_client(&server);
    let mut generator = ReportGenerator::new(two_region_candidates(), 9, true);
    let t0 = 1_790_000_000_000;
    let busy_ms = t0 - 1_000;
    let crowded_ms = t0 - 200_000;
    let made_at = |generator: &mut ReportGenerator, client_ms: u64| {
        let mut report = generator.next_report();
        report.client_time_ms = client_ms;
        report
    };
    // Reports made in one busy second, by clients whose clocks are minutes
    // off (a second each), and one in a second crowded by other keys.
    let made = |generator: &mut ReportGenerator, busy: usize, scattered: u64| {
        let mut reports: Vec<ElectionReport> = (0..busy)
            .map(|_| made_at(generator, busy_ms + 500))
            .collect();
        reports.extend((0..scattered).map(|i| made_at(generator, t0 - 300_000 - i * 7_000)));
        reports
    };
    let mut stored = made(&mut generator, 300, 12);
    stored.push(made_at(&mut generator, crowded_ms));
    store
        .write(&received(&stored, "us-east", t0, 0), &[])
        .await
        .unwrap();
    // Others in the same seconds, received later, so the seconds hold keys
    // the batch does not ask about, with other receive seconds.
    let neighbours = made(&mut generator, 200, 12);
    store
        .write(&received(&neighbours, "us-east", t0 + 30_000, 0), &[])
        .await
        .unwrap();
    // 80 keys of other reports in the crowded second, and a second key (a
    // later claim) for one stored report: its earliest receive second wins.
    let mut insert = client.insert::<KeyRow>("rp_report_keys").await.unwrap();
    for i in 0..80u8 {
        let key = KeyRow {
            client_second: (crowded_ms / 1000) as u32,
            report_id: [i; 16],
            received_at: ((t0 + 60_000) / 1000) as u32,
        };
        insert.write(&key).await.unwrap();
    }
    let mut later = keys::claims(&received(&stored[..1], "singapore", t0 + 90_000, 0));
    insert.write(&later.remove(0)).await.unwrap();
    insert.end().await.unwrap();

    // Later copies of the stored reports next to unstored ones: in the busy
    // second, and in seconds no key is filed under.
    let mut unstored = made(&mut generator, 100, 0);
    unstored.extend((0..5).map(|i| made_at(&mut generator, t0 - 900_000 - i * 3_000)));
    let mut batch = received(&stored, "singapore", t0 + 700_000, 0);
    batch.extend(received(&unstored, "singapore", t0 + 700_000, 0));
    let expect: HashMap<[u8; 16], u32> = stored
        .iter()
        .map(|r| (r.report_id[..].try_into().unwrap(), (t0 / 1000) as u32))
        .collect();
    for (rows_max, how) in [
        (
            keys::WHOLE_SECONDS_ROWS_MAX,
            "busy and scattered seconds whole, the crowded one by id",
        ),
        (
            250,
            "the busy second (over 500 keys) by id, the scattered ones whole",
        ),
        (0, "every second by id"),
    ] {
        let found = keys::first_seen_reading_at_most(&client, &batch, rows_max)
            .await
            .unwrap();
        assert_eq!(found, expect, "{how}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_storing_copies_of_the_same_reports_at_once_store_them_once() {
    let (_dir, server, store) = fresh_store().await;
    let mut generator = ReportGenerator::new(two_region_candidates(), 8, true);
    let t0 = 1_790_000_000_000;
    for round in 0..5u64 {
        let reports: Vec<ElectionReport> = (0..300).map(|_| generator.next_report()).collect();
        let through_us = received(&reports, "us-east", t0 + round * 1000, 0);
        let through_sg = received(&reports, "singapore", t0 + round * 1000 + 700_000, 0);
        let (a, b) = tokio::join!(store.write(&through_us, &[]), store.write(&through_sg, &[]));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.elections + b.elections, 300, "round {round}: {a:?} {b:?}");
        assert_eq!(
            a.duplicates + b.duplicates,
            300,
            "round {round}: {a:?} {b:?}"
        );
    }
    all_equal(&report_counts(&server).await, 1500);
}

const DAY_MS: u64 = 86_400_000;

fn now_ms() -> u64 {
    rallypoint_service::clock::unix_millis()
}

/// Retention on a server without TTL (18.16): `setup`'s partition drops
/// take every table's days past the period, dead letters past it are
/// deleted too (they hold report payloads), and everything newer stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_what_is_past_the_period_and_nothing_newer() {
    let (_dir, server, store) = fresh_store().await;
    let now_ms = now_ms();
    let mut generator = ReportGenerator::new(two_region_candidates(), 7, true);
    let old = batch(&mut generator, 20, now_ms - 100 * DAY_MS, 60);
    let fresh = batch(&mut generator, 30, now_ms - DAY_MS, 60);
    let dead = |seq: u64, age_days: u64| rallypoint_collector::rows::DeadLetterRow {
        stream_seq: seq,
        stream: "TELEMETRY_US_EAST".into(),
        first_seen: ((now_ms - age_days * DAY_MS) / 1000) as u32,
        subject: "telemetry.election.us-east".into(),
        reason: "test".into(),
        payload_hex: "00".into(),
    };
    store
        .write(&[old, fresh].concat(), &[dead(1, 100), dead(2, 1)])
        .await
        .unwrap();
    assert_eq!(counts(&server).await.0, 50);

    let cleared = rallypoint_collector::retention::drop_expired(&store, 90)
        .await
        .unwrap();
    assert!(cleared > 0, "nothing was past 90 days?");
    for (table, column) in schema::RETAINED_TABLES {
        let expired = server
            .count(&format!(
                "SELECT count() FROM {table} WHERE {column} < now() - toIntervalDay(90)"
            ))
            .await
            .unwrap();
        assert_eq!(expired, 0, "{table} keeps rows past the period");
    }
    assert_eq!(counts(&server).await.0, 30, "the last 90 days stay");
    // The dead letters' delete is a mutation, applied in the background.
    let started = std::time::Instant::now();
    loop {
        let left = server
            .count("SELECT count() FROM rp_dead_letters")
            .await
            .unwrap();
        let fresh_left = server
            .count("SELECT count() FROM rp_dead_letters WHERE stream_seq = 2")
            .await
            .unwrap();
        assert_eq!(fresh_left, 1, "a day-old dead letter was deleted");
        if left == 1 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the expired dead letter is still there after 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Telemetry stores no participant identity: the session id links a
/// session's reports, and nothing derived from the user id is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_participant_identity_is_stored() {
    let (_dir, server, store) = fresh_store().await;
    let columns = server
        .query(
            "SELECT name FROM system.columns \
             WHERE database = currentDatabase() AND table LIKE 'rp_%' ORDER BY name",
        )
        .await
        .unwrap();
    for forbidden in ["peer_id", "user_id", "client_ip", "ip"] {
        assert!(
            !columns.lines().any(|c| c == forbidden),
            "a table has a {forbidden} column"
        );
    }
    // A setup interrupted after dropping the column but before recording
    // migration 11 (and so the ones after) runs them again without failing.
    server
        .query("ALTER TABLE rp_schema_migrations DELETE WHERE version >= 11")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    while schema::applied_version(store.client()).await.unwrap() >= 11 {
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    schema::migrate(store.client(), &store.layout)
        .await
        .unwrap();
    assert_eq!(
        schema::applied_version(store.client()).await.unwrap(),
        schema::latest_version()
    );
}

/// `rallypoint-collector rebuild-rollups` puts back rollups that were lost
/// or damaged, day by day, exactly as the views had built them; it refuses
/// today, a reversed range and an unknown rollup, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilding_rollups_restores_exactly_what_the_views_built() {
    let (_dir, server, store) = fresh_store().await;
    let now_ms = now_ms();
    let mut generator = ReportGenerator::new(two_region_candidates(), 11, true);
    // Two days ago and three days ago, spread over a few hours each.
    let reports = [
        batch(&mut generator, 40, now_ms - 3 * DAY_MS, 400),
        batch(&mut generator, 40, now_ms - 2 * DAY_MS, 400),
    ]
    .concat();
    store.write(&reports, &[]).await.unwrap();
    let built = common::rollup_counts(&server).await;
    assert_eq!(built.len(), 8, "{built:?}");

    // Damage: one rollup loses every day, another gets counted twice.
    let days = common::damage_rollups(&server, "").await;
    assert_ne!(
        common::rollup_counts(&server).await,
        built,
        "the damage did not show"
    );

    let admin = server.login(ClickHouseRole::Admin);
    let rebuild = move |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_rallypoint-collector"));
        command
            .arg("rebuild-rollups")
            .args(admin.cli_args())
            .args(args)
            .env(admin.env().0, admin.env().1)
            .env("RUST_LOG", "warn");
        command.output().unwrap()
    };
    let (first, last) = (days[0].clone(), days.last().unwrap().clone());
    let output = rebuild(&["--from", &first, "--to", &last]);
    let progress = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{progress}");
    assert!(progress.contains("[rebuild] rp_rtt_hour for"), "{progress}");
    assert_eq!(common::rollup_counts(&server).await, built, "{progress}");

    // Two runs at once (an operator's and a cron job's) each stage in
    // tables of their own: both finish, and the rollups are what the views
    // built.
    common::damage_rollups(&server, "").await;
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let rebuild = rebuild.clone();
            let (first, last) = (first.clone(), last.clone());
            std::thread::spawn(move || rebuild(&["--from", &first, "--to", &last]))
        })
        .collect();
    for run in runs {
        let output = run.join().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(common::rollup_counts(&server).await, built);
    assert_eq!(
        server
            .count("SELECT count() FROM system.tables WHERE name LIKE '%rebuild%'")
            .await
            .unwrap(),
        0,
        "no staging table left"
    );

    // Refusals name what is wrong and change nothing.
    let today = server.query("SELECT toString(today())").await.unwrap();
    let refused = |args: &[&str], says: &str| {
        let output = rebuild(args);
        let error = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            !output.status.success() && error.contains(says),
            "{args:?}: {error}"
        );
    };
    refused(&["--from", &first, "--to", today.trim()], "not over yet");
    refused(&["--from", &last, "--to", &first], "after --to");
    refused(
        &["--from", &first, "--to", &last, "--rollup", "rp_nothing"],
        "not a rollup",
    );
    refused(&["--from", "2026-13-01", "--to", &last], "not a day");
    assert_eq!(common::rollup_counts(&server).await, built);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_known_by_stream_and_sequence() {
    let (_dir, clickhouse, store) = fresh_store().await;
    // Each regional stream numbers its messages from 1: the same sequence
    // in two streams is two dead letters; a redelivery of one is the same.
    let dead = |stream: &str| rallypoint_collector::rows::DeadLetterRow {
        stream_seq: 7,
        stream: stream.into(),
        first_seen: (now_ms() / 1000) as u32,
        subject: "telemetry.election.x".into(),
        reason: "test".into(),
        payload_hex: "00".into(),
    };
    let letters = [dead("TELEMETRY_US_EAST"), dead("TELEMETRY_SINGAPORE")];
    store.write(&[], &letters).await.unwrap();
    store.write(&[], &letters[..1]).await.unwrap();
    clickhouse
        .query("OPTIMIZE TABLE rp_dead_letters FINAL")
        .await
        .unwrap();
    assert_eq!(
        clickhouse
            .count("SELECT count() FROM rp_dead_letters")
            .await
            .unwrap(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_databases_dead_letters_are_rekeyed_by_stream_and_keep_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    let server = ClickHouseServer::start(dir.path()).await.unwrap();
    let client = raw_client(&server);
    // The dead-letter table as migration 2 made it before migration 12.
    server
        .query(
            "CREATE TABLE rp_dead_letters (stream_seq UInt64, first_seen DateTime, \
             subject String, reason String, payload_hex String) \
             ENGINE = ReplacingMergeTree() ORDER BY stream_seq",
        )
        .await
        .unwrap();
    server
        .query("INSERT INTO rp_dead_letters VALUES (7, now(), 'telemetry.election.us-east', 'old', '00')")
        .await
        .unwrap();
    assert_eq!(
        schema::migrate_to(&client, &Layout::Single, 11)
            .await
            .unwrap(),
        11
    );
    let key = "SELECT sorting_key FROM system.tables \
               WHERE database = currentDatabase() AND name = 'rp_dead_letters'";
    assert_eq!(server.query(key).await.unwrap().trim(), "stream_seq");

    let store = common::admin_store(&server, 90).await;
    assert_eq!(
        server.query(key).await.unwrap().trim(),
        "stream_seq, stream"
    );
    let letter = rallypoint_collector::rows::DeadLetterRow {
        stream_seq: 7,
        stream: "TELEMETRY_SINGAPORE".into(),
        first_seen: (now_ms() / 1000) as u32,
        subject: "telemetry.election.singapore".into(),
        reason: "new".into(),
        payload_hex: "00".into(),
    };
    store.write(&[], &[letter]).await.unwrap();
    server
        .query("OPTIMIZE TABLE rp_dead_letters FINAL")
        .await
        .unwrap();
    assert_eq!(
        server
            .query("SELECT stream, reason FROM rp_dead_letters ORDER BY reason")
            .await
            .unwrap(),
        "TELEMETRY_SINGAPORE\tnew\n\told\n"
    );
}
