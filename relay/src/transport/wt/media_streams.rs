//! Media too large for a datagram, to one WebTransport client, over
//! unidirectional streams (`rallypoint_protocol::media_streams` says what a
//! stream carries).
//!
//! * A client that reads groups (`Hello.media_stream_groups`) gets each
//!   picture track (camera, screen) on one stream from a keyframe up to the
//!   next: a keyframe finishes the track's stream and starts another, and a
//!   group idle for [`GROUP_IDLE`] (camera off, sender gone) is finished. A
//!   receiver's frames then need one stream per track from the client's
//!   stream credit, not one per frame in flight; a lost packet holds up only
//!   frames that need it to be decoded anyway.
//! * Everything else — audio, and every frame to a client that does not read
//!   groups — goes on a stream of its own.
//!
//! No stream waits for the client's acknowledgement: QUIC retransmits on its
//! own. (Before groups, each frame's stream held one of 32 slots until the
//! client acknowledged it, so a receiver 100 ms away was sent at most ~300
//! large frames a second and the rest dropped: 251 of 600 arrived in
//! `relay/tests/media_streams.rs`.) The relay's CPU per forwarded frame did
//! not change measurably (BENCHMARKS.md): it goes to QUIC packets and
//! `sendmsg`, not to streams.
//!
//! Bounds, per connection: at most [`MAX_STREAMS`] streams open at once, at
//! most [`QUEUED_BYTES`] of frames waiting for QUIC, at most [`GROUP_QUEUE`]
//! frames waiting in one group, each write within [`WRITE_DEADLINE`]. A frame
//! beyond them is dropped and counted as any frame for a slow receiver; in a
//! group the frames after it are useless until the next keyframe, so the
//! group is finished and the track's frames are dropped until a keyframe
//! starts a new one (the client sees the gap in sequence numbers and asks for
//! one).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use rallypoint_protocol::length_prefixed;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use wtransport::{Connection, SendStream, VarInt};

use crate::metrics::Stats;
use crate::outbox::MediaFrame;

/// Streams open at once per connection, groups and single frames together.
const MAX_STREAMS: usize = 64;
/// Bytes of frames handed to stream tasks and not yet to QUIC, per
/// connection: a few keyframes.
const QUEUED_BYTES: usize = 2 * 1024 * 1024;
/// Frames waiting in one group: a quarter second of 30 fps video.
const GROUP_QUEUE: usize = 8;
/// A group with no frame for this long is finished.
const GROUP_IDLE: Duration = Duration::from_secs(1);
/// Opening a stream (QUIC may wait for the client's stream credit) and each
/// write (flow control) must be done within this; otherwise the stream is
/// reset and its queued frames dropped.
const WRITE_DEADLINE: Duration = Duration::from_secs(2);
/// Picture tracks remembered per connection (open groups and tracks waiting
/// for a keyframe); beyond it the ones without an open group are forgotten.
const MAX_TRACKS: usize = 256;
/// The code a stream given up on is reset with.
const RESET_GAVE_UP: u32 = 0;

/// A frame on its way to a stream, holding its share of [`QUEUED_BYTES`].
type Queued = (Bytes, OwnedSemaphorePermit);

/// The media streams of one connection, driven by its writer.
pub(super) struct MediaStreams {
    connection: Connection,
    /// Whether the client reads groups; set once Hello is in.
    groups_read: Arc<AtomicBool>,
    tracks: HashMap<u64, Track>,
    streams: Arc<Semaphore>,
    queued_bytes: Arc<Semaphore>,
    stats: Arc<Stats>,
}

enum Track {
    /// Its current group's queue.
    Open(mpsc::Sender<Queued>),
    /// A frame of it was dropped: the rest is dropped until a keyframe.
    AwaitingKeyframe,
}

impl MediaStreams {
    pub(super) fn new(
        connection: Connection,
        groups_read: Arc<AtomicBool>,
        stats: Arc<Stats>,
    ) -> Self {
        MediaStreams {
            connection,
            groups_read,
            tracks: HashMap::new(),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            queued_bytes: Arc::new(Semaphore::new(QUEUED_BYTES)),
            stats,
        }
    }

