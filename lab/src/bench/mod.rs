//! Benchmarks that print numbers and ratios against a baseline measured in the
//! same run (`rallypoint bench …`). Results are recorded in BENCHMARKS.md.

pub mod dashboard;
pub mod election;
pub mod failover;
pub mod ingest;
pub mod relay;

use hdrhistogram::Histogram;

/// A latency histogram in microseconds (1 µs .. 60 s, 3 significant digits).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// `p50/p99/max` of a histogram in milliseconds, for tables.
pub fn summary_ms(h: &Histogram<u64>) -> (f64, f64, f64) {
    let ms = |us: u64| us as f64 / 1000.0;
    (
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
    )
}
