//! The collector lease on a real NATS super-cluster: one holder at a time,
//! a standby taking over once a holder that vanished has lapsed (and not
//! before its fence), at once after a clean release.

use std::time::Duration;

use rallypoint_collector::lease::{self, Leases};
use rallypoint_testkit::nats::{NatsRole, SuperCluster, SuperClusterSpec};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const TTL: Duration = Duration::from_secs(2);
const KEY: &str = "collector";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_collector_holds_the_lease_and_a_standby_takes_over_only_once_it_lapsed() {
    let dir = tempfile::tempdir().unwrap();
    let nats = SuperCluster::start(SuperClusterSpec::reference(true), dir.path())
        .await
        .unwrap();
    let admin = async_nats::jetstream::new(
        nats.access(NatsRole::Admin, "us-east")
            .connect()
            .await
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = lease::ensure_bucket(&admin, "us-east", 3, TTL).await {
        assert!(Instant::now() < deadline, "{e:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Two collectors, each with its own connection and the collector's
    // credentials.
    let mut processes = Vec::new();
    for _ in 0..2 {
        let client = nats
            .access(NatsRole::Collector, "us-east")
            .connect()
            .await
            .unwrap();
        processes.push(
            Leases::open(&async_nats::jetstream::new(client))
                .await
                .unwrap(),
        );
    }
    let first = processes[0].acquire(KEY).await;
    let first_valid = first.validity();
    let keeper = tokio::spawn(first.keep(CancellationToken::new(), CancellationToken::new()));

    // While it renews, the standby waits: several TTLs.
    let standby = {
        let leases = processes[1].clone();
        tokio::spawn(async move { leases.acquire(KEY).await })
    };
    tokio::time::sleep(TTL * 3).await;
    assert!(!standby.is_finished(), "the standby took a held lease");
    assert!(first_valid.holds());

    // The holder vanishes without a word (its renewals stop): it stops
    // acting before the standby can take over.
    keeper.abort();
    let vanished = Instant::now();
    let second = standby.await.unwrap();
    let took = vanished.elapsed();
    assert!(
        !first_valid.holds(),
        "the old holder still thinks it holds the lease"
    );
    eprintln!("taken over {took:?} after the holder vanished (TTL {TTL:?})");

    // A clean release deletes the key, for the next comer to take at once.
    let (second_lost, second_stop) = (CancellationToken::new(), CancellationToken::new());
    let second_keeper = tokio::spawn(second.keep(second_lost, second_stop.clone()));
    tokio::time::sleep(TTL).await;
    second_stop.cancel();
    second_keeper.await.unwrap();
    let bucket = admin.get_key_value(lease::BUCKET).await.unwrap();
    let entry = bucket.entry(KEY).await.unwrap();
    assert!(
        entry.is_none_or(|e| e.operation == async_nats::jetstream::kv::Operation::Delete),
        "the released lease is still there"
    );
    let third = processes[0].acquire(KEY).await;
    assert!(third.validity().holds());
}
