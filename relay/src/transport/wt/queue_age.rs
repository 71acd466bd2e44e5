//! How long media may wait inside QUIC for one receiver.
//!
//! QUIC sends as fast as the connection's congestion window lets it and
//! keeps the rest: datagrams in quinn's datagram buffer (1 MiB, the oldest
//! pushed out beyond it). That bound is in bytes, and bytes say nothing
//! about time: a receiver whose downlink is slower than its room fills the
//! buffer and then gets every datagram the buffer's worth late — 16 s at
//! 500 kbit/s (`relay/tests/slow_downlink.rs` measured 4.4 s after 8 s of a
//! room at twice the link's rate). A call that late is no call, and the
//! backlog only keeps the link busy with frames nobody will play.
//!
//! quinn keeps no age for what it queues, but how fast its queue drains is
//! known: at most a congestion window per round trip, the rate the sender is
//! allowed. So the bytes that may wait are that rate times
//! [`MAX_DATAGRAM_WAIT`]; a datagram beyond them is refused, counted as any
//! frame for a slow receiver (`media_dropped`), and the receiver hears what
//! its link carries, recently. Datagrams leave before stream data in every
//! packet quinn builds, so stream traffic does not slow their queue.
//!
//! The estimate is read from quinn at most every [`REFRESH`] (a lock and a
//! copy of its statistics), not per datagram.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use wtransport::quinn;

/// The longest a datagram should wait in QUIC's queue: beyond it, audio is
/// later than a receiver's jitter buffer waits for it.
pub(super) const MAX_DATAGRAM_WAIT: Duration = Duration::from_millis(150);
/// The longest stream data should wait in QUIC's send window before it is
/// sent: the window holds what is in flight and what drains in this time.
const MAX_STREAM_WAIT: Duration = Duration::from_millis(300);
/// Datagram bytes that may always wait, whatever the rate: a burst of a
/// room's audio (30 frames of 120 B). More would be the age bound on a slow
/// path: 16 KiB is 260 ms at 500 kbit/s.
const MIN_DATAGRAM_QUEUE: usize = 4 * 1024;
/// The smallest send window: a few video deltas.
const MIN_SEND_WINDOW: u64 = 16 * 1024;
/// The datagram buffer quinn keeps per connection (its default, set
/// explicitly in the server's configuration so that this module knows it).
pub(super) const DATAGRAM_SEND_BUFFER: usize = 1024 * 1024;
/// How often the drain rate is read again from quinn.
const REFRESH: Duration = Duration::from_millis(20);

/// What one connection may queue, from its current rate.
#[derive(Debug)]
pub(super) struct QueueAge {
    epoch: Instant,
    /// Microseconds since `epoch` of the last refresh, plus one (0: never).
    refreshed_us: AtomicU64,
    datagram_limit: AtomicUsize,
    /// The send window last given to quinn.
    send_window: AtomicU64,
    /// The most the send window may be (the server's configuration).
    max_send_window: u64,
}

/// A connection's bounds for one rate.
#[derive(Debug, PartialEq, Eq)]
struct Bounds {
    datagram_queue: usize,
    send_window: u64,
}

impl QueueAge {
    /// Bounds for a connection whose configured send window is
    /// `max_send_window`: until its rate is known, the buffers themselves.
    pub(super) fn new(max_send_window: u64) -> QueueAge {
        QueueAge {
            epoch: Instant::now(),
            refreshed_us: AtomicU64::new(0),
            datagram_limit: AtomicUsize::new(DATAGRAM_SEND_BUFFER),
            send_window: AtomicU64::new(max_send_window),
            max_send_window,
        }
    }

    /// Whether `len` more bytes of datagrams may join the queue of `quic`.
    pub(super) fn datagram_fits(&self, quic: &quinn::Connection, len: usize) -> bool {
        self.refresh(quic);
        let queued = DATAGRAM_SEND_BUFFER.saturating_sub(quic.datagram_send_buffer_space());
        queued + len <= self.datagram_limit.load(Relaxed)
    }

    /// Reads the rate again if [`REFRESH`] has passed, and gives quinn the
    /// send window it allows. Called with every media frame sent.
    pub(super) fn refresh(&self, quic: &quinn::Connection) {
        let now_us = self.epoch.elapsed().as_micros() as u64 + 1;
        let last = self.refreshed_us.load(Relaxed);
        if last != 0 && now_us.saturating_sub(last) < REFRESH.as_micros() as u64 {
            return;
        }
        self.refreshed_us.store(now_us, Relaxed);
        let stats = quic.stats();
        let bounds = bounds(
            stats.path.cwnd,
            stats.path.rtt,
            stats.path.congestion_events,
            self.max_send_window,
        );
        self.datagram_limit.store(bounds.datagram_queue, Relaxed);
        if self.send_window.swap(bounds.send_window, Relaxed) != bounds.send_window {
            quic.set_send_window(bounds.send_window);
        }
    }
}

/// The bounds for a connection allowed `cwnd` bytes per `rtt` that has seen
/// `congestion_events`. One that has never seen any is still in slow start,
/// doubling its window every round trip: it has not found its path's rate,
/// and bounding it by its window so far would starve a fresh connection's
/// first seconds (a distant receiver's burst of video). It gets the buffers.
fn bounds(cwnd: u64, rtt: Duration, congestion_events: u64, max_send_window: u64) -> Bounds {
    if congestion_events == 0 {
        return Bounds {
            datagram_queue: DATAGRAM_SEND_BUFFER,
            send_window: max_send_window,
        };
    }
    let per_sec = cwnd as f64 / rtt.max(Duration::from_micros(100)).as_secs_f64();
    let drained = |wait: Duration| per_sec * wait.as_secs_f64();
    Bounds {
        datagram_queue: (drained(MAX_DATAGRAM_WAIT) as usize)
            .clamp(MIN_DATAGRAM_QUEUE, DATAGRAM_SEND_BUFFER),
        // What is in flight, and what drains after it in the wait.
        send_window: (cwnd + drained(MAX_STREAM_WAIT) as u64)
            .clamp(MIN_SEND_WINDOW, max_send_window),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn after_congestion(cwnd: u64, rtt: Duration) -> Bounds {
        bounds(cwnd, rtt, 1, MIB)
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
    fn a_connection_in_slow_start_gets_the_buffers() {
        assert_eq!(
            bounds(14_720, Duration::from_millis(100), 0, MIB),
            Bounds {
                datagram_queue: DATAGRAM_SEND_BUFFER,
                send_window: MIB
            }
        );
    }
}
