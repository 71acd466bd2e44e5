//! What a relay sends to one client, queued so that no receiver can slow anyone else.
//!
//! Two queues per connection:
//! * **control** (bounded, never dropped): Welcome, Joined, room events, probe
//!   answers, Drain, errors. A client so far behind that this queue fills is
//!   disconnected — it cannot follow the room anyway.
//! * **media** (bounded, dropped when full): the room's media. A full queue
//!   means this receiver is slow; its frames are dropped, the drop is counted
//!   and the room task asks the sender for a keyframe. Senders never wait.
//!
//! The transport's writer takes control frames first.
//!
//! A transport with unreliable datagrams (WebTransport) may give its outbox a
//! [`DatagramSink`]: a media frame that fits a datagram is then handed to the
//! connection by the room task itself, without the queue and the writer task
//! in between, and "full" is the connection's own datagram buffer. A datagram
//! is never waited for, so the queue cost a channel and a task wake-up per
//! frame and receiver and bought little. What goes with it:
//! * media datagrams no longer wait behind control frames queued before them
//!   (a client takes them as they come; nothing orders them against control);
//! * a picture keyframe always takes the queue and a stream, even one small
//!   enough for a datagram: it starts a group of pictures, which the
//!   transport's writer must see (a track whose group lost a frame waits for
//!   it), and a keyframe is worth delivering reliably. So the small frames
//!   after it may arrive first (they could before, over separate streams
//!   and datagrams; the receiver's jitter buffer orders them);
//! * the copy into each receiver's datagram and the connection's lock are
//!   taken by the room task, once per receiver: one room's fan-out is one
//!   task, which is what limits a single sender blasting to a large room
//!   (BENCHMARKS.md), not a call.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A control-path item for the transport's writer.
#[derive(Debug)]
pub enum Control {
    /// An encoded `ServerFrame`.
    Frame(Bytes),
    /// A probe answer; over a datagram when the probe came as one, so it
    /// measures the same path back.
    ProbeAck { frame: Bytes, datagram: bool },
    /// Send this (encoded `Error`) frame, then close the connection.
    CloseWith(Bytes),
}

/// What the writer takes next.
#[derive(Debug)]
pub enum Outgoing {
    Control(Control),
    Media(MediaFrame),
}

/// A media frame for one receiver: the encoded `ServerFrame{media}`, and
/// what a transport needs to send it well without decoding it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFrame {
    pub bytes: Bytes,
    /// For a picture track (camera, screen), whose frames each depend on
    /// those before it back to a keyframe: the track (its sender and kind,
    /// hashed), so a transport may send a group of pictures on one stream.
    /// `None` for audio, whose frames stand alone.
    pub picture_track: Option<u64>,
    /// A keyframe: a new group of pictures starts here.
    pub keyframe: bool,
    /// When the room handed it over: a transport that queues it may drop
    /// it once it is too old to be played (see `transport::ws::stale_media`).
    pub handed_over: Instant,
}

impl MediaFrame {
    /// Audio, or any frame that stands alone.
    pub fn single(bytes: Bytes) -> Self {
        MediaFrame {
            bytes,
            picture_track: None,
            keyframe: false,
            handed_over: Instant::now(),
        }
    }

    /// A frame of `sender`'s picture track `kind`.
    pub fn picture(bytes: Bytes, sender: &str, kind: i32, keyframe: bool) -> Self {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let track = BuildHasherDefault::<DefaultHasher>::default().hash_one((sender, kind));
        MediaFrame {
            bytes,
            picture_track: Some(track),
            keyframe,
            handed_over: Instant::now(),
        }
    }
}

/// What a [`DatagramSink`] did with a media frame.
#[derive(Debug, PartialEq, Eq)]
pub enum DatagramSend {
    /// Handed to the connection.
    Sent,
    /// The connection's datagram buffer has no room for it: dropped, as a
    /// full media queue drops.
    NoRoom,
    /// Larger than a datagram on this connection: it goes through the queue
    /// (the writer sends it another way).
    TooLarge,
    /// The connection is gone.
    Closed,
}

/// Sends media frames as datagrams at once, from whichever task offers them.
pub trait DatagramSink: Send + Sync + std::fmt::Debug {
    fn send(&self, frame: &Bytes) -> DatagramSend;
}

