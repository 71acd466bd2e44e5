//! The JetStream layout for telemetry.
//!
//! * One **regional stream** per region, `TELEMETRY_<REGION>`, capturing
//!   `telemetry.election.<region>` and placed in that region's cluster. Relays
//!   publish to their own region: a report is stored (and deduplicated on
//!   `Nats-Msg-Id`) next to the relay, and keeps being accepted while the
//!   gateway to the central region is down.
//! * One **central stream**, `TELEMETRY`, in the central region, that *sources*
//!   every regional stream. Sourcing catches up on its own after a partition,
//!   and the collectors (next to ClickHouse) consume a single stream.
//!
//! Replicas follow the JetStream servers of each region (the reference stack
//! has 3 in us-east, 2 in singapore: R3 and R1 — an R2 stream stops accepting
//! writes when either server is down, so it buys nothing over R1 there).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use rallypoint_protocol::subjects;

/// How long JetStream remembers message ids for deduplication.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Regional streams keep reports this long (the central stream has them by then).
pub const REGIONAL_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The central stream keeps reports this long (a collector outage longer than
/// this loses data).
pub const CENTRAL_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);
pub const CENTRAL_STREAM: &str = "TELEMETRY";

pub fn regional_stream(region: &str) -> String {
    format!("TELEMETRY_{}", region.to_uppercase().replace('-', "_"))
}

/// Creates the regional streams and the central one if they do not exist.
pub async fn ensure(
    js: &jetstream::Context,
    regions: &[(String, usize)],
    central_region: &str,
    central_replicas: usize,
) -> anyhow::Result<stream::Stream> {
    for (region, replicas) in regions {
        let name = regional_stream(region);
        js.get_or_create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subjects::telemetry_election(region)],
            placement: Some(stream::Placement {
                cluster: Some(region.clone()),
                tags: Vec::new(),
            }),
            num_replicas: *replicas,
            duplicate_window: DUPLICATE_WINDOW,
            max_age: REGIONAL_MAX_AGE,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot create or open stream {name} in cluster {region}: {e}")
        })?;
    }
    let sources = regions
        .iter()
        .map(|(region, _)| stream::Source {
            name: regional_stream(region),
            ..Default::default()
        })
        .collect();
    js.get_or_create_stream(stream::Config {
        name: CENTRAL_STREAM.into(),
        sources: Some(sources),
        placement: Some(stream::Placement {
            cluster: Some(central_region.to_owned()),
            tags: Vec::new(),
        }),
        num_replicas: central_replicas,
        max_age: CENTRAL_MAX_AGE,
        duplicate_window: DUPLICATE_WINDOW,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot create or open stream {CENTRAL_STREAM} in cluster {central_region}: {e}"
        )
    })
}

/// The durable pull consumer collectors share.
pub async fn consumer(
    stream: &stream::Stream,
    name: &str,
) -> anyhow::Result<consumer::PullConsumer> {
    stream
        .get_or_create_consumer(
            name,
            consumer::pull::Config {
                durable_name: Some(name.to_owned()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 100_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot create or open consumer {name}: {e}"))
}

/// Opens the central stream's consumer made by `setup`; the collector's
/// credentials may read it, not create it.
pub async fn open_consumer(
    js: &jetstream::Context,
    name: &str,
) -> anyhow::Result<consumer::PullConsumer> {
    let stream = js.get_stream(CENTRAL_STREAM).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot open stream {CENTRAL_STREAM} ({e}); run `rallypoint-collector setup` with administrator credentials first"
        )
    })?;
    stream.get_consumer(name).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot open consumer {name} of {CENTRAL_STREAM} ({e}); run `rallypoint-collector setup --consumer {name}` first"
        )
    })
}
