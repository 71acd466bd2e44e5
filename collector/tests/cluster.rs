//! The schema over a ClickHouse cluster (`--clickhouse-cluster`): two real
//! 18.16 servers as the two replicas of one shard, with a real ZooKeeper,
//! beside a single server given the same reports.
//!
//! One shard of two replicas, mostly: one server stores 46–50 k reports/s
//! (BENCHMARKS.md), several times what the whole pipeline delivers, so what
//! a growing deployment needs first from a second server is surviving the
//! loss of one. Sharding uses the same DDL (rows with a report id are
//! sharded by it, see `layout`); two shards are exercised where they
//! change what a command does (rebuilding the rollups, shard by shard).

mod common;

use common::received;

use std::time::{Duration, Instant};

use rallypoint_collector::rebuild::Run;
use rallypoint_collector::retention;
use rallypoint_collector::rows::{DeadLetterRow, ReportRows};
use rallypoint_collector::store::Store;
use rallypoint_dashboard::data::{Db, Source, matrix, outcomes, overview};
use rallypoint_dashboard::filters::Filters;
use rallypoint_protocol::v1::ElectionReport;
use rallypoint_testkit::clickhouse::{ClickHouseCluster, ClickHouseRole, ClickHouseServer};
use rallypoint_testkit::reports::{ReportGenerator, two_region_candidates};

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;
const REPLICATION_DEADLINE: Duration = Duration::from_secs(60);

fn now_ms() -> u64 {
    rallypoint_service::clock::unix_millis()
}

/// Writes `rows` (and `dead` letters) through both stores.
async fn write_both(clustered: &Store, alone: &Store, rows: &[ReportRows], dead: &[DeadLetterRow]) {
    clustered.write(rows, dead).await.unwrap();
    alone.write(rows, dead).await.unwrap();
}

fn dead_letter(stream_seq: u64, first_seen_ms: u64) -> DeadLetterRow {
    DeadLetterRow {
        stream_seq,
        stream: "TELEMETRY_US_EAST".into(),
        first_seen: (first_seen_ms / 1000) as u32,
        subject: "telemetry.election.us-east".into(),
        reason: "test".into(),
        payload_hex: "00".into(),
    }
}

/// What the dashboard shows over the last day, from rollups and raw rows.
async fn dashboard_numbers(db: &Db, until: u32) -> String {
    let day = Filters {
        range: Some("24h".into()),
        until: Some(until),
        synthetic: Some(1),
        ..Default::default()
    };
    let mut shown = String::new();
    for source in [Source::Rollup, Source::Raw] {
        shown += &format!(
            "{:?}\n{:?}\n",
            overview::load(db, &day, until, source).await.unwrap(),
            matrix::cells(db, &day, until, source).await.unwrap()
        );
    }
    shown + &format!("{:?}", outcomes::load(db, &day, until).await.unwrap())
}

/// Rows of each replicated table on `server` itself (not through the
/// `Distributed` tables, which could read another replica).
async fn local_rows(server: &ClickHouseServer) -> String {
    server
        .query(
            "SELECT table, sum(rows) FROM system.parts \
             WHERE database = currentDatabase() AND active AND table LIKE 'rp_%_local' \
             GROUP BY table ORDER BY table",
        )
        .await
        .unwrap()
}

