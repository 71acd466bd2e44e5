//! Release times and waiting for them precisely.
//!
//! The lab's promise is that a proxy adds its delay to within a millisecond.
//! Async timers cannot keep it (tokio's wheel has 1 ms ticks and fires late
//! under load), so releases happen on plain threads that sleep until just
//! before the release time and spin the rest of the way: the kernel's sleep
//! overshoot (timer slack, wake-up latency, typically 50–200 µs) is absorbed by
//! the spin, and a thread only spins while it holds a packet that is due within
//! [`SPIN_MARGIN`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rallypoint_client::sim::Rng;

use super::scenario::{Bottleneck, OneWay};

/// How long before a release time a waiting thread stops sleeping and spins.
/// Larger than the usual sleep overshoot, small enough to cost little CPU.
pub(crate) const SPIN_MARGIN: Duration = Duration::from_micros(300);

/// Blocks the thread until `deadline`, never returning early.
pub(crate) fn wait_until(deadline: Instant) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > SPIN_MARGIN {
            std::thread::sleep(left - SPIN_MARGIN);
        } else {
            std::hint::spin_loop();
        }
    }
}

/// One direction of a link with its own random numbers: draws each packet's
/// delay and whether it is lost. Deterministic for a given seed and order of
/// packets.
pub(crate) struct Impairment {
    delay_secs: f64,
    jitter_secs: f64,
    loss: f64,
    rng: Rng,
    bottleneck: Option<Arc<BottleneckQueue>>,
}

/// A bottleneck's queue: packets leave it one after another at its rate.
/// Shared by every direction that crosses the same link — one
/// connection's, one proxy's clients', or a whole location's access line
/// (`proxy::path`) — so each sees the others' packets ahead of its own.
pub(crate) struct BottleneckQueue {
    link: Bottleneck,
    /// When the last packet admitted has left it.
    free_at: Mutex<Option<Instant>>,
    /// Packets arriving before this pass at once (a line that slows down
    /// later); `None`: always slow.
    slow_from: Option<Instant>,
}

impl BottleneckQueue {
    pub(crate) fn new(link: Bottleneck) -> BottleneckQueue {
        BottleneckQueue {
            link,
            free_at: Mutex::new(None),
            slow_from: None,
        }
    }

    /// A bottleneck that packets arriving before `slow_from` pass at once.
    pub(crate) fn slowing_at(link: Bottleneck, slow_from: Instant) -> BottleneckQueue {
        BottleneckQueue {
            slow_from: Some(slow_from),
            ..BottleneckQueue::new(link)
        }
    }

    pub(crate) fn link(&self) -> Bottleneck {
        self.link
    }

    fn free_at(&self) -> Option<Instant> {
        *self.free_at.lock().expect("bottleneck lock")
    }

    /// When a packet of `len` bytes arriving at `arrival` has left, or
    /// `None` when `may_drop` and the packets ahead of it would make it wait
    /// longer than the queue holds (a drop-tail buffer).
    fn admit(&self, arrival: Instant, len: usize, may_drop: bool) -> Option<Instant> {
        if self.slow_from.is_some_and(|slow| arrival < slow) {
            return Some(arrival);
        }
        let mut free_at = self.free_at.lock().expect("bottleneck lock");
        let starts = free_at.map_or(arrival, |free| free.max(arrival));
        if may_drop && starts - arrival > self.link.max_wait {
            return None;
        }
        let leaves = starts + self.link.time_for(len);
        *free_at = Some(leaves);
        Some(leaves)
    }
}

impl Impairment {
    /// A direction with a bottleneck of its own, if `one_way` has one.
    pub(crate) fn new(one_way: OneWay, seed: u64) -> Impairment {
        let queue = one_way
            .bottleneck
            .map(|link| Arc::new(BottleneckQueue::new(link)));
        Impairment::through(one_way, seed, queue)
    }

