//! Round-trip statistics of one candidate.
//!
//! Two views of the same samples:
//! * the **election window** (reset when a tournament starts): an
//!   `hdrhistogram` for quantiles plus counters — what reports and live tables
//!   show, and what the tournament decides on;
//! * the **recent log**: the last samples with their times — what the
//!   switching rule compares, so an old good period cannot hide a degradation
//!   — and the probes lost among them, so a loss that stopped stops counting
//!   (see [`RttStats::recent_loss`]).

use std::collections::VecDeque;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::time::Micros;

/// Longest recent log kept.
const RECENT_CAP: usize = 256;
/// Most samples of one window kept in order (the histogram keeps counting):
/// bounds memory on long calls without a switch.
const WINDOW_CAP: usize = 4096;

#[derive(Debug, Clone)]
pub struct RttStats {
    histogram: Histogram<u64>,
    /// This window's samples in arrival order (µs), for jitter and bounds.
    window: Vec<u64>,
    lost: u32,
    /// Answers of this window that came too late for a call's media
    /// (counted in the samples too: their RTT is real).
    too_late: u32,
    recent: VecDeque<(Micros, u64)>,
    /// When probes were lost, and when answers came too late for media: the
    /// newest [`RECENT_CAP`] of each ([`RttStats::recent_loss`] counts those
    /// within `recent`'s span).
    recent_lost: VecDeque<Micros>,
    recent_too_late: VecDeque<Micros>,
    /// The least round trip measured (µs) and when: the path's own delay,
    /// with nothing queued on it (as TCP's `min_rtt`), for
    /// [`FLOOR_LIFETIME`] (see [`RttStats::floor`]).
    floor: Option<(u64, Micros)>,
}

/// How long a path's least round trip stands unless a lower one comes
/// ([`RttStats::floor`]); then the recent log's least takes its place. A
/// fluke of a sample, or a route that got longer for good, must not leave
/// the path looking queued for the rest of a call; a queue that stays full
/// for longer than this is the path as it now is.
const FLOOR_LIFETIME: Duration = Duration::from_secs(300);

/// A summary of a set of samples, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    pub samples: u32,
    pub lost: u32,
    pub min: u64,
    pub median: u64,
    pub p95: u64,
    pub mean: u64,
    /// Mean absolute difference between consecutive samples (RFC 3550 style).
    pub jitter: u64,
}

impl Default for RttStats {
    fn default() -> Self {
        Self::new()
    }
}

impl RttStats {
    pub fn new() -> Self {
        RttStats {
            // 1 µs .. 60 s at 3 significant digits: 0.1% resolution.
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            window: Vec::new(),
            lost: 0,
            too_late: 0,
            recent: VecDeque::new(),
            recent_lost: VecDeque::new(),
            recent_too_late: VecDeque::new(),
            floor: None,
        }
    }

    pub fn record(&mut self, at: Micros, rtt: Duration) {
        let us = (rtt.as_micros() as u64).clamp(1, 60_000_000);
        self.histogram.record(us).expect("clamped into bounds");
        if self.window.len() == WINDOW_CAP {
            self.window.remove(0);
        }
        self.window.push(us);
        if self.recent.len() == RECENT_CAP {
            self.recent.pop_front();
        }
        self.recent.push_back((at, us));
        self.floor = match self.floor {
            Some((floor, since)) if us > floor && at.since(since) < FLOOR_LIFETIME => {
                Some((floor, since))
            }
            Some((floor, _)) if us > floor => {
                let least = self.recent.iter().map(|&(_, us)| us).min().unwrap_or(us);
                Some((least, at))
            }
            _ => Some((us, at)),
        };
    }

    /// A probe went unanswered past its deadline, at `at`.
    pub fn record_lost(&mut self, at: Micros) {
        self.lost += 1;
        push_capped(&mut self.recent_lost, at);
    }

    /// An answer to a probe already counted lost: it was late, not lost.
    pub fn record_late(&mut self, at: Micros, rtt: Duration) {
        self.lost = self.lost.saturating_sub(1);
        self.recent_lost.pop_back();
        self.record(at, rtt);
    }

    /// The sample just recorded came too late for a call's media: a
    /// listener's jitter buffer had played past it.
    pub fn record_too_late(&mut self) {
        self.too_late += 1;
        if let Some(&(at, _)) = self.recent.back() {
            push_capped(&mut self.recent_too_late, at);
        }
    }

    /// Over the recent log's span — its last [`RECENT_CAP`] answers, about
    /// 13 s of a talking call's probes and 50 s of a silent one's — the
    /// answers that came in time for media and the probes lost to it (lost,
    /// or answered too late), as [`RttStats::answered_in_time`] and
    /// [`RttStats::lost_to_media`] count them for the window. Unlike the
    /// window's, these forget a loss once the path has been clean for that
    /// long.
    pub fn recent_loss(&self) -> (usize, u32) {
        let since = self.recent.front().map_or(Micros::ZERO, |&(at, _)| at);
        let counted = |log: &VecDeque<Micros>| log.iter().filter(|&&at| at >= since).count();
        let too_late = counted(&self.recent_too_late);
        let lost = counted(&self.recent_lost) + too_late;
        (self.recent.len().saturating_sub(too_late), lost as u32)
    }

