//! The consume → store → acknowledge loop.
//!
//! A batch is up to `batch_size` messages, or `batch_bytes` of payload, or
//! whatever arrived within `batch_wait`: count alone is not a bound — 5000
//! maximum-size reports decode to more than a gigabyte — so the bytes bound
//! the batch and what the pull fetches ahead of it. Messages that cannot be stored (undecodable, invalid) become
//! dead letters with their reason, in the same write: they never block the
//! stream and are never retried. Acknowledgements are sent only after the
//! write succeeded. While ClickHouse is down the loop retries the same batch
//! with backoff, keeps its messages from being redelivered elsewhere
//! ("in progress"), and pulls nothing new: memory stays bounded by one batch.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::rows::{DeadLetterRow, ReportRows, hex, rows};
use crate::stats::Stats;
use crate::store::Store;

/// Messages held while retrying are marked in progress this often (the
/// consumer's ack wait is 30 s).
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct Ingest {
    pub consumer: jetstream::consumer::PullConsumer,
    pub store: Arc<Store>,
    pub stats: Arc<Stats>,
    pub batch_size: usize,
    pub batch_bytes: usize,
    pub batch_wait: Duration,
}

impl Ingest {
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let mut messages = self
            .consumer
            .stream()
            .max_messages_per_batch(self.batch_size)
            .max_bytes_per_batch(self.batch_bytes)
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("cannot start consuming: {e}"))?;
        loop {
            let mut batch = Vec::new();
            let first = tokio::select! {
                message = messages.next() => message,
                _ = stop.cancelled() => return Ok(()),
            };
            match first {
                Some(Ok(message)) => batch.push(message),
                Some(Err(e)) => {
                    tracing::warn!("consumer: {e}");
                    continue;
                }
                None => anyhow::bail!("the consumer's message stream ended"),
            }
            let deadline = tokio::time::Instant::now() + self.batch_wait;
            let mut bytes = batch[0].payload.len();
            while batch.len() < self.batch_size && bytes < self.batch_bytes {
                tokio::select! {
                    message = messages.next() => match message {
                        Some(Ok(message)) => {
                            bytes += message.payload.len();
                            batch.push(message);
                        }
                        Some(Err(e)) => tracing::warn!("consumer: {e}"),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            if !self.process(batch, &stop).await {
                return Ok(());
            }
        }
    }

    /// Stores a batch and acknowledges it. False when stopped before storing
    /// (the batch will be redelivered).
    async fn process(&self, batch: Vec<jetstream::Message>, stop: &CancellationToken) -> bool {
        Stats::add(&self.stats.messages, batch.len());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        let mut reports: Vec<ReportRows> = Vec::with_capacity(batch.len());
        let mut seen = HashSet::new();
        let mut dead = Vec::new();
        for message in &batch {
            match rows(&message.payload) {
                // The same report twice in one batch (a redelivery racing the
                // original): store it once, acknowledge both.
                Ok(report) if !seen.insert(report.election.report_id) => {}
                Ok(report) => reports.push(report),
                Err(reason) => dead.push(DeadLetterRow {
                    stream_seq: message.info().map(|i| i.stream_sequence).unwrap_or(0),
                    first_seen: now,
                    subject: message.subject.to_string(),
                    reason,
                    payload_hex: hex(&message.payload[..message.payload.len().min(64 * 1024)]),
                }),
            }
        }
        let mut backoff = BACKOFF_MIN;
        let mut last_progress = tokio::time::Instant::now();
        let written = loop {
            match self.store.write(&reports, &dead).await {
                Ok(written) => break written,
                Err(e) => {
                    self.stats
                        .insert_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(
                        reports = reports.len(),
                        "storing a batch failed ({e:#}); retrying in {backoff:?}"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return false,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    if last_progress.elapsed() >= PROGRESS_EVERY {
                        for message in &batch {
                            let _ = message.ack_with(AckKind::Progress).await;
                        }
                        last_progress = tokio::time::Instant::now();
                    }
                }
            }
        };
        // Acknowledge only now that ClickHouse has the rows. Plain acks (no
        // confirmation round trip each): one lost on a crash means a
        // redelivery, which the store skips as a duplicate.
        let acks = futures_util::future::join_all(batch.iter().map(|m| m.ack())).await;
        let failed_acks = acks.iter().filter(|r| r.is_err()).count();
        if failed_acks > 0 {
            tracing::warn!(
                failed_acks,
                "some acknowledgements failed; those reports will be redelivered and skipped as duplicates"
            );
        }
        Stats::add(&self.stats.elections_stored, written.elections);
        Stats::add(&self.stats.candidates_stored, written.candidates);
        Stats::add(
            &self.stats.duplicates_skipped,
            written.duplicates + (batch.len() - dead.len() - reports.len()),
        );
        Stats::add(&self.stats.dead_letters, written.dead_letters);
        Stats::add(&self.stats.batches, 1);
        if written.dead_letters > 0 {
            for letter in &dead {
                tracing::warn!(seq = letter.stream_seq, reason = %letter.reason, "dead-lettered a message");
            }
        }
        true
    }
}

/// Keeps `lag` and `ack_pending` current.
pub async fn watch_lag(mut consumer: jetstream::consumer::PullConsumer, stats: Arc<Stats>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if let Ok(info) = consumer.info().await {
            stats
                .lag
                .store(info.num_pending, std::sync::atomic::Ordering::Relaxed);
            stats.ack_pending.store(
                info.num_ack_pending as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }
}
