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
//! * Everything else — audio, every frame to a client that does not read
//!   groups, and picture tracks beyond [`MAX_GROUPS`] — goes on a stream of
//!   its own.
//!
//! No stream waits for the client's acknowledgement: QUIC retransmits on its
//! own. (Before groups, each frame's stream held one of 32 slots until the
//! client acknowledged it, so a receiver 100 ms away was sent at most ~300
//! large frames a second and the rest dropped: 251 of 600 arrived in
//! `relay/tests/media_streams.rs`.) The relay's CPU per forwarded frame did
//! not change measurably (BENCHMARKS.md): it goes to QUIC packets and
//! `sendmsg`, not to streams.
//!
//! Bounds, per connection: at most [`MAX_STREAMS`] streams open at once (of
//! them at most [`MAX_GROUPS`] groups; further picture tracks go a frame per
//! stream), at most [`QUEUED_BYTES`] of frames waiting for QUIC, at most
//! [`GROUP_QUEUE`] frames waiting in one group, each stream opened and each
//! frame written within [`WRITE_DEADLINE`], else the stream is reset. (QUIC
//! lets a write wait once the connection's unacknowledged stream data
//! reaches its send window: what is in flight and what the connection sends
//! in 300 ms more at its current rate, at most 1 MiB; see
//! `rallypoint_protocol::queue_age`.) A group's frame that waited in its
//! queue longer than [`MAX_GROUP_WAIT`] (its receiver's path is slower than
//! its video) ends the group the same way: sending it late would only make
//! every later frame of the group later still. A frame beyond these bounds
//! is dropped and counted in `media_dropped` as any frame for a slow
//! receiver; in a group the frames after it are useless until the next
//! keyframe, so the track's frames are skipped (counted in
//! `media_skipped_awaiting_keyframe`) until a keyframe starts a new group.
//! The relay does not ask the sender for that keyframe itself (the room does
//! when its queues drop): the receiver sees the gap in sequence numbers and
//! asks.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use rallypoint_protocol::length_prefixed;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use wtransport::{Connection, SendStream, VarInt};

use crate::metrics::Stats;
use crate::outbox::MediaFrame;
use rallypoint_protocol::queue_age::QueueAge;

/// Streams open at once per connection, groups and single frames together:
/// within the 100 a quinn client grants, less HTTP/3's own three.
const MAX_STREAMS: usize = 96;
/// Groups open at once per connection: each holds a stream for as long as
/// its track sends, so more would leave no stream for anything else. Picture
/// tracks beyond it (a receiver of more than 48 other participants' cameras
/// and screens) go a frame per stream, as to a client that does not read
/// groups.
const MAX_GROUPS: usize = 48;
/// Bytes of frames handed to stream tasks and not yet to QUIC, per
/// connection: a few keyframes.
const QUEUED_BYTES: usize = 2 * 1024 * 1024;
/// Frames waiting in one group: half a second of 30 fps video.
const GROUP_QUEUE: usize = 16;
/// A group's frame that waited longer than this in its queue ends the group:
/// its receiver's path is slower than its video. Deltas wait behind their
/// group's keyframe while it leaves (12 kB at 250 kbit/s: 0.4 s), so a
/// shorter wait ends most groups just after their keyframe: with 150 ms,
/// `relay/tests/slow_downlink.rs` got 11–14 of the last 4 s's frames
/// through, with 300 ms 56–82.
const MAX_GROUP_WAIT: Duration = Duration::from_millis(300);
/// A group with no frame for this long is finished.
const GROUP_IDLE: Duration = Duration::from_secs(1);
/// Opening a stream (QUIC may wait for the client's stream credit) and each
/// write (flow control, the send window) must be done within this; a frame
/// that waited longer is too late for a call anyway.
const WRITE_DEADLINE: Duration = Duration::from_secs(1);
/// Picture tracks remembered per connection (open groups and tracks waiting
/// for a keyframe). Beyond it those without an open group are forgotten, so
/// a forgotten track's next frame may start a group without a keyframe (the
/// receiver asks for one, as after any gap).
const MAX_TRACKS: usize = 256;
/// The code a stream given up on is reset with.
const RESET_GAVE_UP: u32 = 0;

/// A frame on its way to a stream, holding its share of [`QUEUED_BYTES`],
/// and when it was handed over.
type Queued = (Bytes, OwnedSemaphorePermit, Instant);