    /// A direction whose bottleneck is `queue` (shared with others), or none.
    pub(crate) fn through(
        one_way: OneWay,
        seed: u64,
        queue: Option<Arc<BottleneckQueue>>,
    ) -> Impairment {
        Impairment {
            delay_secs: one_way.delay.as_secs_f64(),
            jitter_secs: one_way.jitter.as_secs_f64(),
            loss: one_way.loss,
            rng: Rng::new(seed),
            bottleneck: queue,
        }
    }

    /// When a packet of `len` bytes arriving at `arrival` has passed the
    /// direction's bottleneck (at once without one), or `None` when its
    /// queue is full and the packet is dropped.
    pub(crate) fn through_bottleneck(&mut self, arrival: Instant, len: usize) -> Option<Instant> {
        match &self.bottleneck {
            None => Some(arrival),
            Some(queue) => queue.admit(arrival, len, true),
        }
    }

    /// As [`Impairment::through_bottleneck`] for a byte stream, whose
    /// bottleneck never drops: its reader holds the sender back instead
    /// ([`Impairment::held_back_until`]).
    pub(crate) fn through_bottleneck_unbounded(&mut self, arrival: Instant, len: usize) -> Instant {
        match &self.bottleneck {
            None => arrival,
            Some(queue) => queue
                .admit(arrival, len, false)
                .expect("admitted when it may not drop"),
        }
    }

    /// Until when a byte stream's reader must hold off: while its
    /// bottleneck's queue lacks room for `read` bytes within its length
    /// (`max_wait`; for a queue shorter than `read`, while it holds
    /// anything), the proxy reads nothing, so TCP's flow control holds the
    /// sender back as a full router buffer's drops would make its
    /// congestion control do. `None` when the queue has that room (or there
    /// is no bottleneck).
    pub(crate) fn held_back_until(&self, now: Instant, read: usize) -> Option<Instant> {
        let queue = self.bottleneck.as_ref()?;
        let free_at = queue.free_at()?;
        let holds = queue
            .link
            .max_wait
            .saturating_sub(queue.link.time_for(read));
        let room_at = free_at.checked_sub(holds)?;
        (room_at > now).then_some(room_at)
    }

    /// The most a byte stream's reader may take at `now`: what its
    /// bottleneck's queue has room for (at least `least`), or `most`
    /// without a bottleneck. A chunk passes the bottleneck whole and is
    /// released at once, so a read of more than the queue holds would
    /// arrive as one late burst where a link delivers packet by packet.
    pub(crate) fn room_in_bottleneck(&self, now: Instant, least: usize, most: usize) -> usize {
        // Before a line slows down its queue stays empty, so a read is held
        // to the queue's whole length, no more: one that began just before
        // the line slowed and arrived after must not flood it.
        let Some(queue) = &self.bottleneck else {
            return most;
        };
        let queued = queue
            .free_at()
            .map_or(Duration::ZERO, |free| free.saturating_duration_since(now));
        let room =
            queue.link.max_wait.saturating_sub(queued).as_secs_f64() * queue.link.bytes_per_sec;
        (room as usize).clamp(least, most)
    }

    /// Whether the next packet is lost.
    pub(crate) fn is_lost(&mut self) -> bool {
        // Skip the draw on lossless links so they use the same random numbers
        // for jitter whatever the loss setting of other links.
        self.loss > 0.0 && self.rng.unit() < self.loss
    }

    /// The next packet's delay: normal around the link's delay, never negative.
    pub(crate) fn delay(&mut self) -> Duration {
        if self.jitter_secs == 0.0 {
            return Duration::from_secs_f64(self.delay_secs);
        }
        let sample = self.delay_secs + self.jitter_secs * self.rng.normal();
        Duration::from_secs_f64(sample.max(0.0))
    }
}

/// Independent seeds for the parts of one proxy (directions, connections),
/// derived from the proxy's seed so that a whole run is reproducible.
pub(crate) struct SeedSource(Rng);

impl SeedSource {
    pub(crate) fn new(seed: u64) -> SeedSource {
        SeedSource(Rng::new(seed))
    }

    pub(crate) fn next_seed(&mut self) -> u64 {
        self.0.next_u64()
    }
}

