//! The telemetry streams on a real NATS super-cluster: created bounded,
//! streams an older collector made brought to the bounds, and a message
//! larger than the largest report refused at publish.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use rallypoint_collector::streams::{self, CENTRAL_STREAM, StreamBounds};
use rallypoint_testkit::nats::{NatsRole, SuperCluster, SuperClusterSpec};

const BOUNDS: StreamBounds = StreamBounds {
    duplicate_window: Duration::from_secs(90),
    regional_max_bytes: 64 << 20,
    central_max_bytes: 128 << 20,
    max_msg_size: 80 * 1024,
};

fn regions() -> Vec<(String, usize)> {
    vec![("us-east".into(), 3), ("singapore".into(), 1)]
}

/// Retries while the JetStream meta group of a fresh super-cluster settles.
async fn ensure(js: &jetstream::Context) -> stream::Stream {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match streams::ensure(js, &regions(), "us-east", 3, &BOUNDS).await {
            Ok(central) => return central,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("streams not ready yet: {e:#}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("{e:#}"),
        }
    }
}

async fn config(js: &jetstream::Context, name: &str) -> stream::Config {
    js.get_stream(name)
        .await
        .unwrap()
        .cached_info()
        .config
        .clone()
}

fn assert_bounded(config: &stream::Config, max_bytes: i64) {
    assert_eq!(config.max_bytes, max_bytes, "{}", config.name);
    assert_eq!(
        config.max_message_size, BOUNDS.max_msg_size,
        "{}",
        config.name
    );
    assert_eq!(
        config.discard,
        stream::DiscardPolicy::Old,
        "{}",
        config.name
    );
    assert_eq!(
        config.duplicate_window, BOUNDS.duplicate_window,
        "{}",
        config.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_an_older_collector_made_are_bounded_and_oversized_reports_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = SuperCluster::start(SuperClusterSpec::reference(true), dir.path())
        .await
        .unwrap();
    let client = nats
        .access(NatsRole::Admin, "us-east")
        .connect()
        .await
        .unwrap();
    let js = jetstream::new(client);

    // What an older collector left: the us-east stream without any bound.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Err(e) = js
        .create_stream(stream::Config {
            name: streams::regional_stream("us-east"),
            subjects: vec!["telemetry.election.us-east".into()],
            placement: Some(stream::Placement {
                cluster: Some("us-east".into()),
                tags: Vec::new(),
            }),
            num_replicas: 3,
            duplicate_window: Duration::from_secs(600),
            ..Default::default()
        })
        .await
    {
        assert!(tokio::time::Instant::now() < deadline, "{e}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(config(&js, "TELEMETRY_US_EAST").await.max_bytes, -1);

    ensure(&js).await;
    assert_bounded(
        &config(&js, "TELEMETRY_US_EAST").await,
        BOUNDS.regional_max_bytes,
    );
    assert_bounded(
        &config(&js, "TELEMETRY_SINGAPORE").await,
        BOUNDS.regional_max_bytes,
    );
    let central = config(&js, CENTRAL_STREAM).await;
    assert_bounded(&central, BOUNDS.central_max_bytes);
    assert_eq!(central.sources.map_or(0, |s| s.len()), 2);
    assert_eq!(
        config(&js, "TELEMETRY_US_EAST").await.num_replicas,
        3,
        "replicas untouched"
    );
    // A second start changes nothing and succeeds.
    ensure(&js).await;

    let publish = |size: usize| {
        let js = js.clone();
        async move {
            let ack = js
                .publish("telemetry.election.us-east", vec![7u8; size].into())
                .await
                .map_err(|e| e.to_string())?;
            tokio::time::timeout(Duration::from_secs(10), ack)
                .await
                .map_err(|_| "no publish ack in 10 s".to_owned())?
                .map_err(|e| e.to_string())
        }
    };
    let largest = BOUNDS.max_msg_size as usize;
    publish(largest)
        .await
        .expect("a message of max_msg_size is stored");
    let refused = publish(largest + 1)
        .await
        .expect_err("a message one byte over max_msg_size is refused");
    assert!(
        refused.to_lowercase().contains("size"),
        "refused for its size: {refused}"
    );
    nats.stop().await;
}
