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
//! **Why the central copy stays**, measured (2026-12-02, this machine):
//! consuming the regional streams directly saves a write per report
//! (JetStream alone took 36–44 k reports/s instead of 25–30 k), but the
//! collector bounds end to end either way (12.8 k/s), and pulling two
//! regional streams across the gateway at once stalled: one region's
//! messages went undelivered until their `ack_wait` (30 s) and were then
//! redelivered, so draining a backlog of both regions fell from 17 k to
//! 2.7 k reports/s. Sourcing is flow-controlled by JetStream itself across
//! the gateway, and its duplicate window drops copies of a report sent
//! through two regions close together before any collector sees them.
//!
//! Replicas follow the JetStream servers of each region (the reference stack
//! has 3 in us-east, 2 in singapore: R3 and R1 — an R2 stream stops accepting
//! writes when either server is down, so it buys nothing over R1 there).
//!
//! **Bounds.** Every stream has a `max_bytes`, a `max_msg_size` and the
//! *discard old* policy. Without them one token sending as fast as it can
//! fills the JetStream servers' storage, and then every stream on them
//! stops. `max_msg_size` refuses (at publish, with an error to the relay)
//! anything larger than the largest valid report. When a stream is full the
//! oldest reports go first: by then they have long been sourced into the
//! central stream and stored in ClickHouse (the collector keeps up within
//! seconds), while *discard new* would let one flood stop all telemetry — the
//! failure the bound is there to prevent. The price, stated: a collector or
//! gateway outage that lasts longer than the bytes a stream holds loses the
//! oldest unconsumed reports (at the defaults, hundreds of thousands of
//! reports per region). The duplicate window's length is a setting so tests
//! can pass it quickly; the store does not rely on it (see `store`).
//!
//! Streams that already exist are brought to these settings at start
//! (`get_or_create` alone would keep whatever an older collector made).
//! Replicas and placement are left as they are: moving a stream is an
//! operator's decision.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use rallypoint_protocol::subjects;

/// Regional streams keep reports this long (the central stream has them by then).
pub const REGIONAL_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The central stream keeps reports this long (a collector outage longer than
/// this loses data).
pub const CENTRAL_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);
pub const CENTRAL_STREAM: &str = "TELEMETRY";

/// What the collector configures on every telemetry stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamBounds {
    /// How long JetStream remembers message ids (report ids) to drop copies.
    pub duplicate_window: Duration,
    /// Most bytes each regional stream holds.
    pub regional_max_bytes: i64,
    /// Most bytes the central stream holds.
    pub central_max_bytes: i64,
    /// Largest message (an enriched report) a stream accepts.
    pub max_msg_size: i32,
}

pub fn regional_stream(region: &str) -> String {
    format!("TELEMETRY_{}", region.to_uppercase().replace('-', "_"))
}

/// Creates the regional streams and the central one, or brings existing ones
/// to `bounds` and the current list of regions.
pub async fn ensure(
    js: &jetstream::Context,
    regions: &[(String, usize)],
    central_region: &str,
    central_replicas: usize,
    bounds: &StreamBounds,
) -> anyhow::Result<stream::Stream> {
    for (region, replicas) in regions {
        ensure_one(
            js,
            stream::Config {
                name: regional_stream(region),
                subjects: vec![subjects::telemetry_election(region)],
                placement: Some(stream::Placement {
                    cluster: Some(region.clone()),
                    tags: Vec::new(),
                }),
                num_replicas: *replicas,
                duplicate_window: bounds.duplicate_window,
                max_age: REGIONAL_MAX_AGE,
                max_bytes: bounds.regional_max_bytes,
                max_message_size: bounds.max_msg_size,
                discard: stream::DiscardPolicy::Old,
                storage: stream::StorageType::File,
                ..Default::default()
            },
            region,
        )
        .await?;
    }
    let sources = regions
        .iter()
        .map(|(region, _)| stream::Source {
            name: regional_stream(region),
            ..Default::default()
        })
        .collect();
    ensure_one(
        js,
        stream::Config {
            name: CENTRAL_STREAM.into(),
            sources: Some(sources),
            placement: Some(stream::Placement {
                cluster: Some(central_region.to_owned()),
                tags: Vec::new(),
            }),
            num_replicas: central_replicas,
            max_age: CENTRAL_MAX_AGE,
            duplicate_window: bounds.duplicate_window,
            max_bytes: bounds.central_max_bytes,
            max_message_size: bounds.max_msg_size,
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            ..Default::default()
        },
        central_region,
    )
    .await
}

