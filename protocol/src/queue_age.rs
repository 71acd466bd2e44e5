//! How long media may wait in a WebTransport sender's QUIC queues, for
//! both ends: the relay towards each receiver, a native client towards its
//! relay. The policy is sans-IO; with the `quic` feature, [`QueueAge`] also
//! reads and applies it on a quinn connection, so both ends share that too.
//!
//! QUIC sends as fast as the connection's congestion window lets it and
//! keeps the rest: datagrams in quinn's datagram buffer (1 MiB, the oldest
//! pushed out beyond it), stream data up to the send window. Both bounds
//! are in bytes, and bytes say nothing about time: a path slower than the
//! media sent over it fills them, and then carries every frame the
//! buffer's worth late — 16 s at 500 kbit/s. Measured before this bound
//! (`relay/tests/slow_downlink.rs`, `client/native/tests/slow_uplink.rs`):
//! a receiver at 500 kbit/s whose room sent twice that got datagrams 4.4 s
//! late and streamed video 3.7 s late after 8 s, and nothing was dropped. A
//! call that late is no call, and the backlog keeps the path busy with
//! frames nobody will play.
//!
//! QUIC keeps no age for what it queues, but how fast its queue drains is
//! known: at most a congestion window per round trip, the rate the sender
//! is allowed. So the datagram bytes that may wait are that rate times
//! [`MAX_DATAGRAM_WAIT`] (a datagram beyond them is refused: the receiver
//! gets what its path carries, recently), and the send window is what is in
//! flight plus that rate times [`MAX_STREAM_WAIT`] (a write waits beyond
//! it, and the writer's own deadlines drop what waited too long). Datagrams
//! leave before stream data in every packet quinn builds, so stream traffic
//! does not slow their queue.
//!
//! A connection that has never seen a congestion event is still in slow
//! start, doubling its window every round trip: it has not found its path's
//! rate, and bounding it by its window so far would starve a fresh
//! connection's first seconds (a distant receiver's burst of video), so it
//! keeps the full buffers. (quinn counts a congestion event per batch of
//! lost packets, the handshake's included, and per ECN mark: a connection
//! that lost a packet early is bounded from its first small window, which
//! then grows as its congestion controller allows.) Below the floors the
//! bound is the floor's: at under ~220 kbit/s, [`MIN_DATAGRAM_QUEUE`] is more
//! than 150 ms of sending.
//!
//! Probes are never held back by this bound: they measure the path, and a
//! probe refused by its own sender would read as loss on it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The longest a datagram should wait in QUIC's queue: beyond it, audio is
/// later than a receiver's jitter buffer waits for it.
pub const MAX_DATAGRAM_WAIT: Duration = Duration::from_millis(150);
/// The longest stream data should wait in QUIC's send window before it is
/// sent: the window holds what is in flight and what drains in this time.
/// A picture waits for all of its packets, so it gets longer than a
/// datagram.
pub const MAX_STREAM_WAIT: Duration = Duration::from_millis(300);
/// Datagram bytes that may always wait, whatever the rate: a burst of a
/// room's audio (about 24 frames of 120 B, with the 32 B quinn counts per
/// datagram). More would be the age bound on a slow path: 16 KiB is 260 ms
/// at 500 kbit/s.
pub const MIN_DATAGRAM_QUEUE: usize = 4 * 1024;
/// The smallest send window: a few video deltas.
pub const MIN_SEND_WINDOW: u64 = 16 * 1024;
/// The datagram buffer both ends configure quinn with (quinn's default,
/// set explicitly so that what is queued can be told from what is free).
pub const DATAGRAM_SEND_BUFFER: usize = 1024 * 1024;
/// How often a connection's rate is read again.
pub const REFRESH: Duration = Duration::from_millis(20);

/// What a QUIC connection's congestion controller says of its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathSample {
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Smoothed round trip.
    pub rtt: Duration,
    /// Congestion events (losses, ECN marks) seen so far.
    pub congestion_events: u64,
}