/// The sending half, held by the session and by the room tasks.
#[derive(Debug, Clone)]
pub struct Outbox {
    control: mpsc::Sender<Control>,
    media: mpsc::Sender<MediaFrame>,
    /// Where media frames that fit a datagram go instead of `media`.
    datagrams: Option<Arc<dyn DatagramSink>>,
    /// Cancelled when the connection must go away (queue overflow, shutdown).
    kill: CancellationToken,
    /// Cancelled when the client was refused ([`Outbox::refuse`]).
    refused: CancellationToken,
}

/// Result of offering a media frame.
#[derive(Debug, PartialEq, Eq)]
pub enum MediaOffer {
    /// Queued for the writer, or handed to the connection as a datagram.
    Queued,
    /// The receiver's queue is full: dropped.
    Dropped,
    /// The connection is gone.
    Closed,
}

/// The receiving half, owned by the transport's writer.
#[derive(Debug)]
pub struct OutboxReceiver {
    control: mpsc::Receiver<Control>,
    media: mpsc::Receiver<MediaFrame>,
}

pub fn outbox(control_capacity: usize, media_capacity: usize) -> (Outbox, OutboxReceiver) {
    let (control_tx, control_rx) = mpsc::channel(control_capacity.max(1));
    let (media_tx, media_rx) = mpsc::channel(media_capacity.max(1));
    (
        Outbox {
            control: control_tx,
            media: media_tx,
            datagrams: None,
            kill: CancellationToken::new(),
            refused: CancellationToken::new(),
        },
        OutboxReceiver {
            control: control_rx,
            media: media_rx,
        },
    )
}

impl Outbox {
    /// Media frames that fit a datagram go to `sink` from now on, not
    /// through the queue.
    pub fn with_datagrams(mut self, sink: Arc<dyn DatagramSink>) -> Self {
        self.datagrams = Some(sink);
        self
    }

    /// Queues a control item. A full control queue disconnects the client.
    pub fn control(&self, item: Control) {
        match self.control.try_send(item) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("control queue full: disconnecting a client that stopped reading");
                self.kill.cancel();
            }
            // The writer is gone: so is the connection.
            Err(mpsc::error::TrySendError::Closed(_)) => self.kill.cancel(),
        }
    }

    /// Refuses the client: queues `error` (an encoded `Error` frame) for the
    /// writer to send before it closes the connection, and ends the session
    /// at once ([`Outbox::refused`]). Whoever refuses — the session, or a
    /// room task that will not have the client — the refused client sends
    /// nothing more into the relay, even while its connection cannot take
    /// the error yet (a client that stopped reading leaves the writer stuck
    /// behind what it already owes it; the transport gives it a deadline).
    pub fn refuse(&self, error: Bytes) {
        self.control(Control::CloseWith(error));
        self.refused.cancel();
    }

    /// Resolves once the client was refused: its session must end.
    pub fn refused(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.refused.cancelled()
    }

    /// Queues an encoded `ServerFrame`.
    pub fn frame(&self, frame: Bytes) {
        self.control(Control::Frame(frame));
    }

    /// Offers a media frame; never waits.
    pub fn media(&self, frame: MediaFrame) -> MediaOffer {
        let starts_a_group = frame.keyframe && frame.picture_track.is_some();
        if let Some(sink) = self.datagrams.as_ref().filter(|_| !starts_a_group) {
            if self.kill.is_cancelled() {
                return MediaOffer::Closed;
            }
            match sink.send(&frame.bytes) {
                DatagramSend::Sent => return MediaOffer::Queued,
                DatagramSend::NoRoom => return MediaOffer::Dropped,
                DatagramSend::Closed => return MediaOffer::Closed,
                DatagramSend::TooLarge => {}
            }
        }
        match self.media.try_send(frame) {
            Ok(()) => MediaOffer::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => MediaOffer::Dropped,
            Err(mpsc::error::TrySendError::Closed(_)) => MediaOffer::Closed,
        }
    }

    /// Resolves when the connection must be torn down.
    pub fn killed(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.kill.cancelled()
    }

    /// A handle the transport's writer watches to stop writing.
    pub fn kill_switch(&self) -> CancellationToken {
        self.kill.clone()
    }

    pub fn kill(&self) {
        self.kill.cancel();
    }

    pub fn is_killed(&self) -> bool {
        self.kill.is_cancelled()
    }
}

