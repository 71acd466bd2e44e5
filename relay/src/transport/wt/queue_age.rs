//! The relay's side of [`rallypoint_protocol::queue_age`]: each
//! WebTransport connection's datagram queue and send window bounded by how
//! long they take to drain at the connection's rate, so that a receiver
//! whose downlink is slower than its room gets recent media, not a backlog
//! (`relay/tests/slow_downlink.rs`).
//!
//! Media datagrams beyond the bound are refused and counted as any frame
//! for a slow receiver (`media_dropped`); probe answers, sent by the
//! connection's writer, are not held back. The send window is read again
//! with every media frame, at most every 20 ms.

use std::time::Instant;

use rallypoint_protocol::queue_age::{DATAGRAM_SEND_BUFFER, PathSample, QueueAge};
use wtransport::quinn;

/// Whether `len` more bytes of media datagrams may join `quic`'s queue.
pub(super) fn datagram_fits(age: &QueueAge, quic: &quinn::Connection, len: usize) -> bool {
    refresh(age, quic);
    let queued = DATAGRAM_SEND_BUFFER.saturating_sub(quic.datagram_send_buffer_space());
    age.datagram_fits(queued, len)
}

/// Reads `quic`'s path again when it is time, and gives quinn the send
/// window it allows.
pub(super) fn refresh(age: &QueueAge, quic: &quinn::Connection) {
    if let Some(window) = age.refresh(Instant::now(), || path(quic)) {
        quic.set_send_window(window);
    }
}

fn path(quic: &quinn::Connection) -> PathSample {
    let path = quic.stats().path;
    PathSample {
        cwnd: path.cwnd,
        rtt: path.rtt,
        congestion_events: path.congestion_events,
    }
}
