//! Reading frames from a stream in a way that survives cancellation.
//!
//! Patched into rallypoint's vendored copy (see `PATCHED.md`). The driver
//! polls the peer's control stream and the CONNECT stream inside a
//! `tokio::select!` that is entered again after every other event (a new
//! stream, a datagram), dropping the futures of the branches that did not
//! fire. A frame read is several reads (type, length, payload) and is not
//! cancel-safe: dropped halfway, the bytes it consumed were lost and the
//! rest of the stream was parsed out of step, which closed the connection
//! with `H3_FRAME_UNEXPECTED`, `H3_EXCESSIVE_LOAD` or `H3_MISSING_SETTINGS`
//! whenever a frame arrived in more than one piece (reordering, loss).
//!
//! [`ResumableRead`] owns the stream while a read is in progress and keeps
//! that read across cancellations: the next call resumes it.

use super::ProtoReadError;
use std::future::pending;
use std::future::Future;
use std::pin::Pin;
use wtransport_proto::frame::Frame;

type Reading<S> =
    Pin<Box<dyn Future<Output = (S, Result<Frame<'static>, ProtoReadError>)> + Send>>;

/// A stream, and the frame read in progress on it, if any.
pub struct ResumableRead<S> {
    idle: Option<S>,
    reading: Option<Reading<S>>,
}

impl<S: Send + 'static> ResumableRead<S> {
    pub fn empty() -> Self {
        Self {
            idle: None,
            reading: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.idle.is_none() && self.reading.is_none()
    }

    pub fn set_stream(&mut self, stream: S) {
        self.idle = Some(stream);
        self.reading = None;
    }

    /// The stream, if no read is in progress on it.
    pub fn take_idle(&mut self) -> Option<S> {
        self.idle.take()
    }

    /// The next frame, read with `read` (which hands the stream back); a
    /// read cancelled before it finished is resumed, not started again.
    /// Pending for ever without a stream.
    pub async fn next_frame<F, Fut>(&mut self, read: F) -> Result<Frame<'static>, ProtoReadError>
    where
        F: FnOnce(S) -> Fut,
        Fut: Future<Output = (S, Result<Frame<'static>, ProtoReadError>)> + Send + 'static,
    {
        if self.reading.is_none() {
            let Some(stream) = self.idle.take() else {
                return pending().await;
            };
            self.reading = Some(Box::pin(read(stream)));
        }
        let (stream, result) = self.reading.as_mut().expect("set above").await;
        self.reading = None;
        self.idle = Some(stream);
        result
    }
}
