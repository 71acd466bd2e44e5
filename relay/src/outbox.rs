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
    /// An encoded `ServerFrame{media}`.
    Media(Bytes),
}

/// The sending half, held by the session and by the room tasks.
#[derive(Debug, Clone)]
pub struct Outbox {
    control: mpsc::Sender<Control>,
    media: mpsc::Sender<Bytes>,
    /// Cancelled when the connection must go away (queue overflow, shutdown).
    kill: CancellationToken,
}

/// Result of offering a media frame.
#[derive(Debug, PartialEq, Eq)]
pub enum MediaOffer {
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
    media: mpsc::Receiver<Bytes>,
}

pub fn outbox(control_capacity: usize, media_capacity: usize) -> (Outbox, OutboxReceiver) {
    let (control_tx, control_rx) = mpsc::channel(control_capacity.max(1));
    let (media_tx, media_rx) = mpsc::channel(media_capacity.max(1));
    (
        Outbox {
            control: control_tx,
            media: media_tx,
            kill: CancellationToken::new(),
        },
        OutboxReceiver {
            control: control_rx,
            media: media_rx,
        },
    )
}

impl Outbox {
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

    /// Queues an encoded `ServerFrame`.
    pub fn frame(&self, frame: Bytes) {
        self.control(Control::Frame(frame));
    }

    /// Offers a media frame; never waits.
    pub fn media(&self, frame: Bytes) -> MediaOffer {
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

    #[tokio::test]
    async fn control_goes_first_and_media_drops_when_full() {
        let (tx, mut rx) = outbox(4, 2);
        assert_eq!(tx.media(Bytes::from_static(b"m1")), MediaOffer::Queued);
        assert_eq!(tx.media(Bytes::from_static(b"m2")), MediaOffer::Queued);
        assert_eq!(tx.media(Bytes::from_static(b"m3")), MediaOffer::Dropped);
        tx.frame(Bytes::from_static(b"c1"));
        assert!(matches!(rx.next().await, Some(Outgoing::Control(Control::Frame(b))) if b == "c1"));
        assert!(matches!(rx.next().await, Some(Outgoing::Media(b)) if b == "m1"));
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
