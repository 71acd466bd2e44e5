//! The collector's counters: atomics served at `/stats` and observed by
//! OpenTelemetry instruments when scraped (`/metrics`) or pushed over OTLP.
//! Units are set on the instruments, so Prometheus names end in `_total`
//! for counters (`rallypoint_collector_messages_total`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use rallypoint_service::instruments::{self, Kind};
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
    /// Reports found stored when a failed write was retried: a rollup view
    /// may have failed after their rows were written (see `store`).
    pub rollup_gaps_suspected: AtomicU64,
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

type Instrument<T> = rallypoint_service::instruments::Instrument<Stats, T>;

const COUNTERS: &[Instrument<u64>] = &[
    Instrument {
        name: "rallypoint.collector.messages",
        unit: "{message}",
        description: "Messages received from JetStream",
        series: &[(None, |s| s.messages.load(Relaxed))],
    },
    Instrument {
        name: "rallypoint.collector.elections.stored",
        unit: "{election}",
        description: "Elections stored",
        series: &[(None, |s| s.elections_stored.load(Relaxed))],
    },
    Instrument {
        name: "rallypoint.collector.candidate_rows.stored",
        unit: "{row}",
        description: "Candidate rows stored",
        series: &[(None, |s| s.candidates_stored.load(Relaxed))],
    },
    Instrument {
        name: "rallypoint.collector.duplicates.skipped",
        unit: "{report}",
        description: "Redelivered reports skipped",
        series: &[(None, |s| s.duplicates_skipped.load(Relaxed))],
    },
    Instrument {
        name: "rallypoint.collector.dead_letters",
        unit: "{message}",
        description: "Messages dead-lettered",
        series: &[(None, |s| s.dead_letters.load(Relaxed))],
    },
    Instrument {
        name: "rallypoint.collector.batches",
        unit: "{batch}",
        description: "Batches written to ClickHouse",
        series: &[(None, |s| s.batches.load(Relaxed))],
    },
    Instrument {
        name: "rallypoint.collector.insert_failures",
        unit: "{batch}",
        description: "Failed ClickHouse writes (retried)",
        series: &[(None, |s| s.insert_failures.load(Relaxed))],
    },
    Instrument {
        name: "rallypoint.collector.rollup_gaps.suspected",
        unit: "{report}",
        description: "Reports found stored when a failed write was retried: the rollups may miss them until their day is rebuilt (rebuild-rollups)",
        series: &[(None, |s| s.rollup_gaps_suspected.load(Relaxed))],
    },
];

const GAUGES: &[Instrument<u64>] = &[
    Instrument {
        name: "rallypoint.collector.lag",
        unit: "{message}",
        description: "Reports waiting in the stream for a collector (pending) or delivered and not yet acknowledged (ack_pending)",
        series: &[
            (Some(("kind", "pending")), |s| s.lag.load(Relaxed)),
            (Some(("kind", "ack_pending")), |s| {
                s.ack_pending.load(Relaxed)
            }),
        ],
    },
    Instrument {
        name: "rallypoint.collector.active",
        unit: "1",
        description: "1 while this collector holds the lease and stores telemetry, 0 while it stands by",
        series: &[(None, |s| s.active.load(Relaxed))],
    },
];

/// Registers the instruments over `stats` on the global meter provider;
/// their callbacks run when the metrics are scraped or exported.
pub fn register_instruments(stats: &Arc<Stats>) {
    let meter = opentelemetry::global::meter("rallypoint-collector");
    let stats = Arc::downgrade(stats);
    instruments::register(&meter, Kind::Counter, &stats, &[], COUNTERS);
    instruments::register(&meter, Kind::Gauge, &stats, &[], GAUGES);
}