/// A connection's queue bounds for one [`PathSample`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Datagram bytes that may wait to be sent.
    pub datagram_queue: usize,
    /// Unacknowledged stream bytes QUIC may hold.
    pub send_window: u64,
}

impl Bounds {
    /// The bounds for `path`, the send window within `max_send_window`
    /// (the connection's configured one).
    pub fn for_path(path: PathSample, max_send_window: u64) -> Bounds {
        if path.congestion_events == 0 {
            return Bounds {
                datagram_queue: DATAGRAM_SEND_BUFFER,
                send_window: max_send_window,
            };
        }
        let per_sec = path.cwnd as f64 / path.rtt.max(Duration::from_micros(100)).as_secs_f64();
        let drained = |wait: Duration| per_sec * wait.as_secs_f64();
        Bounds {
            datagram_queue: (drained(MAX_DATAGRAM_WAIT) as usize)
                .clamp(MIN_DATAGRAM_QUEUE, DATAGRAM_SEND_BUFFER),
            send_window: (path.cwnd + drained(MAX_STREAM_WAIT) as u64)
                .clamp(MIN_SEND_WINDOW.min(max_send_window), max_send_window),
        }
    }
}

/// One connection's bounds, shared by the tasks that send on it and read
/// again at most every [`REFRESH`] (reading a QUIC connection's statistics
/// takes its lock), not per frame. A new send window is returned only when
/// it differs from the one given by more than an eighth (giving one wakes
/// the connection's driver).
#[derive(Debug)]
pub struct QueueAge {
    epoch: Instant,
    /// Microseconds since `epoch` of the last refresh, plus one (0: never).
    refreshed_us: AtomicU64,
    datagram_queue: AtomicUsize,
    /// The send window last returned for QUIC (given to it).
    send_window: AtomicU64,
    max_send_window: u64,
}

impl QueueAge {
    /// Bounds for a connection made at `now` whose configured send window is
    /// `max_send_window`: until its path is read, the buffers themselves.
    pub fn new(max_send_window: u64, now: Instant) -> QueueAge {
        QueueAge {
            epoch: now,
            refreshed_us: AtomicU64::new(0),
            datagram_queue: AtomicUsize::new(DATAGRAM_SEND_BUFFER),
            send_window: AtomicU64::new(max_send_window),
            max_send_window,
        }
    }

    /// Reads the path with `sample` if [`REFRESH`] has passed by `now`;
    /// returns the send window to give QUIC when it changed by more than an
    /// eighth. Of callers racing at the same moment one reads the path.
    pub fn refresh(&self, now: Instant, sample: impl FnOnce() -> PathSample) -> Option<u64> {
        let now_us = now.saturating_duration_since(self.epoch).as_micros() as u64 + 1;
        let last = self.refreshed_us.load(Relaxed);
        if last != 0 && now_us.saturating_sub(last) < REFRESH.as_micros() as u64 {
            return None;
        }
        if self
            .refreshed_us
            .compare_exchange(last, now_us, Relaxed, Relaxed)
            .is_err()
        {
            return None;
        }
        let bounds = Bounds::for_path(sample(), self.max_send_window);
        self.datagram_queue.store(bounds.datagram_queue, Relaxed);
        let given = self.send_window.load(Relaxed);
        if given.abs_diff(bounds.send_window) <= given / 8 {
            return None;
        }
        self.send_window.store(bounds.send_window, Relaxed);
        Some(bounds.send_window)
    }

    /// Whether a datagram of `len` bytes may join a queue holding `queued`.
    pub fn datagram_fits(&self, queued: usize, len: usize) -> bool {
        queued + len <= self.datagram_queue.load(Relaxed)
    }
}

/// The bounds on a quinn connection (feature `quic`: the relay and the
/// native client; the browser build has no QUIC of its own).
#[cfg(feature = "quic")]
mod quic {
    use std::time::Instant;

    use wtransport::quinn::Connection;

    use super::{DATAGRAM_SEND_BUFFER, PathSample, QueueAge};