/// Creates `wanted`, or updates the stream of that name where it differs in
/// what the collector manages.
async fn ensure_one(
    js: &jetstream::Context,
    wanted: stream::Config,
    cluster: &str,
) -> anyhow::Result<stream::Stream> {
    let name = wanted.name.clone();
    let existing = match js.get_stream(&name).await {
        Ok(stream) => stream,
        Err(e) => {
            let missing = matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND);
            if !missing {
                anyhow::bail!("cannot open stream {name}: {e}");
            }
            return js.create_stream(wanted).await.map_err(|e| {
                anyhow::anyhow!("cannot create stream {name} in cluster {cluster}: {e}")
            });
        }
    };
    let current = &existing.cached_info().config;
    let Some(updated) = managed_update(current, &wanted) else {
        return Ok(existing);
    };
    tracing::info!(
        stream = %name,
        "bringing the stream to the collector's settings (was: window {:?}, max_bytes {}, max_msg_size {}, discard {:?})",
        current.duplicate_window,
        current.max_bytes,
        current.max_message_size,
        current.discard
    );
    js.update_stream(updated)
        .await
        .map_err(|e| anyhow::anyhow!("cannot update stream {name}: {e}"))?;
    js.get_stream(&name)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open stream {name} after updating it: {e}"))
}

/// `current` with the fields the collector manages taken from `wanted`, or
/// `None` when they already match. Sources are compared by name.
fn managed_update(current: &stream::Config, wanted: &stream::Config) -> Option<stream::Config> {
    let source_names = |c: &stream::Config| -> Vec<String> {
        let mut names: Vec<String> = c.sources.iter().flatten().map(|s| s.name.clone()).collect();
        names.sort();
        names
    };
    let same = current.subjects == wanted.subjects
        && source_names(current) == source_names(wanted)
        && current.duplicate_window == wanted.duplicate_window
        && current.max_age == wanted.max_age
        && current.max_bytes == wanted.max_bytes
        && current.max_message_size == wanted.max_message_size
        && current.discard == wanted.discard;
    if same {
        return None;
    }
    Some(stream::Config {
        subjects: wanted.subjects.clone(),
        sources: wanted.sources.clone(),
        duplicate_window: wanted.duplicate_window,
        max_age: wanted.max_age,
        max_bytes: wanted.max_bytes,
        max_message_size: wanted.max_message_size,
        discard: wanted.discard,
        ..current.clone()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(window: Duration, sources: &[&str]) -> stream::Config {
        stream::Config {
            name: CENTRAL_STREAM.into(),
            sources: Some(
                sources
                    .iter()
                    .map(|name| stream::Source {
                        name: (*name).into(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            duplicate_window: window,
            max_bytes: 1 << 30,
            max_message_size: 80 * 1024,
            ..Default::default()
        }
    }

    #[test]
    fn only_differences_in_managed_fields_update_a_stream() {
        let minutes = Duration::from_secs(600);
        let wanted = config(minutes, &["A", "B"]);
        let mut current = config(minutes, &["B", "A"]);
        current.num_replicas = 3;
        current.description = Some("kept".into());
        assert!(
            managed_update(&current, &wanted).is_none(),
            "same sources in another order"
        );

        let older = config(Duration::from_secs(120), &["A"]);
        let updated = managed_update(&older, &wanted).expect("window and sources differ");
        assert_eq!(updated.duplicate_window, minutes);
        assert_eq!(source_count(&updated), 2);

        current.max_bytes = 0;
        let updated = managed_update(&current, &wanted).expect("unbounded before");
        assert_eq!(updated.max_bytes, 1 << 30);
        assert_eq!(updated.num_replicas, 3, "replicas are the operator's");
        assert_eq!(updated.description.as_deref(), Some("kept"));
    }

    fn source_count(config: &stream::Config) -> usize {
        config.sources.as_ref().map_or(0, Vec::len)
    }
}