    /// Sends `frame` on a stream; never waits.
    pub(super) fn send(&mut self, frame: MediaFrame) {
        match frame.picture_track {
            Some(track) if self.groups_read.load(Relaxed) => {
                if !self.send_in_group(track, frame.bytes, frame.keyframe) {
                    self.dropped(track);
                }
            }
            _ => {
                if !self.send_alone(frame.bytes) {
                    self.stats.media_dropped.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Queues a picture frame in its track's group; false if it was dropped.
    fn send_in_group(&mut self, track: u64, bytes: Bytes, keyframe: bool) -> bool {
        if keyframe {
            // Dropping the queue's sender lets the old group write what it
            // holds and finish.
            self.tracks.remove(&track);
        }
        if let Some(Track::AwaitingKeyframe) = self.tracks.get(&track) {
            return false;
        }
        let Some(queued) = self.take_bytes(bytes) else {
            return false;
        };
        let queued = match self.tracks.get(&track) {
            Some(Track::Open(group)) => match group.try_send(queued) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Full(_)) => return false,
                // Finished after idling, or given up: a new group starts.
                Err(mpsc::error::TrySendError::Closed(queued)) => queued,
            },
            _ => queued,
        };
        let Ok(stream) = self.streams.clone().try_acquire_owned() else {
            return false;
        };
        if self.tracks.len() >= MAX_TRACKS {
            self.tracks
                .retain(|_, t| matches!(t, Track::Open(group) if !group.is_closed()));
        }
        let (group, frames) = mpsc::channel(GROUP_QUEUE);
        group.try_send(queued).expect("a new queue has room");
        self.tracks.insert(track, Track::Open(group));
        tokio::spawn(write_group(
            self.connection.clone(),
            frames,
            stream,
            self.stats.clone(),
        ));
        true
    }

    /// Sends one frame on a stream of its own; false if it was dropped.
    fn send_alone(&self, bytes: Bytes) -> bool {
        let Some(queued) = self.take_bytes(bytes) else {
            return false;
        };
        let Ok(stream) = self.streams.clone().try_acquire_owned() else {
            return false;
        };
        let connection = self.connection.clone();
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let _stream = stream;
            let (bytes, _queued) = queued;
            let written = tokio::time::timeout(WRITE_DEADLINE, async {
                let mut stream = open(&connection).await?;
                stream.write_all(&bytes).await.ok()?;
                stream.quic_stream_mut().finish().ok()
            })
            .await;
            if !matches!(written, Ok(Some(()))) {
                stats.media_dropped.fetch_add(1, Relaxed);
            }
        });
        true
    }

    fn take_bytes(&self, bytes: Bytes) -> Option<Queued> {
        let len = u32::try_from(bytes.len()).ok()?;
        let permit = self.queued_bytes.clone().try_acquire_many_owned(len).ok()?;
        Some((bytes, permit))
    }

    /// A picture frame was dropped: the track's group ends here.
    fn dropped(&mut self, track: u64) {
        self.stats.media_dropped.fetch_add(1, Relaxed);
        self.tracks.insert(track, Track::AwaitingKeyframe);
    }
}

async fn open(connection: &Connection) -> Option<SendStream> {
    connection.open_uni().await.ok()?.await.ok()
}

/// Writes one group: opens its stream, writes each frame as it comes
/// (length-prefixed, the frame itself not copied), and finishes the stream
/// when the group ends (its queue's sender dropped) or idles.
async fn write_group(
    connection: Connection,
    mut frames: mpsc::Receiver<Queued>,
    _stream: OwnedSemaphorePermit,
    stats: Arc<Stats>,
) {
    let Ok(Some(mut stream)) = tokio::time::timeout(WRITE_DEADLINE, open(&connection)).await else {
        give_up(frames, 0, &stats);
        return;
    };
    while let Ok(Some((bytes, _queued))) = tokio::time::timeout(GROUP_IDLE, frames.recv()).await {
        let prefix = Bytes::copy_from_slice(&length_prefixed::prefix(bytes.len()));
        let written = tokio::time::timeout(
            WRITE_DEADLINE,
            stream
                .quic_stream_mut()
                .write_all_chunks(&mut [prefix, bytes]),
        )
        .await;
        if !matches!(written, Ok(Ok(()))) {
            let _ = stream.reset(VarInt::from_u32(RESET_GAVE_UP));
            give_up(frames, 1, &stats);
            return;
        }
    }
    // Not waiting for the client's acknowledgement: QUIC retransmits on its own.
    let _ = stream.quic_stream_mut().finish();
}

/// Counts as dropped the `lost` frames already taken and those still queued.
fn give_up(mut frames: mpsc::Receiver<Queued>, lost: u64, stats: &Stats) {
    frames.close();
    let mut dropped = lost;
    while frames.try_recv().is_ok() {
        dropped += 1;
    }
    stats.media_dropped.fetch_add(dropped, Relaxed);
}
