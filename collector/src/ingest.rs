//! The consume → store → acknowledge loop.
//!
//! A batch is up to `batch_size` messages, or `batch_bytes` of payload, or
//! whatever arrived within `batch_wait`: count alone is not a bound — 5000
//! maximum-size reports decode to more than a gigabyte — so the bytes bound
//! the batch and what the pull fetches ahead of it.
//!
//! Messages that cannot be stored (undecodable, invalid) become dead letters
//! with their reason, in the same write: they never block the stream and are
//! never retried. Acknowledgements are sent only after the write succeeded.
//! While ClickHouse is down (it does not answer a ping) the loop retries the
//! same batch with backoff, keeps its messages from being redelivered
//! elsewhere ("in progress"), and pulls nothing new: memory stays bounded by
//! one batch. A part of a batch that ClickHouse keeps refusing (an exception
//! about the data, not a busy or failing server) while it answers pings is
//! split in two, again and again, until the reports ClickHouse refuses
//! are alone: those become dead letters with ClickHouse's error (and their
//! payload, for a replay once the cause is fixed), the rest is stored — one
//! bad report no longer holds up the stream for ever.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::lease::Validity;
use crate::progress::Progress;
use crate::rows::{DeadLetterRow, ReportRows, hex, rows};
use crate::stats::Stats;
use crate::store::{InsertFailed, Store, Written};

/// Messages held while writing or retrying are marked in progress this often
/// (the consumer's ack wait is 30 s).
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Failures of one part of a batch, while ClickHouse answers pings, before
/// it is split in two (a single report: dead-lettered with the error).
const FAILURES_BEFORE_SPLIT: u32 = 3;