    impl QueueAge {
        /// Whether a media datagram of `len` bytes may join `connection`'s
        /// queue; reads the path first when it is time. (Probes do not ask.)
        pub fn media_datagram_fits(&self, connection: &Connection, len: usize) -> bool {
            self.refresh_on(connection);
            let queued =
                DATAGRAM_SEND_BUFFER.saturating_sub(connection.datagram_send_buffer_space());
            self.datagram_fits(queued, len)
        }

        /// Reads `connection`'s path again when it is time, and gives it the
        /// send window that allows.
        pub fn refresh_on(&self, connection: &Connection) {
            let path = || {
                let path = connection.stats().path;
                PathSample {
                    cwnd: path.cwnd,
                    rtt: path.rtt,
                    congestion_events: path.congestion_events,
                }
            };
            if let Some(window) = self.refresh(Instant::now(), path) {
                connection.set_send_window(window);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn after_congestion(cwnd: u64, rtt: Duration) -> Bounds {
        let path = PathSample {
            cwnd,
            rtt,
            congestion_events: 1,
        };
        Bounds::for_path(path, MIB)
    }

    #[test]
    fn the_queues_hold_what_the_window_drains_in_their_wait() {
        // 64 KB a 100 ms round trip is 640 KB/s: 96 KB of datagrams in
        // 150 ms, and 64 + 192 KB of stream data in flight and in 300 ms.
        assert_eq!(
            after_congestion(64_000, Duration::from_millis(100)),
            Bounds {
                datagram_queue: 96_000,
                send_window: 256_000
            }
        );
        // A slow path: 15 KB per 200 ms.
        assert_eq!(
            after_congestion(15_000, Duration::from_millis(200)),
            Bounds {
                datagram_queue: 11_250,
                send_window: 37_500
            }
        );
        // QUIC's smallest window over a long round trip: the floors.
        assert_eq!(
            after_congestion(2_400, Duration::from_millis(300)),
            Bounds {
                datagram_queue: MIN_DATAGRAM_QUEUE,
                send_window: MIN_SEND_WINDOW
            }
        );
        // Loopback: the buffers themselves.
        assert_eq!(
            after_congestion(1_000_000, Duration::from_micros(50)),
            Bounds {
                datagram_queue: DATAGRAM_SEND_BUFFER,
                send_window: MIB
            }
        );
    }

    #[test]
    fn a_connection_in_slow_start_keeps_the_buffers() {
        let fresh = PathSample {
            cwnd: 14_720,
            rtt: Duration::from_millis(100),
            congestion_events: 0,
        };
        assert_eq!(
            Bounds::for_path(fresh, MIB),
            Bounds {
                datagram_queue: DATAGRAM_SEND_BUFFER,
                send_window: MIB
            }
        );
    }

    #[test]
    fn the_path_is_read_at_most_every_refresh_and_a_window_given_only_when_it_moves_an_eighth() {
        let start = Instant::now();
        let age = QueueAge::new(MIB, start);
        let slow = PathSample {
            cwnd: 15_000,
            rtt: Duration::from_millis(200),
            congestion_events: 3,
        };
        assert!(
            age.datagram_fits(DATAGRAM_SEND_BUFFER - 100, 100),
            "unread: the buffer"
        );
        assert_eq!(age.refresh(start, || slow), Some(37_500));
        assert!(age.datagram_fits(11_000, 250));
        assert!(!age.datagram_fits(11_000, 251));
        // Within REFRESH the path is not read again.
        let unread = || -> PathSample { panic!("read within REFRESH") };
        assert_eq!(age.refresh(start + REFRESH / 2, unread), None);
        // Read again, the same window is not given twice, nor one within an
        // eighth of it.
        assert_eq!(age.refresh(start + REFRESH, || slow), None);
        let a_little_faster = PathSample {
            cwnd: 16_000,
            ..slow
        };
        assert_eq!(age.refresh(start + 2 * REFRESH, || a_little_faster), None);
        let faster = PathSample {
            cwnd: 30_000,
            ..slow
        };
        assert_eq!(age.refresh(start + 3 * REFRESH, || faster), Some(75_000));
    }
}