/// A release later than this breaks the lab's accuracy promise.
pub const LATE_RELEASE: Duration = Duration::from_millis(1);

/// What a proxy did, and how punctually: the lab's own accuracy, so that a
/// run on a machine too busy to keep time can be recognised as such.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Datagrams (UDP) or chunks and ends of stream (TCP) passed on.
    pub released: u64,
    /// Datagrams dropped by the link's loss (UDP), or chunks that paid the
    /// retransmission penalty (TCP).
    pub lost: u64,
    /// Releases more than [`LATE_RELEASE`] after their release time: the
    /// proxy did not get the CPU in time, or (TCP) the receiver was not
    /// reading fast enough.
    pub late: u64,
    /// The latest release seen, after its release time.
    pub worst_lateness: Duration,
}

/// [`ProxyStats`] as counters shared by a proxy's threads.
#[derive(Default)]
pub(crate) struct StatsRecorder {
    released: AtomicU64,
    lost: AtomicU64,
    late: AtomicU64,
    worst_lateness_ns: AtomicU64,
}

impl StatsRecorder {
    /// Counts a release happening now that was due at `release_at`.
    pub(crate) fn released(&self, release_at: Instant) {
        let lateness = Instant::now().saturating_duration_since(release_at);
        self.released.fetch_add(1, Ordering::Relaxed);
        if lateness > LATE_RELEASE {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(lateness.as_nanos()).unwrap_or(u64::MAX);
        self.worst_lateness_ns.fetch_max(nanos, Ordering::Relaxed);
    }

    pub(crate) fn lost(&self) {
        self.lost.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> ProxyStats {
        ProxyStats {
            released: self.released.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            late: self.late.load(Ordering::Relaxed),
            worst_lateness: Duration::from_nanos(self.worst_lateness_ns.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_never_returns_early() {
        for micros in [0, 50, 400, 2_000] {
            let deadline = Instant::now() + Duration::from_micros(micros);
            wait_until(deadline);
            assert!(Instant::now() >= deadline);
        }
    }

    #[test]
    fn jittered_delays_are_never_negative() {
        let one_way = OneWay {
            delay: Duration::from_millis(5),
            jitter: Duration::from_millis(10),
            loss: 0.0,
            bottleneck: None,
        };
        let mut impairment = Impairment::new(one_way, 7);
        let samples: Vec<f64> = (0..10_000)
            .map(|_| impairment.delay().as_secs_f64())
            .collect();
        assert!(samples.iter().all(|s| *s >= 0.0));
        assert!(samples.contains(&0.0), "clamped at zero");
        assert!(!impairment.is_lost(), "lossless link never loses");
    }

    #[test]
    fn a_bottleneck_spaces_packets_at_its_rate_and_drops_beyond_its_queue() {
        let one_way = OneWay {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            // 1 000 bytes a millisecond; a queue of 3 ms.
            bottleneck: Some(Bottleneck {
                bytes_per_sec: 1_000_000.0,
                max_wait: Duration::from_millis(3),
            }),
        };
        let mut impairment = Impairment::new(one_way, 1);
        let start = Instant::now();
        let ms = |n: u64| start + Duration::from_millis(n);
        // Six 1 000-byte packets at once: each leaves a millisecond after
        // the one before; the fifth would wait 4 ms and is dropped, as is the sixth.
        let left: Vec<Option<Instant>> = (0..6)
            .map(|_| impairment.through_bottleneck(start, 1_000))
            .collect();
        assert_eq!(
            left,
            vec![
                Some(ms(1)),
                Some(ms(2)),
                Some(ms(3)),
                Some(ms(4)),
                None,
                None
            ]
        );
        // Once the queue has drained a packet goes through at its own pace.
        assert_eq!(
            impairment.through_bottleneck(ms(10), 500),
            Some(ms(10) + Duration::from_micros(500))
        );
        // A byte stream's bottleneck only delays.
        let late = (0..10)
            .map(|_| impairment.through_bottleneck_unbounded(ms(20), 1_000))
            .last();
        assert_eq!(late, Some(ms(30)));
    }
}