/// The media streams of one connection, driven by its writer.
pub(super) struct MediaStreams {
    connection: Connection,
    /// Whether the client reads groups; set once Hello is in.
    groups_read: Arc<AtomicBool>,
    tracks: HashMap<u64, Track>,
    streams: Arc<Semaphore>,
    groups: Arc<Semaphore>,
    queued_bytes: Arc<Semaphore>,
    queue_age: Arc<QueueAge>,
    stats: Arc<Stats>,
}

enum Track {
    Open(Group),
    /// A frame of it was dropped: the rest is skipped until a keyframe.
    AwaitingKeyframe,
}

/// The writer's end of a group's task.
struct Group {
    frames: mpsc::Sender<Queued>,
    /// Set by the task when it gave up (a deadline passed, the connection
    /// failed): its queue is closed and its frames were lost. A group whose
    /// queue closed without it finished after idling.
    failed: Arc<AtomicBool>,
}

/// What became of a picture frame.
enum Sent {
    Queued,
    /// Dropped here: a bound was reached or its group failed.
    Dropped,
    /// Its track waits for a keyframe.
    Skipped,
}

impl MediaStreams {
    pub(super) fn new(
        connection: Connection,
        groups_read: Arc<AtomicBool>,
        queue_age: Arc<QueueAge>,
        stats: Arc<Stats>,
    ) -> Self {
        MediaStreams {
            connection,
            groups_read,
            tracks: HashMap::new(),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            groups: Arc::new(Semaphore::new(MAX_GROUPS)),
            queued_bytes: Arc::new(Semaphore::new(QUEUED_BYTES)),
            queue_age,
            stats,
        }
    }

