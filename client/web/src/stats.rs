//! Call statistics a person (and the browser test) reads: end-to-end latency
//! percentiles, bitrates, and the longest freeze. Times are milliseconds on
//! whatever clock the caller uses (the browser's wall clock for latency, so
//! sender and receiver agree; `performance.now()` for rates and freezes).

use std::collections::VecDeque;

/// The most recent latency samples, with percentiles over them.
#[derive(Debug, Clone)]
pub struct LatencyWindow {
    samples: VecDeque<f64>,
    capacity: usize,
}

impl LatencyWindow {
    /// Keeps the last `capacity` samples (at 30 fps, 1 800 is a minute of video).
    pub fn new(capacity: usize) -> Self {
        LatencyWindow {
            samples: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    pub fn record(&mut self, ms: f64) {
        if !ms.is_finite() {
            return;
        }
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(ms);
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The `q` quantile (0..=1, nearest rank), `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted: Vec<f64> = self.samples.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let rank = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).max(1);
        Some(sorted[rank - 1])
    }
}

/// Bits per second over a sliding window.
#[derive(Debug, Clone)]
pub struct RateMeter {
    window_ms: f64,
    events: VecDeque<(f64, usize)>,
    bytes_in_window: usize,
}

impl RateMeter {
    pub fn new(window_ms: f64) -> Self {
        RateMeter {
            window_ms,
            events: VecDeque::new(),
            bytes_in_window: 0,
        }
    }

    pub fn record(&mut self, now_ms: f64, bytes: usize) {
        self.expire(now_ms);
        self.events.push_back((now_ms, bytes));
        self.bytes_in_window += bytes;
    }

    /// The rate over the last window, in kbit/s.
    pub fn kbps(&mut self, now_ms: f64) -> f64 {
        self.expire(now_ms);
        self.bytes_in_window as f64 * 8.0 / self.window_ms
    }

    fn expire(&mut self, now_ms: f64) {
        while let Some(&(at, bytes)) = self.events.front() {
            if now_ms - at <= self.window_ms {
                break;
            }
            self.events.pop_front();
            self.bytes_in_window -= bytes;
        }
    }
}

/// A gap between two frames counts as a freeze from this long (three frames
/// at 30 fps).
pub const FREEZE_MS: f64 = 100.0;
/// Freezes remembered with their time: enough to pick out the one around an
/// event (a failover) among the hiccups of a long call.
pub const FREEZES_KEPT: usize = 8;

/// One freeze: how long, and when it ended (`performance.now()`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Freeze {
    pub ended_at_ms: f64,
    pub ms: f64,
}

/// The longest time between two consecutive frames: what a person sees as a
/// freeze (a failover shows up here), and the newest freezes with their times.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FreezeTracker {
    last: Option<f64>,
    /// Longest gap so far, in ms.
    pub longest_ms: f64,
    recent: [Option<Freeze>; FREEZES_KEPT],
    freezes: usize,
}

impl FreezeTracker {
    pub fn frame(&mut self, now_ms: f64) {
        if let Some(last) = self.last {
            let gap = now_ms - last;
            self.longest_ms = self.longest_ms.max(gap);
            if gap >= FREEZE_MS {
                self.recent[self.freezes % FREEZES_KEPT] = Some(Freeze {
                    ended_at_ms: now_ms,
                    ms: gap,
                });
                self.freezes += 1;
            }
        }
        self.last = Some(now_ms);
    }

    /// The newest [`FREEZES_KEPT`] freezes, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = Freeze> + '_ {
        (0..FREEZES_KEPT).filter_map(|i| self.recent[(self.freezes + i) % FREEZES_KEPT])
    }
}

/// How a remote participant's connection looks from here, for its tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerLink {
    Good,
    /// It moved to another relay moments ago (failover, drain, a better
    /// relay): a short freeze is expected and explained.
    Moving,
    /// Its media arrives late or freezes.
    Poor,
    /// Nothing of it has arrived for a while, though it sends.
    Lost,
}

/// How long a move is shown on the tile (ms).
pub const MOVING_SHOWN_MS: f64 = 4_000.0;
/// Silence from a participant that sends media, before it counts as lost (ms).
pub const LOST_AFTER_MS: f64 = 3_000.0;
/// Video later than this at p95 (ms), or frozen this long, is poor.
pub const POOR_LATENCY_MS: f64 = 400.0;
pub const POOR_FREEZE_MS: f64 = 1_000.0;

/// What the tile of a participant says about its connection, at `now`.
/// `sends` is false when it announced both microphone and camera off
/// (silence is then expected, not a loss).
pub fn peer_link(
    now: f64,
    moved_at: Option<f64>,
    last_media_at: Option<f64>,
    sends: bool,
    video_p95_ms: Option<f64>,
    recent_freeze_ms: f64,
) -> PeerLink {
    if moved_at.is_some_and(|at| now - at < MOVING_SHOWN_MS) {
        return PeerLink::Moving;
    }
    if sends && last_media_at.is_some_and(|at| now - at > LOST_AFTER_MS) {
        return PeerLink::Lost;
    }
    if video_p95_ms.is_some_and(|p95| p95 > POOR_LATENCY_MS) || recent_freeze_ms > POOR_FREEZE_MS {
        return PeerLink::Poor;
    }
    PeerLink::Good
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut w = LatencyWindow::new(100);
        assert_eq!(w.quantile(0.5), None);
        for ms in 1..=100 {
            w.record(ms as f64);
        }
        assert_eq!(w.quantile(0.5), Some(50.0));
        assert_eq!(w.quantile(0.95), Some(95.0));
        assert_eq!(w.quantile(1.0), Some(100.0));
        assert_eq!(w.quantile(0.0), Some(1.0));
    }

    #[test]
    fn the_window_forgets_old_samples() {
        let mut w = LatencyWindow::new(3);
        for ms in [500.0, 10.0, 20.0, 30.0] {
            w.record(ms);
        }
        assert_eq!(w.len(), 3);
        assert_eq!(w.quantile(1.0), Some(30.0));
        w.record(f64::NAN);
        assert_eq!(w.len(), 3, "a NaN is not a sample");
    }

    #[test]
    fn rate_counts_only_the_window() {
        let mut m = RateMeter::new(1000.0);
        m.record(0.0, 1000);
        m.record(500.0, 1000);
        assert_eq!(m.kbps(900.0), 16.0);
        assert_eq!(m.kbps(1400.0), 8.0);
        assert_eq!(m.kbps(5000.0), 0.0);
    }

    #[test]
    fn the_longest_gap_is_the_freeze() {
        let mut f = FreezeTracker::default();
        for t in [0.0, 33.0, 66.0, 900.0, 933.0] {
            f.frame(t);
        }
        assert_eq!(f.longest_ms, 834.0);
        let only: Vec<Freeze> = f.recent().collect();
        assert_eq!(
            only,
            [Freeze {
                ended_at_ms: 900.0,
                ms: 834.0
            }]
        );
    }

    #[test]
    fn the_newest_freezes_are_kept_with_when_they_ended() {
        let mut f = FreezeTracker::default();
        let mut t = 0.0;
        for gap in 1..=10 {
            t += 100.0 + gap as f64;
            f.frame(t);
            f.frame(t + 33.0); // no freeze
            t += 33.0;
        }
        let gaps: Vec<f64> = f.recent().map(|freeze| freeze.ms).collect();
        assert_eq!(
            gaps,
            [103.0, 104.0, 105.0, 106.0, 107.0, 108.0, 109.0, 110.0]
        );
        assert!(f.recent().all(|freeze| freeze.ended_at_ms > 0.0));
    }

    #[test]
    fn a_tile_says_moving_then_lost_then_poor_in_that_order_of_news() {
        let fine = peer_link(10_000.0, None, Some(9_990.0), true, Some(80.0), 0.0);
        assert_eq!(fine, PeerLink::Good);
        // Moved a second ago: moving, though no media came since.
        assert_eq!(
            peer_link(10_000.0, Some(9_000.0), Some(8_000.0), true, None, 0.0),
            PeerLink::Moving
        );
        // Moved long ago, silent for 4 s while sending: lost.
        assert_eq!(
            peer_link(10_000.0, Some(1_000.0), Some(6_000.0), true, None, 0.0),
            PeerLink::Lost
        );
        // The same silence with microphone and camera off is expected.
        assert_eq!(
            peer_link(10_000.0, None, Some(6_000.0), false, None, 0.0),
            PeerLink::Good
        );
        assert_eq!(
            peer_link(10_000.0, None, Some(9_990.0), true, Some(650.0), 0.0),
            PeerLink::Poor
        );
        assert_eq!(
            peer_link(10_000.0, None, Some(9_990.0), true, Some(80.0), 1_500.0),
            PeerLink::Poor
        );
    }
}