pub struct Ingest {
    pub consumer: jetstream::consumer::PullConsumer,
    pub store: Arc<Store>,
    pub stats: Arc<Stats>,
    /// The batches this process holds (`/readyz` reads it).
    pub progress: Arc<Progress>,
    pub batch_size: usize,
    pub batch_bytes: usize,
    pub batch_wait: Duration,
    /// Whether this process may still write (see `lease`).
    pub lease: Validity,
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
            let _holding = self.progress.hold(batch.len());
            if !self.process(batch, &stop).await {
                return Ok(());
            }
        }
    }

    /// Stores a batch and acknowledges it. False when stopped, or the lease
    /// lapsed, before storing (the batch will be redelivered).
    async fn process(&self, batch: Vec<jetstream::Message>, stop: &CancellationToken) -> bool {
        Stats::add(&self.stats.messages, batch.len());
        let mut reports: Vec<ReportRows> = Vec::with_capacity(batch.len());
        // The message each report came from (for its dead letter).
        let mut origin: Vec<usize> = Vec::with_capacity(batch.len());
        let mut seen = HashSet::new();
        let mut dead = Vec::new();
        for (index, message) in batch.iter().enumerate() {
            match rows(&message.payload) {
                // The same report twice in one batch (a redelivery racing the
                // original): store it once, acknowledge both.
                Ok(report) if !seen.insert(report.election.report_id) => {}
                Ok(report) => {
                    reports.push(report);
                    origin.push(index);
                }
                Err(reason) => dead.push(dead_letter(message, reason)),
            }
        }
        // Copies of a report within this batch: acknowledged, not stored.
        let repeated = batch.len() - dead.len() - reports.len();
        let mut held = Held::new(&batch);
        let Some((mut written, refused)) =
            self.store_isolating(&reports, &dead, &mut held, stop).await
        else {
            return false;
        };
        if !refused.is_empty() {
            // Reports ClickHouse refuses on their own become dead letters
            // (with the undecodable messages, if no write carried those).
            let mut letters: Vec<DeadLetterRow> = refused
                .iter()
                .map(|(at, reason)| dead_letter(&batch[origin[*at]], reason.clone()))
                .collect();
            if written.dead_letters == 0 {
                letters.append(&mut dead);
            }
            dead = letters;
            let Some(stored) = self.store_letters(&dead, &mut held, stop).await else {
                return false;
            };
            written.dead_letters += stored;
        }
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
            written.duplicates + repeated,
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

    /// Stores `reports` (and `dead` with the first part written), splitting
    /// a part that keeps failing while ClickHouse answers pings, until the
    /// reports it refuses are alone. Returns what was written and the
    /// refused reports (index, ClickHouse's error); `None` when stopped or
    /// no longer holding the lease.
    /// While ClickHouse does not answer nothing is split: the whole batch
    /// waits for it.
    async fn store_isolating(
        &self,
        reports: &[ReportRows],
        dead: &[DeadLetterRow],
        held: &mut Held<'_>,
        stop: &CancellationToken,
    ) -> Option<(Written, Vec<(usize, String)>)> {
        let mut total = Written::default();
        let mut refused = Vec::new();
        // Parts still to write, the next on top.
        let mut parts: Vec<std::ops::Range<usize>> = Vec::new();
        parts.push(0..reports.len());
        let mut letters = dead;
        // The tables whose inserts failed in this batch (a part split off
        // one that failed inherits what that attempt may have half stored).
        let mut failed_inserts = FailedInserts::default();
        while let Some(part) = parts.pop() {
            let mut failures = 0;
            let mut backoff = BACKOFF_MIN;
            loop {
                if !self.lease.holds() {
                    return None;
                }
                let error = match held
                    .during(self.store.write(&reports[part.clone()], letters))
                    .await
                {
                    Ok(written) => {
                        let found = failed_inserts.found_in(&written);
                        if found > 0 {
                            self.rollups_may_miss(&reports[part.clone()], found);
                        }
                        total.elections += written.elections;
                        total.candidates += written.candidates;
                        total.duplicates += written.duplicates;
                        total.dead_letters += written.dead_letters;
                        letters = &[];
                        break;
                    }
                    Err(e) => e,
                };
                self.stats.insert_failures.fetch_add(1, Relaxed);
                failures += 1;
                failed_inserts.note(&error);
                if failures >= FAILURES_BEFORE_SPLIT
                    && !part.is_empty()
                    && refuses_the_data(&error)
                    && self.store.ping().await
                {
                    if part.len() == 1 {
                        tracing::warn!(
                            "ClickHouse keeps refusing one report ({error:#}): dead-lettering it"
                        );
                        refused.push((part.start, format!("ClickHouse refused it: {error:#}")));
                    } else {
                        tracing::warn!(
                            reports = part.len(),
                            "a batch keeps failing while ClickHouse answers ({error:#}); splitting it"
                        );
                        let middle = part.start + part.len() / 2;
                        parts.push(middle..part.end);
                        parts.push(part.start..middle);
                    }
                    break;
                }
                tracing::warn!(
                    reports = part.len(),
                    "storing a batch failed ({error:#}); retrying in {backoff:?}"
                );
                if !self.pause(&mut backoff, held, stop).await {
                    return None;
                }
            }
        }
        Some((total, refused))
    }

    /// A retried write found `found` of `reports` stored in a table whose
    /// insert had failed: it may have failed in a view after the table took
    /// the rows, and the views after it then never count them (`store`).
    /// Counted, and logged with the days to rebuild — a resend's copy found
    /// stored looks the same from here, so this says "may"; a late copy's
    /// rows are filed under its first copy's day, which may be earlier.
    fn rollups_may_miss(&self, reports: &[ReportRows], found: usize) {
        Stats::add(&self.stats.rollup_gaps_suspected, found);
        let seconds = reports.iter().map(|r| r.election.received_at);
        let (Some(first), Some(last)) = (seconds.clone().min(), seconds.max()) else {
            return;
        };
        tracing::warn!(
            reports = found,
            "after a failed write, reports were found already stored: a rollup view may have failed \
             after their rows were written, and the rollups may miss them. Once the day is over, run \
             `rallypoint-collector rebuild-rollups --from {} --to {}`",
            crate::config::day_text(crate::config::day_of(first)),
            crate::config::day_text(crate::config::day_of(last)),
        );
    }

    /// Stores dead letters, retrying until it succeeds; `None` when stopped.
    async fn store_letters(
        &self,
        letters: &[DeadLetterRow],
        held: &mut Held<'_>,
        stop: &CancellationToken,
    ) -> Option<usize> {
        let mut backoff = BACKOFF_MIN;
        loop {
            if !self.lease.holds() {
                return None;
            }
            match held.during(self.store.write(&[], letters)).await {
                Ok(written) => return Some(written.dead_letters),
                Err(e) => {
                    self.stats.insert_failures.fetch_add(1, Relaxed);
                    tracing::warn!("storing dead letters failed ({e:#}); retrying in {backoff:?}");
                    if !self.pause(&mut backoff, held, stop).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Waits `backoff` (then doubles it), keeping the held messages from
    /// being redelivered elsewhere. False when stopped.
    async fn pause(
        &self,
        backoff: &mut Duration,
        held: &mut Held<'_>,
        stop: &CancellationToken,
    ) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(*backoff) => {}
            _ = stop.cancelled() => return false,
        }
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
        held.keep().await;
        true
    }
}

/// A batch's messages while it is written and retried: marked in progress
/// every [`PROGRESS_EVERY`] so JetStream does not hand them to another worker.
struct Held<'a> {
    batch: &'a [jetstream::Message],
    last_progress: tokio::time::Instant,
}

impl<'a> Held<'a> {
    fn new(batch: &'a [jetstream::Message]) -> Self {
        Held {
            batch,
            last_progress: tokio::time::Instant::now(),
        }
    }

    /// Runs `work` (a write), keeping the messages in progress while it
    /// lasts: an insert slower than the consumer's ack wait must not have its
    /// messages redelivered to another collector, which would store them
    /// again while this one still is.
    async fn during<T>(&mut self, work: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(work);
        loop {
            let due = self.last_progress + PROGRESS_EVERY;
            tokio::select! {
                done = &mut work => return done,
                _ = tokio::time::sleep_until(due) => self.keep().await,
            }
        }
    }

    async fn keep(&mut self) {
        if self.last_progress.elapsed() >= PROGRESS_EVERY {
            for message in self.batch {
                let _ = message.ack_with(AckKind::Progress).await;
            }
            self.last_progress = tokio::time::Instant::now();
        }
    }
}

/// The base tables whose inserts failed during one batch's write.
#[derive(Debug, Default)]
struct FailedInserts {
    candidates: bool,
    elections: bool,
}

impl FailedInserts {
    fn note(&mut self, error: &anyhow::Error) {
        match error.downcast_ref::<InsertFailed>().map(|f| f.table) {
            Some("rp_candidates") => self.candidates = true,
            Some("rp_elections") => self.elections = true,
            _ => {}
        }
    }

    /// Reports a successful write found stored in a table whose insert
    /// had failed before.
    fn found_in(&self, written: &Written) -> usize {
        let found = |failed: bool, found: usize| if failed { found } else { 0 };
        found(self.candidates, written.found_candidates)
            .max(found(self.elections, written.found_elections))
    }
}

/// ClickHouse error codes that refuse the rows sent: a value that cannot be
/// parsed or stored, a size out of bounds, a view's check on a value
/// (`throwIf`). Only these split a batch that keeps failing, until the
/// reports they refuse are isolated in dead letters. Type errors (43, 53,
/// 70) are not among them: the collector's rows have fixed types, so those
/// come from a schema or a view changed under it, and would refuse every
/// report alike.
///
/// Every other failure waits (and `/readyz` turns red once it has waited
/// `--stuck-after`): the server busy, short of memory or disk, restarting,
/// a shard of a cluster unreachable, the network, or the schema or the login
/// wrong (a table detached or dropped, rights taken away), which an operator
/// fixes while every report is fine. A list of the codes that may *not*
/// split a batch was this list's opposite until a review found the codes it
/// lacked (279, all connection tries to a shard failed; 243, not enough
/// space): each split a good batch down to single reports and dead-lettered
/// every one. A refusal missing here waits instead — seen, not lost.
const DATA_REFUSAL_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    33,  // CANNOT_READ_ALL_DATA
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    69,  // ARGUMENT_OUT_OF_BOUND
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    128, // TOO_LARGE_ARRAY_SIZE
    131, // TOO_LARGE_STRING_SIZE
    190, // SIZES_OF_ARRAYS_DOESNT_MATCH
    321, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    349, // CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
    395, // FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
];