    /// Starts a new election window; the recent log is kept.
    pub fn reset_window(&mut self) {
        self.histogram.reset();
        self.window.clear();
        self.lost = 0;
        self.too_late = 0;
    }

    /// This window's answers that came in time for a call's media.
    pub fn answered_in_time(&self) -> usize {
        (self.samples() as usize).saturating_sub(self.too_late as usize)
    }

    /// This window's probes lost to a call: lost, or answered too late.
    /// What the switching rule charges as loss — a TCP stream never loses a
    /// probe, it delivers it a retransmission later, which a call's audio
    /// cannot use either.
    pub fn lost_to_media(&self) -> u32 {
        self.lost + self.too_late
    }

    pub fn samples(&self) -> u32 {
        self.histogram.len() as u32
    }

    /// This window's samples in arrival order.
    pub fn window(&self) -> &[u64] {
        &self.window
    }

    pub fn lost(&self) -> u32 {
        self.lost
    }

    /// Summary of the election window (hdrhistogram quantiles).
    pub fn summary(&self) -> Summary {
        if self.window.is_empty() {
            return Summary {
                lost: self.lost,
                ..Default::default()
            };
        }
        let h = &self.histogram;
        Summary {
            samples: h.len() as u32,
            lost: self.lost,
            min: h.min(),
            median: h.value_at_quantile(0.5),
            p95: h.value_at_quantile(0.95),
            mean: h.mean().round() as u64,
            jitter: jitter(&self.window),
        }
    }

    /// The newest `n` samples of the recent log, oldest first.
    pub fn latest(&self, n: usize) -> impl Iterator<Item = u64> + '_ {
        self.recent
            .iter()
            .skip(self.recent.len().saturating_sub(n))
            .map(|&(_, us)| us)
    }

    /// Samples taken at or after `since`, in order.
    pub fn recent_since(&self, since: Micros) -> Vec<u64> {
        self.recent
            .iter()
            .filter(|(at, _)| *at >= since)
            .map(|(_, us)| *us)
            .collect()
    }

    /// The least round trip measured on the path (µs): the least since the
    /// path connected, or, once that is [`FLOOR_LIFETIME`] old, the least of
    /// the recent log then (and any lower one since).
    pub fn floor(&self) -> Option<u64> {
        self.floor.map(|(floor, _)| floor)
    }

    /// The first sample of this window, if any.
    pub fn first(&self) -> Option<u64> {
        self.window.first().copied()
    }
}

/// Appends `at` to a loss log, dropping its oldest beyond [`RECENT_CAP`]
/// (a path that loses everything still keeps a bounded log).
fn push_capped(log: &mut VecDeque<Micros>, at: Micros) {
    if log.len() == RECENT_CAP {
        log.pop_front();
    }
    log.push_back(at);
}

/// Mean absolute difference of consecutive samples.
pub fn jitter(samples: &[u64]) -> u64 {
    if samples.len() < 2 {
        return 0;
    }
    let total: u64 = samples.windows(2).map(|w| w[0].abs_diff(w[1])).sum();
    total / (samples.len() as u64 - 1)
}

/// Median of unsorted samples (mean of the middle two for even counts).
pub fn median(samples: &[u64]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    // Selection, not a sort: linear time. The switching rule takes the
    // median of thousands of pairwise means on every probe answer.
    let mut values = samples.to_vec();
    let n = values.len();
    let (below, &mut upper, _) = values.select_nth_unstable(n / 2);
    Some(if n % 2 == 1 {
        upper as f64
    } else {
        let lower = *below
            .iter()
            .max()
            .expect("an even count above zero has a lower half");
        (lower + upper) as f64 / 2.0
    })
}

/// Samples an estimate looks at at most: the newest of a window.
///
/// The Hodges–Lehmann estimate takes the median of all pairwise means, which
/// grow with the square of the samples: a serving path's window holds up to
/// [`WINDOW_CAP`] samples after a few minutes of a talking call (20 probes a
/// second), 8.4 million means to build and select from on every
/// re-election. 128 samples make 8 256 means; their precision (σ/√128) is
/// far below what separates relays, and the newest samples are the path as
/// it is now. The price: confidence bounds stop narrowing past 128 samples,
/// so two paths closer than that precision are never told apart (the
/// switching rule needs a clear gain anyway).
pub const ESTIMATE_SAMPLES: usize = 128;

/// The newest [`ESTIMATE_SAMPLES`] of `samples` (in arrival order).
pub fn estimation_samples(samples: &[u64]) -> &[u64] {
    &samples[samples.len().saturating_sub(ESTIMATE_SAMPLES)..]
}

