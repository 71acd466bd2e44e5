//! Media a WebTransport client sends on unidirectional streams: one frame too
//! large for a datagram per stream, read to its end and handed to the
//! session.
//!
//! A stream holds one unit of the client's stream credit from its opening
//! until the relay has read it to its end (or the client reset it) and QUIC
//! has sent the credit back: a round trip at least, more while the client's
//! congestion window is still opening. So the credit, [`MAX_STREAMS`], is what a distant client may
//! send per round trip: a camera and a screen share (60 frames a second)
//! from 600 ms away (a geostationary satellite) need about a hundred. With 4,
//! a client 300 ms away lost half of them; with 64, one 600 ms away a fifth
//! (`client/native/tests/far_sender.rs`).
//!
//! Bounds, per connection: [`MAX_STREAMS`] read at once; [`BUFFERED_BYTES`]
//! of their buffers together, taken from the budget before a read fills them
//! (so up to 128 streams cannot hold 128 MiB); each stream finished within
//! [`DEADLINE`]. A stream that misses its deadline — a client sending faster
//! than its uplink, or one that opens streams and never finishes them — is
//! stopped and its frame dropped (`media_streams_abandoned`); the connection
//! lives on, since one late frame says nothing about the next. (Our clients
//! answer the stop by resetting the stream, which returns its credit.) A stream
//! larger than a frame, or one that fails, is a protocol error that ends the
//! connection.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use rallypoint_protocol::{FrameError, limits};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use wtransport::{Connection, RecvStream, VarInt};

use super::forward;
use crate::metrics::Stats;
use crate::session::Inbound;
use crate::transport::inbound;

/// Streams read at once per connection, and so the client's stream credit.
/// Further streams wait, unaccepted, inside QUIC's own limits.
pub const MAX_STREAMS: usize = 128;
/// Buffer bytes of the streams being read, per connection, however many
/// streams hold them: four maximal frames. Reading waits beyond it, and
/// QUIC's flow control then holds the client back.
const BUFFERED_BYTES: usize = 4 * limits::MAX_FRAME;
/// A stream's first read takes this much of the budget; each further one
/// doubles the buffer. A video delta (2.4 kB) then costs 4 KiB, and 128
/// streams waiting for their first bytes hold an eighth of the budget.
const FIRST_READ: usize = 4 * 1024;
/// A media stream must be complete (FIN) within this time: a 1 MiB keyframe
/// at 2 Mbit/s takes about 4 s.
const DEADLINE: Duration = Duration::from_secs(5);
/// Application error code of STOP_SENDING for a stream past [`DEADLINE`].
const STOPPED_LATE: u32 = 1;

/// Reads the client's media streams until the connection ends, handing each
/// frame to the session through `tx`.
pub async fn read(connection: Connection, tx: mpsc::Sender<Inbound>, stats: Arc<Stats>) {
    let reading = Arc::new(Semaphore::new(MAX_STREAMS));
    let budget = Arc::new(Semaphore::new(BUFFERED_BYTES));
    loop {
        let Ok(slot) = reading.clone().acquire_owned().await else {
            return;
        };
        let Ok(stream) = connection.accept_uni().await else {
            return;
        };
        let (tx, budget, stats) = (tx.clone(), budget.clone(), stats.clone());
        tokio::spawn(async move {
            let _slot = slot;
            // The frame's bytes stay counted until the session has it.
            if let Some((item, _held)) = read_frame(stream, budget, &stats).await {
                let _ = forward(&tx, item).await;
            }
        });
    }
}

/// The stream's frame for the session (with what its buffer holds of the
/// budget), an error that ends the connection, or nothing for a stream
/// stopped at its deadline.
async fn read_frame(
    mut stream: RecvStream,
    budget: Arc<Semaphore>,
    stats: &Stats,
) -> Option<(Inbound, Option<OwnedSemaphorePermit>)> {
    let read = read_whole(&mut stream, limits::MAX_FRAME, budget);
    match tokio::time::timeout(DEADLINE, read).await {
        Ok(Ok((frame, held))) => Some((inbound(frame, false), Some(held))),
        Ok(Err(error)) => Some((Inbound::Invalid(error), None)),
        Err(_) => {
            stream.stop(VarInt::from_u32(STOPPED_LATE));
            stats.media_streams_abandoned.fetch_add(1, Relaxed);
            None
        }
    }
}

/// Reads `stream` to its end, at most `max` bytes, into a buffer whose every
/// byte was first taken from `budget`; returns the frame and what its buffer
/// holds of the budget (the buffer may be up to twice the frame).
///
/// The budget's waiters are served in turn, so when every stream holding
/// part of it waits to grow (a client with more than a few megabytes of
/// frames interleaved), none moves until [`DEADLINE`] stops one: its frame
/// is lost, the connection is not. Our native client sends its frames one
/// after another (QUIC's send fairness off), which keeps that to clients
/// sending faster than their uplink.
async fn read_whole(
    stream: &mut RecvStream,
    max: usize,
    budget: Arc<Semaphore>,
) -> Result<(Bytes, OwnedSemaphorePermit), FrameError> {
    let failed =
        |e: &dyn std::fmt::Display| FrameError::Malformed(format!("stream read failed: {e}"));
    let mut body: Vec<u8> = Vec::new();
    let mut held = budget
        .clone()
        .acquire_many_owned(0)
        .await
        .map_err(|e| failed(&e))?;
    loop {
        if body.len() == body.capacity() {
            let grow = body.capacity().max(FIRST_READ).min(max + 1 - body.len());
            held.merge(
                budget
                    .clone()
                    .acquire_many_owned(grow as u32)
                    .await
                    .map_err(|e| failed(&e))?,
            );
            body.reserve_exact(grow);
        }
        let room = body.capacity() - body.len();
        let Some(chunk) = stream
            .quic_stream_mut()
            .read_chunk(room, true)
            .await
            .map_err(|e| failed(&e))?
        else {
            return Ok((Bytes::from(body), held));
        };
        body.extend_from_slice(&chunk.bytes);
        if body.len() > max {
            return Err(FrameError::TooLarge {
                len: body.len(),
                max,
            });
        }
    }
}