    /// Sends `frame` on a stream; never waits.
    pub(super) fn send(&mut self, frame: MediaFrame) {
        self.queue_age.refresh_on(self.connection.quic_connection());
        match frame.picture_track {
            Some(track) if self.groups_read.load(Relaxed) => {
                match self.send_in_group(track, frame.bytes, frame.keyframe) {
                    Sent::Queued => {}
                    Sent::Dropped => {
                        self.stats.media_dropped.fetch_add(1, Relaxed);
                        self.remember(track, Track::AwaitingKeyframe);
                    }
                    Sent::Skipped => {
                        self.stats
                            .media_skipped_awaiting_keyframe
                            .fetch_add(1, Relaxed);
                    }
                }
            }
            _ => {
                let sent = self
                    .take_bytes(frame.bytes)
                    .is_some_and(|queued| self.send_alone(queued));
                if !sent {
                    self.stats.media_dropped.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Queues a picture frame in its track's group, or starts a group.
    fn send_in_group(&mut self, track: u64, bytes: Bytes, keyframe: bool) -> Sent {
        if keyframe {
            // Dropping the queue's sender lets the old group write what it
            // holds and finish.
            self.tracks.remove(&track);
        }
        if let Some(Track::AwaitingKeyframe) = self.tracks.get(&track) {
            return Sent::Skipped;
        }
        let Some(queued) = self.take_bytes(bytes) else {
            return Sent::Dropped;
        };
        let queued = match self.tracks.get(&track) {
            Some(Track::Open(group)) => match group.frames.try_send(queued) {
                Ok(()) => return Sent::Queued,
                Err(mpsc::error::TrySendError::Full(_)) => return Sent::Dropped,
                Err(mpsc::error::TrySendError::Closed(_)) if group.failed.load(Relaxed) => {
                    return Sent::Dropped;
                }
                // Finished after idling: a new group starts.
                Err(mpsc::error::TrySendError::Closed(queued)) => queued,
            },
            // None: the track's first group, or its first since a keyframe.
            _ => queued,
        };
        let Ok(group_slot) = self.groups.clone().try_acquire_owned() else {
            return if self.send_alone(queued) {
                Sent::Queued
            } else {
                Sent::Dropped
            };
        };
        let Ok(stream) = self.streams.clone().try_acquire_owned() else {
            return Sent::Dropped;
        };
        let (frames, queue) = mpsc::channel(GROUP_QUEUE);
        frames.try_send(queued).expect("a new queue has room");
        let failed = Arc::new(AtomicBool::new(false));
        tokio::spawn(write_group(
            self.connection.clone(),
            queue,
            (stream, group_slot),
            failed.clone(),
            self.stats.clone(),
        ));
        self.remember(track, Track::Open(Group { frames, failed }));
        Sent::Queued
    }

    /// Records `state` for `track`, within [`MAX_TRACKS`].
    fn remember(&mut self, track: u64, state: Track) {
        if self.tracks.len() >= MAX_TRACKS && !self.tracks.contains_key(&track) {
            self.tracks
                .retain(|_, t| matches!(t, Track::Open(group) if !group.frames.is_closed()));
            if self.tracks.len() >= MAX_TRACKS {
                return;
            }
        }
        self.tracks.insert(track, state);
    }

    /// Sends one frame on a stream of its own; false if it was dropped.
    fn send_alone(&self, queued: Queued) -> bool {
        let Ok(stream) = self.streams.clone().try_acquire_owned() else {
            return false;
        };
        let connection = self.connection.clone();
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let _stream = stream;
            let (bytes, _queued, _at) = queued;
            if !write_alone(&connection, &bytes).await {
                stats.media_dropped.fetch_add(1, Relaxed);
            }
        });
        true
    }

    fn take_bytes(&self, bytes: Bytes) -> Option<Queued> {
        let len = u32::try_from(bytes.len()).ok()?;
        let permit = self.queued_bytes.clone().try_acquire_many_owned(len).ok()?;
        Some((bytes, permit, Instant::now()))
    }
}

/// Opens a stream within [`WRITE_DEADLINE`].
async fn open(connection: &Connection) -> Option<SendStream> {
    let opening = async { connection.open_uni().await.ok()?.await.ok() };
    tokio::time::timeout(WRITE_DEADLINE, opening)
        .await
        .ok()
        .flatten()
}

/// Writes `chunks` within [`WRITE_DEADLINE`]; resets the stream otherwise, so
/// the client never reads part of a frame as if it were all of it.
async fn write(stream: &mut SendStream, chunks: &mut [Bytes]) -> bool {
    let written = tokio::time::timeout(
        WRITE_DEADLINE,
        stream.quic_stream_mut().write_all_chunks(chunks),
    )
    .await;
    if matches!(written, Ok(Ok(()))) {
        return true;
    }
    let _ = stream.reset(VarInt::from_u32(RESET_GAVE_UP));
    false
}

/// One bare frame on a stream of its own; false if it did not go out.
async fn write_alone(connection: &Connection, bytes: &Bytes) -> bool {
    let Some(mut stream) = open(connection).await else {
        return false;
    };
    if !write(&mut stream, &mut [bytes.clone()]).await {
        return false;
    }
    // Not waiting for the client's acknowledgement: QUIC retransmits on its own.
    let _ = stream.quic_stream_mut().finish();
    true
}

/// Writes one group: opens its stream, writes each frame as it comes
/// (length-prefixed, the frame itself not copied), and finishes the stream
/// when the group ends (its queue's sender dropped) or idles. Gives up (and
/// says so in `failed`) when the stream cannot be opened or written in time.
async fn write_group(
    connection: Connection,
    mut frames: mpsc::Receiver<Queued>,
    _slots: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    failed: Arc<AtomicBool>,
    stats: Arc<Stats>,
) {
    let Some(mut stream) = open(&connection).await else {
        give_up(frames, &failed, 0, &stats);
        return;
    };
    loop {
        let next = match tokio::time::timeout(GROUP_IDLE, frames.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_idle) => {
                // No more frames in: write what slipped in meanwhile.
                frames.close();
                match frames.try_recv() {
                    Ok(frame) => frame,
                    Err(_) => break,
                }
            }
        };
        let (bytes, _queued, handed_over) = next;
        if handed_over.elapsed() > MAX_GROUP_WAIT {
            let _ = stream.reset(VarInt::from_u32(RESET_GAVE_UP));
            give_up(frames, &failed, 1, &stats);
            return;
        }
        let prefix = Bytes::copy_from_slice(&length_prefixed::prefix(bytes.len()));
        if !write(&mut stream, &mut [prefix, bytes]).await {
            give_up(frames, &failed, 1, &stats);
            return;
        }
    }
    // Not waiting for the client's acknowledgement: QUIC retransmits on its own.
    let _ = stream.quic_stream_mut().finish();
}

/// Marks the group failed and counts as dropped the `lost` frames already
/// taken and those still queued.
fn give_up(mut frames: mpsc::Receiver<Queued>, failed: &AtomicBool, lost: u64, stats: &Stats) {
    failed.store(true, Relaxed);
    frames.close();
    let mut dropped = lost;
    while frames.try_recv().is_ok() {
        dropped += 1;
    }
    stats.media_dropped.fetch_add(dropped, Relaxed);
}