impl OutboxReceiver {
    /// The next item, control first. `None` once every sender is gone.
    pub async fn next(&mut self) -> Option<Outgoing> {
        tokio::select! {
            biased;
            Some(control) = self.control.recv() => Some(Outgoing::Control(control)),
            Some(media) = self.media.recv() => Some(Outgoing::Media(media)),
            else => None,
        }
    }

    /// The next item if one is already queued (control first); never waits.
    /// Writers use it to batch: write everything queued, then flush once.
    pub fn try_next(&mut self) -> Option<Outgoing> {
        if let Ok(control) = self.control.try_recv() {
            return Some(Outgoing::Control(control));
        }
        self.media.try_recv().ok().map(Outgoing::Media)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(tx: &Outbox, bytes: &'static [u8]) -> MediaOffer {
        tx.media(MediaFrame::single(Bytes::from_static(bytes)))
    }

    #[tokio::test]
    async fn control_goes_first_and_media_drops_when_full() {
        let (tx, mut rx) = outbox(4, 2);
        assert_eq!(offer(&tx, b"m1"), MediaOffer::Queued);
        assert_eq!(offer(&tx, b"m2"), MediaOffer::Queued);
        assert_eq!(offer(&tx, b"m3"), MediaOffer::Dropped);
        tx.frame(Bytes::from_static(b"c1"));
        assert!(matches!(rx.next().await, Some(Outgoing::Control(Control::Frame(b))) if b == "c1"));
        assert!(matches!(rx.next().await, Some(Outgoing::Media(m)) if m.bytes == "m1"));
    }

    /// Stands in for a transport's datagram buffer (the real one is
    /// WebTransport's, exercised through real relays by the relay's tests).
    #[derive(Debug, Default)]
    struct Buffer {
        room: std::sync::atomic::AtomicUsize,
        sent: std::sync::Mutex<Vec<Bytes>>,
    }

    impl DatagramSink for Buffer {
        fn send(&self, frame: &Bytes) -> DatagramSend {
            use std::sync::atomic::Ordering::SeqCst;
            if frame.len() > 4 {
                return DatagramSend::TooLarge;
            }
            if self.room.load(SeqCst) < frame.len() {
                return DatagramSend::NoRoom;
            }
            self.room.fetch_sub(frame.len(), SeqCst);
            self.sent.lock().unwrap().push(frame.clone());
            DatagramSend::Sent
        }
    }

    #[tokio::test]
    async fn media_that_fits_a_datagram_skips_the_queue_and_the_rest_queues() {
        let buffer = Arc::new(Buffer::default());
        buffer.room.store(6, std::sync::atomic::Ordering::SeqCst);
        let (tx, mut rx) = outbox(4, 2);
        let tx = tx.with_datagrams(buffer.clone());
        assert_eq!(offer(&tx, b"m1"), MediaOffer::Queued);
        assert_eq!(offer(&tx, b"m2"), MediaOffer::Queued);
        // Too large for a datagram: the writer sends it another way.
        assert_eq!(offer(&tx, b"keyframe"), MediaOffer::Queued);
        // The connection's buffer is full: dropped and said so.
        assert_eq!(offer(&tx, b"m3m3"), MediaOffer::Dropped);
        assert_eq!(*buffer.sent.lock().unwrap(), ["m1", "m2"]);
        assert!(matches!(rx.try_next(), Some(Outgoing::Media(m)) if m.bytes == "keyframe"));
        assert!(rx.try_next().is_none());

        // A picture keyframe starts a group: the writer sees it, however small.
        let keyframe = MediaFrame::picture(Bytes::from_static(b"k"), "alice", 2, true);
        assert_eq!(tx.media(keyframe), MediaOffer::Queued);
        assert!(matches!(rx.try_next(), Some(Outgoing::Media(m)) if m.bytes == "k"));

        tx.kill();
        assert_eq!(offer(&tx, b"m4"), MediaOffer::Closed);
        assert_eq!(buffer.sent.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_full_control_queue_kills_the_connection() {
        let (tx, _rx) = outbox(1, 1);
        tx.frame(Bytes::from_static(b"c1"));
        assert!(!tx.is_killed());
        tx.frame(Bytes::from_static(b"c2"));
        assert!(tx.is_killed());
    }
}