/// Waits until every replica holds the same rows as `reference`.
async fn replicas_agree(cluster: &ClickHouseCluster) -> String {
    let deadline = Instant::now() + REPLICATION_DEADLINE;
    loop {
        let mut tables = Vec::new();
        for replica in &cluster.replicas {
            tables.push(local_rows(replica).await);
        }
        if tables.windows(2).all(|pair| pair[0] == pair[1]) {
            return tables.remove(0);
        }
        assert!(
            Instant::now() < deadline,
            "replicas still differ after {REPLICATION_DEADLINE:?}: {tables:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether `server` leads the replication of its `table`.
async fn leads(server: &ClickHouseServer, table: &str) -> bool {
    let sql = format!("SELECT count() FROM system.replicas WHERE table = '{table}' AND is_leader");
    server.count(&sql).await.unwrap() == 1
}

/// Waits until `sql` on `server` counts `expected`.
async fn eventually(server: &ClickHouseServer, sql: &str, expected: u64) {
    let deadline = Instant::now() + REPLICATION_DEADLINE;
    loop {
        let count = server.count(sql).await.unwrap();
        if count == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql}: {count}, not {expected}, after {REPLICATION_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_stores_each_report_once_survives_a_replica_restart_and_reads_like_one_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = ClickHouseCluster::start(&dir.path().join("cluster"), "rallypoint", 2)
        .await
        .unwrap();
    let single = ClickHouseServer::start(&dir.path().join("single"))
        .await
        .unwrap();
    let admin = cluster.replicas[0].login(ClickHouseRole::Admin).args();
    let cluster_admin = Store::open(&admin, 90).await.unwrap();
    let single_admin = common::admin_store(&single, 90).await;
    // Set up again, as the daily job does: nothing changes.
    Store::open(&admin, 90).await.unwrap();
    // Without the cluster's name, setup refuses rather than make
    // single-server tables beside the clustered ones.
    let mut unclustered = admin.clone();
    unclustered.cluster = None;
    let refused = Store::open(&unclustered, 30).await.err().expect("refused");
    assert!(
        refused.to_string().contains("--clickhouse-cluster"),
        "{refused}"
    );
    let collector = |server: &ClickHouseServer| server.login(ClickHouseRole::Collector).args();
    let through_first = Store::connect(&collector(&cluster.replicas[0]))
        .await
        .unwrap();
    let alone = Store::connect(&collector(&single)).await.unwrap();

    let mut generator = ReportGenerator::new(two_region_candidates(), 21, true);
    let mut reports =
        |count| -> Vec<ElectionReport> { (0..count).map(|_| generator.next_report()).collect() };
    let t0 = now_ms() - 6 * HOUR_MS;
    // Reports and a dead letter past the 90-day retention, for later.
    let expired = reports(40);
    let long_ago = now_ms() - 100 * DAY_MS;
    let old_rows = received(&expired, "us-east", long_ago, 60);
    let old_dead = [dead_letter(1, long_ago)];
    write_both(&through_first, &alone, &old_rows, &old_dead).await;
    let first = reports(300);
    let (first_rows, dead) = (received(&first, "us-east", t0, 20), [dead_letter(2, t0)]);
    write_both(&through_first, &alone, &first_rows, &dead).await;
    // A redelivery, and late copies through another region an hour later.
    write_both(&through_first, &alone, &first_rows, &dead).await;
    let late = received(&first[..100], "singapore", t0 + HOUR_MS, 1);
    write_both(&through_first, &alone, &late, &[]).await;

    // The second replica is down while reports are stored through the first.
    cluster.replicas[1].stop().await;
    let while_down = reports(200);
    write_both(
        &through_first,
        &alone,
        &received(&while_down, "us-east", t0 + 2 * HOUR_MS, 10),
        &[],
    )
    .await;
    cluster.replicas[1].restart().await.unwrap();
    replicas_agree(&cluster).await;

    // The collector fails over to the second replica while the first is down.
    cluster.replicas[0].stop().await;
    let through_second = Store::connect(&collector(&cluster.replicas[1]))
        .await
        .unwrap();
    let after_failover = reports(150);
    let rows = received(&after_failover, "singapore", t0 + 3 * HOUR_MS, 10);
    write_both(&through_second, &alone, &rows, &[]).await;
    // ... where a late copy of a report the first replica stored is found.
    write_both(
        &through_second,
        &alone,
        &received(&while_down[..50], "singapore", t0 + 4 * HOUR_MS, 1),
        &[],
    )
    .await;
    cluster.replicas[0].restart().await.unwrap();
    replicas_agree(&cluster).await;

    // Retention, run by setup through one server, reaches every replica
    // (deleting rows is a mutation, done in the background).
    match retention::drop_expired(&cluster_admin, 90).await {
        Ok(dropped) => assert!(dropped > 0),
        // Seen once in a full run (2026-12-04): an ON CLUSTER delete after a
        // replica restart waited out 18.16's 180 s DDL timeout on one
        // replica. Say what each replica's DDL worker logged (the test's
        // servers log warnings and errors) and its last errors.
        Err(e) => {
            let logs: Vec<String> = cluster
                .replicas
                .iter()
                .enumerate()
                .map(|(i, replica)| {
                    format!(
                        "replica {i}, DDLWorker:\n{}\nreplica {i}, errors:\n{}",
                        replica.log_lines_mentioning("DDLWorker", 30),
                        replica.error_log_tail()
                    )
                })
                .collect();
            panic!(
                "retention through the cluster failed: {e:#}\n{}",
                logs.join("\n")
            );
        }
    }
    assert!(retention::drop_expired(&single_admin, 90).await.unwrap() > 0);
    let distinct = (first.len() + while_down.len() + after_failover.len()) as u64;
    for replica in &cluster.replicas {
        eventually(replica, "SELECT count() FROM rp_dead_letters_local", 1).await;
        eventually(replica, "SELECT count() FROM rp_elections_local", distinct).await;
        eventually(
            replica,
            "SELECT count() FROM rp_report_keys_local",
            distinct,
        )
        .await;
    }
    let tables = replicas_agree(&cluster).await;

    // Each report once, on every replica; the expired ones nowhere.
    for replica in &cluster.replicas {
        assert_eq!(
            replica
                .count("SELECT count() FROM rp_elections_local")
                .await
                .unwrap(),
            distinct,
            "{tables}"
        );
    }
    assert_eq!(
        single
            .count("SELECT count() FROM rp_elections")
            .await
            .unwrap(),
        distinct
    );
    // Every view's numbers, read through either replica, equal one server's.
    let until = (now_ms() / 1000) as u32;
    let expected = dashboard_numbers(
        &Db::new(&single.login(ClickHouseRole::Dashboard).args()).unwrap(),
        until,
    )
    .await;
    assert!(expected.contains("total_elections: "), "{expected}");
    for replica in &cluster.replicas {
        let shown = dashboard_numbers(
            &Db::new(&replica.login(ClickHouseRole::Dashboard).args()).unwrap(),
            until,
        )
        .await;
        assert_eq!(shown, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_server_schema_is_not_taken_for_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let single = ClickHouseServer::start(dir.path()).await.unwrap();
    common::admin_store(&single, 30).await;
    let as_cluster = single
        .login(ClickHouseRole::Admin)
        .args()
        .with_cluster("rallypoint");
    let refused = Store::open(&as_cluster, 30).await.err().expect("refused");
    assert!(
        refused.to_string().contains("single-server schema"),
        "{refused}"
    );
    // Nothing was created for the cluster.
    assert_eq!(
        single
            .count("SELECT count() FROM system.tables WHERE name LIKE '%_local'")
            .await
            .unwrap(),
        0
    );
}

/// `rebuild-rollups` on a cluster rebuilds the shard of the server it is
/// pointed at from that server's own rows — after fetching what its
/// replica stored and it has not yet — and the rebuilt rollups reach every
/// replica: each ends with exactly what the views built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilding_a_clusters_rollups_restores_what_the_views_built_on_every_replica() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ClickHouseCluster::start(&dir.path().join("cluster"), "rallypoint", 2)
        .await
        .unwrap();
    Store::open(&cluster.replicas[0].login(ClickHouseRole::Admin).args(), 90)
        .await
        .unwrap();
    // Both replicas have the schema's version before a store opens.
    replicas_agree(&cluster).await;
    // `first` leads the replication of the rollup damaged below: an 18.16
    // replica hands `DROP PARTITION` to the leader as a user without a
    // password, which these servers refuse (see `retention`). The rebuild
    // goes through `second`, which does not lead it: its `REPLACE
    // PARTITION` is its own.
    let (first, second) = if leads(&cluster.replicas[0], "rp_rtt_hour_local").await {
        (&cluster.replicas[0], &cluster.replicas[1])
    } else {
        (&cluster.replicas[1], &cluster.replicas[0])
    };
    assert!(leads(first, "rp_rtt_hour_local").await);
    assert!(!leads(second, "rp_rtt_hour_local").await);
    let store = Store::connect(&first.login(ClickHouseRole::Collector).args())
        .await
        .unwrap();
    let mut generator = ReportGenerator::new(two_region_candidates(), 31, true);
    let mut reports =
        |count| -> Vec<ElectionReport> { (0..count).map(|_| generator.next_report()).collect() };
    let now = now_ms();
    let rows = received(&reports(60), "us-east", now - 3 * DAY_MS, 300);
    store.write(&rows, &[]).await.unwrap();
    replicas_agree(&cluster).await;
    // The second replica does not fetch the next day's reports (a replica
    // that was down, or behind) until the rebuild has started.
    second.query("SYSTEM STOP FETCHES").await.unwrap();
    let rows = received(&reports(60), "singapore", now - 2 * DAY_MS, 300);
    store.write(&rows, &[]).await.unwrap();
    let built = common::rollup_counts(first).await;
    assert_eq!(built.len(), 8, "{built:?}");

    // Damage, replicated from the first replica: one rollup loses its
    // days, another is counted twice.
    let days = common::damage_rollups(first, "_local").await;
    assert_ne!(common::rollup_counts(first).await, built, "no damage shown");

    // Rebuilt through the second replica while it still misses a day.
    let admin = second.login(ClickHouseRole::Admin);
    let rebuild = tokio::process::Command::new(env!("CARGO_BIN_EXE_rallypoint-collector"))
        .arg("rebuild-rollups")
        .args(admin.cli_args())
        .args(["--from", &days[0], "--to", days.last().unwrap()])
        .env(admin.env().0, admin.env().1)
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    second.query("SYSTEM START FETCHES").await.unwrap();
    let output = tokio::time::timeout(REPLICATION_DEADLINE, rebuild.wait_with_output())
        .await
        .expect("the rebuild ends")
        .unwrap();
    let progress = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{progress}");
    assert!(progress.contains("rebuilding shard 1 of 1"), "{progress}");
    assert!(progress.contains("[rebuild] rp_rtt_hour for"), "{progress}");
    // The staging tables are gone, and never were replicated.
    for replica in &cluster.replicas {
        assert_eq!(
            replica
                .count("SELECT count() FROM system.tables WHERE name LIKE '%rebuild%'")
                .await
                .unwrap(),
            0
        );
    }

    let tables = replicas_agree(&cluster).await;
    for replica in &cluster.replicas {
        assert_eq!(
            common::rollup_counts(replica).await,
            built,
            "{tables}\n{progress}"
        );
    }

    // Its statements stay on the server that answered the first: one that a
    // load balancer sends to the other replica fails there, and says why.
    let run = Run::new();
    let login = |server: &ClickHouseServer| server.login(ClickHouseRole::Admin).args();
    let pinned = run.pin(&login(first).client().unwrap()).await.unwrap();
    pinned.execute("SELECT 1").await.unwrap();
    let elsewhere = pinned.sent_to(&login(second).url);
    let refused = elsewhere
        .execute("SELECT 1")
        .await
        .expect_err("another server");
    let explained = format!("{:#}", run.explain(refused.into()));
    assert!(explained.contains("not a load-balanced one"), "{explained}");
}

/// On two shards, `rebuild-rollups` rebuilds the shard of the server it is
/// pointed at, from that shard's rows, says which shard it did and that the
/// others remain, and leaves the other shard as it was; run against a
/// server of each, every shard ends with exactly what its views built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilding_the_rollups_of_two_shards_one_at_a_time_restores_each() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ClickHouseCluster::start_sharded(&dir.path().join("cluster"), "rallypoint", 2, 1)
        .await
        .unwrap();
    let shards = [&cluster.replicas[0], &cluster.replicas[1]];
    Store::open(&shards[0].login(ClickHouseRole::Admin).args(), 90)
        .await
        .unwrap();
    let store = Store::connect(&shards[0].login(ClickHouseRole::Collector).args())
        .await
        .unwrap();
    let mut generator = ReportGenerator::new(two_region_candidates(), 37, true);
    let reports: Vec<ElectionReport> = (0..120).map(|_| generator.next_report()).collect();
    let now = now_ms();
    store
        .write(
            &received(&reports[..60], "us-east", now - 3 * DAY_MS, 300),
            &[],
        )
        .await
        .unwrap();
    store
        .write(
            &received(&reports[60..], "singapore", now - 2 * DAY_MS, 300),
            &[],
        )
        .await
        .unwrap();
    // Each shard holds part of the reports (sharded by report id), and the
    // rollups its views built from them.
    let mut built = Vec::new();
    for shard in shards {
        let held = shard
            .count("SELECT count() FROM rp_elections_local")
            .await
            .unwrap();
        assert!((1..120).contains(&held), "a shard holds {held} of 120");
        built.push(common::rollup_counts(shard).await);
    }
    assert_ne!(built[0], built[1]);
    let mut days = Vec::new();
    for (shard, built) in shards.iter().zip(&built) {
        days.extend(common::damage_rollups(shard, "_local").await);
        assert_ne!(
            &common::rollup_counts(shard).await,
            built,
            "no damage shown"
        );
    }
    days.sort_unstable();
    days.dedup();
    let damaged_second = common::rollup_counts(shards[1]).await;

    let rebuild = |server: &ClickHouseServer| {
        let admin = server.login(ClickHouseRole::Admin);
        let (from, to) = (days[0].clone(), days.last().unwrap().clone());
        async move {
            let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_rallypoint-collector"))
                .arg("rebuild-rollups")
                .args(admin.cli_args())
                .args(["--from", &from, "--to", &to])
                .env(admin.env().0, admin.env().1)
                .env("RUST_LOG", "warn")
                .kill_on_drop(true)
                .output();
            let output = tokio::time::timeout(REPLICATION_DEADLINE, output)
                .await
                .expect("the rebuild ends")
                .unwrap();
            let progress = String::from_utf8_lossy(&output.stderr).into_owned();
            assert!(output.status.success(), "{progress}");
            progress
        }
    };
    let progress = rebuild(shards[0]).await;
    assert!(progress.contains("rebuilding shard 1 of 2"), "{progress}");
    assert!(
        progress.contains("that was shard 1 of 2: run the same command"),
        "{progress}"
    );
    assert_eq!(
        common::rollup_counts(shards[0]).await,
        built[0],
        "{progress}"
    );
    assert_eq!(
        common::rollup_counts(shards[1]).await,
        damaged_second,
        "the other shard was left alone"
    );
    let progress = rebuild(shards[1]).await;
    assert!(progress.contains("rebuilding shard 2 of 2"), "{progress}");
    assert_eq!(
        common::rollup_counts(shards[1]).await,
        built[1],
        "{progress}"
    );
    assert_eq!(common::rollup_counts(shards[0]).await, built[0]);
}
