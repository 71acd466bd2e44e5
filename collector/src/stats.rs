//! The collector's counters: atomics served at `/stats` and observed by
//! OpenTelemetry instruments (exported when OTLP is configured).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use opentelemetry::KeyValue;
use serde::Serialize;

#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub messages: AtomicU64,
    pub elections_stored: AtomicU64,
    pub candidates_stored: AtomicU64,
    pub duplicates_skipped: AtomicU64,
    pub dead_letters: AtomicU64,
    pub batches: AtomicU64,
    pub insert_failures: AtomicU64,
    /// Messages the consumer has not delivered yet (JetStream's count).
    pub lag: AtomicU64,
    /// Messages delivered but not yet acknowledged.
    pub ack_pending: AtomicU64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Relaxed);
    }
}

/// A counter exported over OpenTelemetry: name, description, how to read it.
type CounterSpec = (&'static str, &'static str, fn(&Stats) -> u64);

pub fn register_instruments(stats: Arc<Stats>) {
    let meter = opentelemetry::global::meter("rallypoint-collector");
    let counters: [CounterSpec; 6] = [
        ("rallypoint.collector.elections", "Elections stored", |s| {
            s.elections_stored.load(Relaxed)
        }),
        (
            "rallypoint.collector.candidate_rows",
            "Candidate rows stored",
            |s| s.candidates_stored.load(Relaxed),
        ),
        (
            "rallypoint.collector.duplicates",
            "Redelivered reports skipped",
            |s| s.duplicates_skipped.load(Relaxed),
        ),
        (
            "rallypoint.collector.dead_letters",
            "Messages dead-lettered",
            |s| s.dead_letters.load(Relaxed),
        ),
        (
            "rallypoint.collector.insert_failures",
            "Failed ClickHouse writes (retried)",
            |s| s.insert_failures.load(Relaxed),
        ),
        ("rallypoint.collector.messages", "Messages received", |s| {
            s.messages.load(Relaxed)
        }),
    ];
    for (name, description, read) in counters {
        let s = stats.clone();
        meter
            .u64_observable_counter(name)
            .with_description(description)
            .with_callback(move |o| o.observe(read(&s), &[]))
            .build();
    }
    let s = stats.clone();
    meter
        .u64_observable_gauge("rallypoint.collector.lag")
        .with_description("Reports waiting in the stream for a collector")
        .with_callback(move |o| {
            o.observe(s.lag.load(Relaxed), &[KeyValue::new("kind", "pending")]);
            o.observe(
                s.ack_pending.load(Relaxed),
                &[KeyValue::new("kind", "ack_pending")],
            );
        })
        .build();
}
