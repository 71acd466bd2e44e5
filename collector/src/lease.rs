//! One active collector at a time.
//!
//! Copies of one report reach the collectors as two messages when they
//! arrive more than a duplicate window apart (a client resending through
//! another region after a long outage). Within a process the workers never
//! store two copies at once (`in_flight`); two processes could — both find
//! no key, both insert, and every rollup counts the report twice. Measured
//! without the lease: two collectors draining a backlog that held two such
//! copies of 2 000 reports stored 496 of them twice
//! (`tests/pipeline.rs`). ClickHouse has no lock to prevent it, so the
//! processes take turns: a lease in a NATS key-value bucket ([`BUCKET`], one
//! key per consumer name, next to the central stream). The active collector renews it every quarter of
//! the bucket's `max_age` (its TTL: an entry not renewed expires); the others
//! wait, ready, and one takes over once it has expired — within a TTL of the
//! active one dying, at once when it stops cleanly (it deletes the key). One
//! process with several workers per stream keeps up with what one
//! ClickHouse stores (BENCHMARKS.md: two collectors were no faster than one).
//!
//! **Fenced by time**: the holder stores (and acknowledges) nothing once
//! three quarters of a TTL have passed since it sent its last confirmed
//! renewal — before the entry can expire, which the server counts from when
//! it stored the renewal, later than it was sent. What is left: a write
//! already on its way to ClickHouse when the lease lapses (a collector cut
//! off from NATS but not from ClickHouse) can land after a successor's write
//! of another region's copy of the same report.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The bucket holding the lease, one key per consumer name.
pub const BUCKET: &str = "RALLYPOINT_COLLECTORS";

/// Makes the lease bucket in `region`'s cluster (`setup`), or brings its TTL
/// to `ttl`.
pub async fn ensure_bucket(
    js: &jetstream::Context,
    region: &str,
    replicas: usize,
    ttl: Duration,
) -> anyhow::Result<()> {
    // Any error opening it (missing, most likely): creating it says what
    // is wrong if something else is.
    match js.get_key_value(BUCKET).await {
        Ok(bucket) => {
            let mut info = bucket.status().await?.info;
            if info.config.max_age != ttl {
                info.config.max_age = ttl;
                js.update_stream(info.config)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot set the lease TTL: {e}"))?;
            }
            Ok(())
        }
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: BUCKET.into(),
                description: "which collector stores telemetry (rallypoint-collector)".into(),
                history: 1,
                max_age: ttl,
                num_replicas: replicas,
                placement: Some(stream::Placement {
                    cluster: Some(region.to_owned()),
                    tags: Vec::new(),
                }),
                ..Default::default()
            })
            .await
            .map(drop)
            .map_err(|e| anyhow::anyhow!("cannot create the lease bucket {BUCKET}: {e}")),
    }
}

/// The lease bucket as a collector sees it: where, and how long a lease
/// lives unrenewed.
#[derive(Clone)]
pub struct Leases {
    bucket: kv::Store,
    ttl: Duration,
}

impl Leases {
    pub async fn open(js: &jetstream::Context) -> anyhow::Result<Leases> {
        let bucket = js.get_key_value(BUCKET).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot open the lease bucket {BUCKET} ({e}); run `rallypoint-collector setup` first"
            )
        })?;
        let ttl = bucket.status().await?.info.config.max_age;
        if ttl.is_zero() {
            anyhow::bail!(
                "the lease bucket {BUCKET} has no max_age: run `rallypoint-collector setup`"
            );
        }
        Ok(Leases { bucket, ttl })
    }

    /// Waits until this process holds the lease on `key` (a caller stops
    /// waiting by dropping the future).
    pub async fn acquire(&self, key: &str) -> Lease {
        // Who holds it, for an operator reading the bucket.
        let started = rallypoint_service::clock::unix_micros();
        let host = std::env::var("HOSTNAME").unwrap_or_default();
        let holder = Bytes::from(format!("{host}/{}/{started}", std::process::id()));
        let mut waiting_said = false;
        loop {
            let sent = Instant::now();
            match self.bucket.create(key, holder.clone()).await {
                Ok(revision) => {
                    tracing::info!(key, "holding the collector lease: storing telemetry");
                    return Lease {
                        leases: self.clone(),
                        key: key.to_owned(),
                        holder,
                        revision,
                        valid_until: Validity(Arc::new(Mutex::new(sent + self.fenced()))),
                    };
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    if !waiting_said {
                        tracing::info!(key, "another collector holds the lease: standing by");
                        waiting_said = true;
                    }
                }
                Err(e) => tracing::warn!(key, "cannot take the collector lease: {e}"),
            }
            tokio::time::sleep(self.ttl / 4).await;
        }
    }

    /// How long after sending a confirmed renewal the holder may still act.
    fn fenced(&self) -> Duration {
        self.ttl * 3 / 4
    }
}

/// Whether the lease still holds: checked before every write.
#[derive(Clone, Debug)]
pub struct Validity(Arc<Mutex<Instant>>);

impl Validity {
    pub fn holds(&self) -> bool {
        Instant::now() < *self.0.lock().expect("not poisoned")
    }
}

pub struct Lease {
    leases: Leases,
    key: String,
    holder: Bytes,
    revision: u64,
    valid_until: Validity,
}

impl Lease {
    pub fn validity(&self) -> Validity {
        self.valid_until.clone()
    }

    /// Renews the lease until `stop` (then releases it) or until it is lost
    /// (then cancels `lost`).
    pub async fn keep(mut self, lost: CancellationToken, stop: CancellationToken) {
        let period = self.leases.ttl / 4;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stop.cancelled() => {
                    self.release().await;
                    return;
                }
            }
            let sent = Instant::now();
            match self
                .leases
                .bucket
                .update(&self.key, self.holder.clone(), self.revision)
                .await
            {
                Ok(revision) => {
                    self.revision = revision;
                    *self.valid_until.0.lock().expect("not poisoned") = sent + self.leases.fenced();
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    tracing::warn!(key = %self.key, "the collector lease was taken over: standing by");
                    lost.cancel();
                    return;
                }
                Err(e) if !self.valid_until.holds() => {
                    tracing::warn!(key = %self.key, "could not renew the collector lease in time ({e}): standing by");
                    lost.cancel();
                    return;
                }
                Err(e) => {
                    tracing::warn!(key = %self.key, "renewing the collector lease: {e}; trying again")
                }
            }
        }
    }

    /// Lets a standby take over at once (it would after a TTL anyway).
    async fn release(&self) {
        let released = self
            .leases
            .bucket
            .delete_expect_revision(&self.key, Some(self.revision))
            .await;
        match released {
            Ok(()) => tracing::info!(key = %self.key, "released the collector lease"),
            Err(e) => {
                tracing::warn!(key = %self.key, "cannot release the collector lease ({e}); it expires by itself")
            }
        }
    }
}
