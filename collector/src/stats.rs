//! The collector's counters: atomics served at `/stats` and observed by
//! OpenTelemetry instruments when scraped (`/metrics`) or pushed over OTLP.
//! Units are set on the instruments, so Prometheus names end in `_total`
//! for counters (`rallypoint_collector_messages_total`).

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
    /// 1 while this process holds the lease and stores, 0 while it stands by.
    pub active: AtomicU64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Relaxed);
    }
}

/// A counter exported over OpenTelemetry: name, unit, description, how to read it.
type CounterSpec = (&'static str, &'static str, &'static str, fn(&Stats) -> u64);

const COUNTERS: [CounterSpec; 7] = [
    (
        "rallypoint.collector.messages",
        "{message}",
        "Messages received from JetStream",
        |s| s.messages.load(Relaxed),
    ),
    (
        "rallypoint.collector.elections.stored",
        "{election}",
        "Elections stored",
        |s| s.elections_stored.load(Relaxed),
    ),
    (
        "rallypoint.collector.candidate_rows.stored",
        "{row}",
        "Candidate rows stored",
        |s| s.candidates_stored.load(Relaxed),
    ),
    (
        "rallypoint.collector.duplicates.skipped",
        "{report}",
        "Redelivered reports skipped",
        |s| s.duplicates_skipped.load(Relaxed),
    ),
    (
        "rallypoint.collector.dead_letters",
        "{message}",
        "Messages dead-lettered",
        |s| s.dead_letters.load(Relaxed),
    ),
    (
        "rallypoint.collector.batches",
        "{batch}",
        "Batches written to ClickHouse",
        |s| s.batches.load(Relaxed),
    ),
    (
        "rallypoint.collector.insert_failures",
        "{batch}",
        "Failed ClickHouse writes (retried)",
        |s| s.insert_failures.load(Relaxed),
    ),
];

/// Registers the instruments over `stats` on the global meter provider.
pub fn register_instruments(stats: Arc<Stats>) {
    let meter = opentelemetry::global::meter("rallypoint-collector");
    for (name, unit, description, read) in COUNTERS {
        let s = stats.clone();
        meter
            .u64_observable_counter(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |o| o.observe(read(&s), &[]))
            .build();
    }
    let s = stats.clone();
    meter
        .u64_observable_gauge("rallypoint.collector.lag")
        .with_unit("{message}")
        .with_description(
            "Reports waiting in the stream for a collector (pending) or delivered and not yet acknowledged (ack_pending)",
        )
        .with_callback(move |o| {
            o.observe(s.lag.load(Relaxed), &[KeyValue::new("kind", "pending")]);
            o.observe(
                s.ack_pending.load(Relaxed),
                &[KeyValue::new("kind", "ack_pending")],
            );
        })
        .build();
    let s = stats.clone();
    meter
        .u64_observable_gauge("rallypoint.collector.active")
        .with_unit("1")
        .with_description(
            "1 while this collector holds the lease and stores telemetry, 0 while it stands by",
        )
        .with_callback(move |o| o.observe(s.active.load(Relaxed), &[]))
        .build();
}
