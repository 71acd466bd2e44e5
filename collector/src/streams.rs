//! The JetStream layout for telemetry.
//!
//! One **regional stream** per region, `TELEMETRY_<REGION>`, capturing
//! `telemetry.election.<region>` and placed in that region's cluster. Relays
//! publish to their own region: a report is stored (and deduplicated on
//! `Nats-Msg-Id`) next to the relay, and keeps being accepted while the
//! gateway to the collectors' region is down. The collectors consume every
//! regional stream directly, through a durable pull consumer of the same
//! name on each: **one JetStream write per report**. While a region's
//! gateway is down its reports wait in its stream, and the collectors pull
//! them once it is back.
//!
//! (A central stream, `TELEMETRY`, used to source every regional stream so
//! the collectors read one: every report was written twice, each R3, and the
//! pipeline ran at 0.4 of what JetStream takes. Its duplicate window also
//! dropped copies of a report sent through two regions, which the store now
//! catches whatever the time between them: see `store`. `retire_central`
//! deletes it where an older setup made it; new consumers read the regional
//! streams from their first message, and the store skips what an older
//! collector already stored.)
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
//! oldest reports go first: by then they have long been stored in ClickHouse
//! (the collectors keep up within seconds), while *discard new* would let
//! one flood stop all telemetry — the failure the bound is there to
//! prevent. The price, stated: a collector or gateway outage that lasts
//! longer than the bytes a stream holds loses the oldest unconsumed reports
//! (at the defaults, hundreds of thousands of reports per region). The
//! duplicate window's length is a setting so tests can pass it quickly; the
//! store does not rely on it (see `store`).
//!
//! Streams that already exist are brought to these settings at start
//! (`get_or_create` alone would keep whatever an older collector made).
//! Replicas and placement are left as they are: moving a stream is an
//! operator's decision.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use rallypoint_protocol::subjects;

/// Regional streams keep reports this long: a collector outage longer than
/// this loses the oldest.
pub const REGIONAL_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);
/// The stream older setups made to source every regional one.
pub const RETIRED_CENTRAL_STREAM: &str = "TELEMETRY";

/// What the collector configures on every telemetry stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamBounds {
    /// How long JetStream remembers message ids (report ids) to drop copies.
    pub duplicate_window: Duration,
    /// Most bytes each regional stream holds.
    pub regional_max_bytes: i64,
    /// Largest message (an enriched report) a stream accepts.
    pub max_msg_size: i32,
}

pub fn regional_stream(region: &str) -> String {
    format!("TELEMETRY_{}", region.to_uppercase().replace('-', "_"))
}

/// Creates the regional streams, or brings existing ones to `bounds`.
pub async fn ensure(
    js: &jetstream::Context,
    regions: &[(String, usize)],
    bounds: &StreamBounds,
) -> anyhow::Result<Vec<stream::Stream>> {
    let mut streams = Vec::with_capacity(regions.len());
    for (region, replicas) in regions {
        let stream = ensure_one(
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
        streams.push(stream);
    }
    Ok(streams)
}

/// Deletes the central stream an older setup made, if there is one: it
/// would go on copying every report. What its consumer had not delivered is
/// in the regional streams too (they keep reports as long as it did), which
/// the collectors' new consumers read from the start. Returns whether there
/// was one.
pub async fn retire_central(js: &jetstream::Context) -> anyhow::Result<bool> {
    let mut central = match js.get_stream(RETIRED_CENTRAL_STREAM).await {
        Ok(stream) => stream,
        Err(e) if is_missing(&e) => return Ok(false),
        Err(e) => anyhow::bail!("cannot open stream {RETIRED_CENTRAL_STREAM}: {e}"),
    };
    let messages = central
        .info()
        .await
        .map(|info| info.state.messages)
        .unwrap_or_default();
    js.delete_stream(RETIRED_CENTRAL_STREAM)
        .await
        .map_err(|e| anyhow::anyhow!("cannot delete stream {RETIRED_CENTRAL_STREAM}: {e}"))?;
    tracing::info!(
        stream = RETIRED_CENTRAL_STREAM,
        messages,
        "deleted the central stream: collectors now read the regional streams"
    );
    Ok(true)
}

fn is_missing(error: &jetstream::context::GetStreamError) -> bool {
    matches!(error.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref j)
        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
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
            if !is_missing(&e) {
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
/// `None` when they already match.
fn managed_update(current: &stream::Config, wanted: &stream::Config) -> Option<stream::Config> {
    let same = current.subjects == wanted.subjects
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
        duplicate_window: wanted.duplicate_window,
        max_age: wanted.max_age,
        max_bytes: wanted.max_bytes,
        max_message_size: wanted.max_message_size,
        discard: wanted.discard,
        ..current.clone()
    })
}

/// The durable pull consumer collectors share on `stream`. A new one
/// starts at the stream's first message.
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

/// Opens the consumer `setup` made on each region's stream; the collector's
/// credentials may read them, not create them.
pub async fn open_consumers(
    js: &jetstream::Context,
    regions: &[(String, usize)],
    name: &str,
) -> anyhow::Result<Vec<consumer::PullConsumer>> {
    let mut consumers = Vec::with_capacity(regions.len());
    for (region, _) in regions {
        let stream_name = regional_stream(region);
        let stream = js.get_stream(&stream_name).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot open stream {stream_name} ({e}); run `rallypoint-collector setup` with administrator credentials first"
            )
        })?;
        let consumer = stream.get_consumer(name).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot open consumer {name} of {stream_name} ({e}); run `rallypoint-collector setup --consumer {name}` first"
            )
        })?;
        consumers.push(consumer);
    }
    Ok(consumers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(window: Duration, subjects: &[&str]) -> stream::Config {
        stream::Config {
            name: regional_stream("us-east"),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            duplicate_window: window,
            max_bytes: 1 << 30,
            max_message_size: 80 * 1024,
            ..Default::default()
        }
    }

    #[test]
    fn only_differences_in_managed_fields_update_a_stream() {
        let minutes = Duration::from_secs(600);
        let subject = ["telemetry.election.us-east"];
        let wanted = config(minutes, &subject);
        let mut current = config(minutes, &subject);
        current.num_replicas = 3;
        current.description = Some("kept".into());
        assert!(managed_update(&current, &wanted).is_none());

        let older = config(Duration::from_secs(120), &["telemetry.us-east"]);
        let updated = managed_update(&older, &wanted).expect("window and subjects differ");
        assert_eq!(updated.duplicate_window, minutes);
        assert_eq!(updated.subjects, wanted.subjects);

        current.max_bytes = 0;
        let updated = managed_update(&current, &wanted).expect("unbounded before");
        assert_eq!(updated.max_bytes, 1 << 30);
        assert_eq!(updated.num_replicas, 3, "replicas are the operator's");
        assert_eq!(updated.description.as_deref(), Some("kept"));
    }
}
