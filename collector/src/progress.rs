//! Whether the collector is getting anywhere. A collector can answer pings
//! and still store nothing: a table detached or renamed, its user's rights
//! taken away, a worker wedged. Then reports wait in JetStream, the
//! dashboards go stale, and only `/readyz` can tell an orchestrator or an
//! SRE. It turns red when reports are waiting and no batch has been stored
//! for `--stuck-after`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When the last batch was stored (or the collector started).
#[derive(Debug)]
pub struct Progress {
    last_ms: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            last_ms: AtomicU64::new(now_ms()),
        }
    }
}

impl Progress {
    /// A batch was stored and acknowledged.
    pub fn advanced(&self) {
        self.last_ms.store(now_ms(), Relaxed);
    }

    /// How long since the last batch was stored.
    pub fn stalled_for(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.last_ms.load(Relaxed)))
    }

    /// Why the collector is stuck, if `waiting` reports wait and nothing
    /// has been stored for longer than `stuck_after`.
    pub fn stuck(&self, waiting: u64, stuck_after: Duration) -> Option<String> {
        let stalled = self.stalled_for();
        (waiting > 0 && stalled > stuck_after).then(|| {
            format!(
                "stuck: {waiting} reports waiting and none stored for {} s; see the log",
                stalled.as_secs()
            )
        })
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_only_with_reports_waiting_past_the_limit() {
        let progress = Progress::default();
        progress
            .last_ms
            .store(now_ms() - 10_000, std::sync::atomic::Ordering::Relaxed);
        let limit = Duration::from_secs(5);
        assert!(progress.stuck(0, limit).is_none(), "idle is not stuck");
        let why = progress.stuck(3, limit).expect("3 waiting for 10 s");
        assert!(why.contains("3 reports waiting"), "{why}");
        assert!(progress.stuck(3, Duration::from_secs(60)).is_none());
        progress.advanced();
        assert!(
            progress.stuck(3, limit).is_none(),
            "a stored batch resets it"
        );
    }
}