/// The Hodges–Lehmann estimate of the newest samples
/// ([`estimation_samples`]): the median of all pairwise means (Walsh
/// averages). As robust as it needs to be (29% breakdown: a few delayed probes
/// do not move it) and nearly as efficient as the mean on well-behaved jitter
/// (95% for normal noise, against 64% for the plain median), so it needs fewer
/// probes for the same accuracy.
pub fn hodges_lehmann(samples: &[u64]) -> Option<f64> {
    let samples = estimation_samples(samples);
    if samples.is_empty() {
        return None;
    }
    let mut walsh = Vec::with_capacity(samples.len() * (samples.len() + 1) / 2);
    for i in 0..samples.len() {
        for j in i..samples.len() {
            walsh.push(samples[i] + samples[j]);
        }
    }
    median(&walsh).map(|m| m / 2.0)
}

/// Median absolute deviation from the median.
pub fn mad(samples: &[u64]) -> Option<f64> {
    let m = median(samples)?;
    let deviations: Vec<u64> = samples
        .iter()
        .map(|&x| (x as f64 - m).abs() as u64)
        .collect();
    median(&deviations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_a_window() {
        let mut stats = RttStats::new();
        for (i, ms) in [40, 42, 41, 60, 40].iter().enumerate() {
            stats.record(Micros(i as u64), Duration::from_millis(*ms));
        }
        stats.record_lost(Micros(5));
        let s = stats.summary();
        assert_eq!(s.samples, 5);
        assert_eq!(s.lost, 1);
        assert!((39_900..=40_100).contains(&s.min));
        assert!((40_900..=41_100).contains(&s.median));
        assert!((59_900..=60_100).contains(&s.p95));
        // |42-40| + |41-42| + |60-41| + |40-60| = 42 ms over 4 gaps
        assert_eq!(s.jitter, 10_500);
        stats.reset_window();
        assert_eq!(stats.summary().samples, 0);
        assert_eq!(stats.recent_since(Micros(3)).len(), 2);
    }

    #[test]
    fn hodges_lehmann_ignores_a_delayed_probe() {
        assert_eq!(hodges_lehmann(&[40, 41, 42]), Some(41.0));
        let with_outlier = hodges_lehmann(&[40, 41, 42, 40, 41, 400]).unwrap();
        assert!((40.0..43.0).contains(&with_outlier), "{with_outlier}");
    }

    #[test]
    fn an_estimate_of_a_long_window_is_of_its_newest_samples() {
        // Minutes at 100 ms, then the path settles at 40 ms: a window of
        // 4 096 samples would cost 8.4 million pairwise means and say ~100.
        let mut window = vec![100_000; WINDOW_CAP - ESTIMATE_SAMPLES];
        window.extend(std::iter::repeat_n(40_000, ESTIMATE_SAMPLES));
        assert_eq!(hodges_lehmann(&window), Some(40_000.0));
        assert_eq!(estimation_samples(&window).len(), ESTIMATE_SAMPLES);
        assert_eq!(estimation_samples(&[1, 2, 3]), &[1, 2, 3]);
    }

    #[test]
    fn median_and_mad() {
        assert_eq!(median(&[3, 1, 2]), Some(2.0));
        assert_eq!(median(&[4, 1, 2, 3]), Some(2.5));
        assert_eq!(mad(&[1, 2, 3, 4, 100]), Some(1.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn the_floor_is_the_least_round_trip_until_it_is_five_minutes_old() {
        let secs = |s: u64| Micros(s * 1_000_000);
        let ms = Duration::from_millis;
        let mut stats = RttStats::new();
        assert_eq!(stats.floor(), None);
        stats.record(secs(0), ms(40));
        stats.record(secs(1), ms(300));
        assert_eq!(stats.floor(), Some(40_000));
        // A route 100 ms longer for good: the old least stands for its
        // lifetime, then the recent log's least takes its place.
        for t in 2..300 {
            stats.record(secs(t), ms(140));
        }
        assert_eq!(stats.floor(), Some(40_000));
        stats.record(secs(301), ms(150));
        assert_eq!(stats.floor(), Some(140_000));
        stats.record(secs(302), ms(120));
        assert_eq!(stats.floor(), Some(120_000), "a lower one at once");
    }

    #[test]
    fn recent_loss_forgets_losses_older_than_the_recent_log() {
        let ms = |ms: u64| Micros(ms * 1_000);
        let rtt = Duration::from_millis(40);
        let mut stats = RttStats::new();
        for t in 0..10 {
            stats.record(ms(t * 50), rtt);
        }
        stats.record_lost(ms(500));
        stats.record_lost(ms(550));
        stats.record_lost(ms(600));
        stats.record_late(ms(700), rtt); // one of them was late, not lost
        stats.record(ms(750), rtt);
        stats.record_too_late(); // … and this one too late for media
        assert_eq!(stats.recent_loss(), (11, 3), "two lost, one too late");
        assert_eq!(
            stats.recent_loss(),
            (stats.answered_in_time(), stats.lost_to_media())
        );
        // A clean path for a whole recent log: the losses are forgotten
        // there, and still counted in the window.
        for t in 0..RECENT_CAP as u64 {
            stats.record(ms(1_000 + t * 50), rtt);
        }
        assert_eq!(stats.recent_loss(), (RECENT_CAP, 0));
        assert_eq!(stats.lost_to_media(), 3);
    }
}
