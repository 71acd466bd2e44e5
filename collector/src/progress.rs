//! Whether this collector is getting anywhere. A collector can answer pings
//! and still store nothing: a table detached or renamed, its user's rights
//! taken away, a worker wedged. Then reports wait in JetStream, the
//! dashboards go stale, and only `/readyz` can tell an orchestrator or an
//! SRE. It turns red when a batch this process took has waited longer than
//! `--stuck-after` to be stored.
//!
//! Per process, not per consumer: the consumer's lag is shared by every
//! collector, so a healthy collector without deliveries would look stuck
//! while another one holds the messages.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The batches this process holds, each with when it was taken.
#[derive(Debug, Default)]
pub struct Progress {
    next: AtomicU64,
    held: Mutex<HashMap<u64, (Instant, usize)>>,
}

/// A batch held until it is stored (or given back): dropping it lets go.
pub struct Holding<'a> {
    progress: &'a Progress,
    id: u64,
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.progress
            .held
            .lock()
            .expect("progress lock")
            .remove(&self.id);
    }
}

impl Progress {
    /// A batch of `reports` messages was taken from the consumer.
    pub fn hold(&self, reports: usize) -> Holding<'_> {
        let id = self.next.fetch_add(1, Relaxed);
        self.held
            .lock()
            .expect("progress lock")
            .insert(id, (Instant::now(), reports));
        Holding { progress: self, id }
    }

    /// Why this collector is stuck, if its oldest batch has waited longer
    /// than `stuck_after`.
    pub fn stuck(&self, stuck_after: Duration) -> Option<String> {
        let held = self.held.lock().expect("progress lock");
        let (since, reports) = held.values().min_by_key(|(since, _)| *since)?;
        let waited = since.elapsed();
        (waited > stuck_after).then(|| {
            format!(
                "stuck: a batch of {reports} reports has waited {} s to be stored; see the log",
                waited.as_secs()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_only_while_a_batch_waits_past_the_limit() {
        let progress = Progress::default();
        assert!(
            progress.stuck(Duration::ZERO).is_none(),
            "idle is not stuck"
        );
        let old = progress.hold(3);
        std::thread::sleep(Duration::from_millis(20));
        let _new = progress.hold(5);
        let why = progress
            .stuck(Duration::from_millis(10))
            .expect("the old batch waited");
        assert!(why.contains("batch of 3 reports"), "{why}");
        assert!(progress.stuck(Duration::from_secs(60)).is_none());
        drop(old);
        assert!(progress.stuck(Duration::from_secs(60)).is_none());
        let why = progress
            .stuck(Duration::ZERO)
            .expect("the newer batch still waits");
        assert!(why.contains("batch of 5 reports"), "{why}");
    }
}
