//! Stream framing for WebTransport streams: each frame is preceded by its length
//! as a big-endian `u32`.
//!
//! [`Decoder`] is sans-IO: feed it whatever chunks the stream produced, take out
//! whole frames. The announced length is checked against the limit as soon as
//! the four prefix bytes are in, so a peer cannot make us reserve memory it
//! never intends to fill.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::frame::FrameError;
use crate::limits::LENGTH_PREFIX;

/// Prefixes `frame` with its length.
///
/// # Panics
/// If `frame` is longer than `u32::MAX` bytes, which no frame within
/// [`crate::limits::MAX_FRAME`] can be.
pub fn encode(frame: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(LENGTH_PREFIX + frame.len());
    buf.put_slice(&prefix(frame.len()));
    buf.put_slice(frame);
    buf.freeze()
}

/// The four bytes that go in front of a frame of `len` bytes, for a writer
/// that sends the prefix and the frame as separate chunks (no copy of the
/// frame).
///
/// # Panics
/// As [`encode`].
pub fn prefix(len: usize) -> [u8; LENGTH_PREFIX] {
    u32::try_from(len)
        .expect("frames are far below 4 GiB")
        .to_be_bytes()
}

/// The most a [`Decoder`] reserves beyond the bytes it holds for a frame
/// still coming in; the rest grows as the bytes arrive. (Reserving the
/// announced length let a peer make a client hold 1 MiB per stream for the
/// four bytes of a prefix.)
pub const RESERVE_AHEAD: usize = 64 * 1024;

/// Reassembles length-prefixed frames from arbitrary chunks.
#[derive(Debug)]
pub struct Decoder {
    buffer: BytesMut,
    max_frame: usize,
}

impl Decoder {
    /// A decoder that refuses frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Decoder {
            buffer: BytesMut::new(),
            max_frame,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// Takes the next complete frame out, if one is buffered.
    ///
    /// An error is final: the stream is out of sync and must be closed.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buffer.len() < LENGTH_PREFIX {
            return Ok(None);
        }
        let announced = u32::from_be_bytes(self.buffer[..LENGTH_PREFIX].try_into().unwrap());
        let len = announced as usize;
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        if self.buffer.len() < LENGTH_PREFIX + len {
            // Room for the rest, but never more ahead of the bytes than
            // [`RESERVE_AHEAD`]: a peer announcing a frame it does not send
            // costs that, not the frame.
            let missing = LENGTH_PREFIX + len - self.buffer.len();
            self.buffer.reserve(missing.min(RESERVE_AHEAD));
            return Ok(None);
        }
        self.buffer.advance(LENGTH_PREFIX);
        Ok(Some(self.buffer.split_to(len).freeze()))
    }

    /// Bytes held that do not yet form a whole frame. Non-zero at end of stream
    /// means the peer cut a frame short.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reassembles_frames_split_anywhere() {
        let mut wire = Vec::new();
        for frame in [&b"hello"[..], b"", b"world!"] {
            wire.extend_from_slice(&encode(frame));
        }
        for split in 0..wire.len() {
            let mut decoder = Decoder::new(16);
            decoder.push(&wire[..split]);
            let mut frames = Vec::new();
            while let Some(f) = decoder.next_frame().unwrap() {
                frames.push(f);
            }
            decoder.push(&wire[split..]);
            while let Some(f) = decoder.next_frame().unwrap() {
                frames.push(f);
            }
            assert_eq!(frames, vec![&b"hello"[..], b"", b"world!"]);
            assert_eq!(decoder.buffered(), 0);
        }
    }

    #[test]
    fn refuses_an_oversize_announcement_without_waiting_for_the_body() {
        let mut decoder = Decoder::new(1024);
        decoder.push(&u32::MAX.to_be_bytes());
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::TooLarge {
                len: u32::MAX as usize,
                max: 1024
            })
        );
        assert!(decoder.buffer.capacity() < 1024);
    }

    #[test]
    fn an_announced_frame_reserves_a_bounded_amount_before_its_bytes_arrive() {
        let max = 1 << 20;
        let mut decoder = Decoder::new(max);
        decoder.push(&u32::try_from(max).unwrap().to_be_bytes());
        assert_eq!(decoder.next_frame(), Ok(None));
        assert!(
            decoder.buffer.capacity() <= LENGTH_PREFIX + RESERVE_AHEAD,
            "reserved {} bytes for a frame none of whose bytes came",
            decoder.buffer.capacity()
        );
        // The frame still arrives whole, in any chunks.
        let body = vec![7u8; max];
        for chunk in body.chunks(100_000) {
            decoder.push(chunk);
        }
        assert_eq!(decoder.next_frame().unwrap().unwrap().len(), max);
    }

    proptest! {
        #[test]
        fn never_panics_and_never_returns_more_than_the_limit(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut decoder = Decoder::new(100);
            for chunk in chunks {
                decoder.push(&chunk);
                loop {
                    match decoder.next_frame() {
                        Ok(Some(frame)) => prop_assert!(frame.len() <= 100),
                        Ok(None) => break,
                        Err(_) => return Ok(()),
                    }
                }
            }
        }
    }
}