/// Whether ClickHouse refused what was sent (an exception whose code is in
/// [`DATA_REFUSAL_CODES`]), rather than failed for reasons of its own, of
/// its cluster or of the network.
fn refuses_the_data(error: &anyhow::Error) -> bool {
    rallypoint_service::clickhouse::error_code(error)
        .is_some_and(|code| DATA_REFUSAL_CODES.contains(&code))
}

/// A message that will not be stored, with the reason and (up to 64 KiB of)
/// its payload for a replay.
fn dead_letter(message: &jetstream::Message, reason: String) -> DeadLetterRow {
    let now = rallypoint_service::clock::unix_seconds() as u32;
    let info = message.info().ok();
    DeadLetterRow {
        stream_seq: info.as_ref().map_or(0, |i| i.stream_sequence),
        stream: info.map(|i| i.stream.to_owned()).unwrap_or_default(),
        first_seen: now,
        subject: message.subject.to_string(),
        reason,
        payload_hex: hex(&message.payload[..message.payload.len().min(64 * 1024)]),
    }
}

/// Keeps `lag` and `ack_pending` current.
pub async fn watch_lag(mut consumer: jetstream::consumer::PullConsumer, stats: Arc<Stats>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if let Ok(info) = consumer.info().await {
            stats.lag.store(info.num_pending, Relaxed);
            stats
                .ack_pending
                .store(info.num_ack_pending as u64, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::refuses_the_data;

    #[test]
    fn only_refusals_of_the_data_split_a_batch() {
        let refusal = |text: &str| {
            refuses_the_data(&anyhow::anyhow!("insert into rp_candidates failed: {text}"))
        };
        // 18.16 and current servers word it differently.
        assert!(refusal(
            "bad response: Code: 395, e.displayText() = DB::Exception: Value passed to 'throwIf' function is non zero"
        ));
        assert!(refusal(
            "bad response: Code: 131. DB::Exception: Too large string size"
        ));
        // A type error is the schema's, not one report's: every report
        // would be refused alike.
        assert!(!refusal(
            "bad response: Code: 53. DB::Exception: Type mismatch"
        ));
        assert!(!refusal(
            "bad response: Code: 252, e.displayText() = DB::Exception: Too many parts (300)"
        ));
        assert!(!refusal(
            "bad response: Code: 241. DB::Exception: Memory limit (total) exceeded"
        ));
        assert!(!refusal("network error: connection refused"));
        assert!(!refusal("bad response: Code: x"));
        // A shard out of reach, a full disk: nothing to do with the rows.
        assert!(!refusal(
            "bad response: Code: 279, e.displayText() = DB::NetException: All connection tries failed"
        ));
        assert!(!refusal(
            "bad response: Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space"
        ));
        // A code nobody listed waits: seen, not dead-lettered.
        assert!(!refusal(
            "bad response: Code: 9999. DB::Exception: something new"
        ));
    }
}
