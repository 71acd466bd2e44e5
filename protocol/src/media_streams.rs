//! What a unidirectional WebTransport stream from a relay carries, and how a
//! client reads it.
//!
//! Media too large for a datagram goes on unidirectional streams, in one of
//! two shapes:
//! * **one bare frame**, the whole stream (what every relay sends a client
//!   that did not set `Hello.media_stream_groups`, and what clients send
//!   relays);
//! * **a group**: length-prefixed frames ([`crate::length_prefixed`]), one
//!   track's frames from a keyframe up to the next, read as they arrive.
//!   With a stream per frame, every frame needs a stream the client grants,
//!   and a client grants a bounded number at a time (quinn's default is 100)
//!   and more only as earlier ones are read and closed, a round trip later:
//!   frames in flight to one receiver are bounded per round trip. A group
//!   needs one stream per track. Its frames depend on each other anyway (a
//!   delta is useless without the frames before it), so a packet lost in a
//!   group holds up only frames that could not be shown without it either.
//!
//! The first byte tells them apart: a protobuf message never starts with 0
//! (no field has number 0), and a length prefix of a frame within
//! [`MAX_FRAME`] (< 16 MiB) always does. So a client that announced groups
//! still reads a relay that sends bare frames (one from before groups).

use bytes::{Bytes, BytesMut};

use crate::frame::FrameError;
use crate::length_prefixed::Decoder;
use crate::limits::MAX_FRAME;

// The first byte of a length prefix is 0 only while frames stay below 16 MiB.
const _: () = assert!(MAX_FRAME < 1 << 24);

/// Reads one unidirectional media stream, sans-IO: push its chunks in, take
/// whole frames out, and call [`StreamFrames::finish`] at its end.
#[derive(Debug)]
pub struct StreamFrames {
    shape: Shape,
}

#[derive(Debug)]
enum Shape {
    /// Nothing read yet.
    Unknown,
    /// One bare frame: everything up to the end of the stream.
    Bare(BytesMut),
    Group(Decoder),
}

impl Default for StreamFrames {
    fn default() -> Self {
        StreamFrames {
            shape: Shape::Unknown,
        }
    }
}

impl StreamFrames {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a chunk read from the stream. An error (a bare frame over
    /// [`MAX_FRAME`]) is final: stop reading the stream.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), FrameError> {
        if chunk.is_empty() {
            return Ok(());
        }
        if let Shape::Unknown = self.shape {
            self.shape = if chunk[0] == 0 {
                Shape::Group(Decoder::new(MAX_FRAME))
            } else {
                Shape::Bare(BytesMut::new())
            };
        }
        match &mut self.shape {
            Shape::Unknown => unreachable!("decided above"),
            Shape::Bare(body) => {
                if body.len() + chunk.len() > MAX_FRAME {
                    return Err(FrameError::TooLarge {
                        len: body.len() + chunk.len(),
                        max: MAX_FRAME,
                    });
                }
                body.extend_from_slice(chunk);
            }
            Shape::Group(decoder) => decoder.push(chunk),
        }
        Ok(())
    }

    /// The next whole frame of a group, if one is in; never one of a bare
    /// stream, which is whole only at its end.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        match &mut self.shape {
            Shape::Group(decoder) => decoder.next_frame(),
            Shape::Unknown | Shape::Bare(_) => Ok(None),
        }
    }

    /// The stream ended: a bare stream's frame, or nothing for a group
    /// (whose frames came out of [`StreamFrames::next_frame`]). A group cut
    /// short in the middle of a frame is an error.
    pub fn finish(self) -> Result<Option<Bytes>, FrameError> {
        match self.shape {
            Shape::Unknown => Ok(None),
            Shape::Bare(body) => Ok(Some(body.freeze())),
            Shape::Group(decoder) if decoder.buffered() == 0 => Ok(None),
            Shape::Group(decoder) => Err(FrameError::Malformed(format!(
                "a media stream ended {} bytes into a frame",
                decoder.buffered()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::length_prefixed::encode;
    use crate::v1::{Media, ServerFrame, server_frame};

    fn media(seq: u64, len: usize) -> Bytes {
        crate::encode(&ServerFrame::of(server_frame::Kind::Media(Media {
            seq,
            payload: vec![7; len].into(),
            ..Media::default()
        })))
    }

    /// Every frame of a stream, fed in chunks of `chunk` bytes.
    fn read(wire: &[u8], chunk: usize) -> Result<Vec<Bytes>, FrameError> {
        let mut stream = StreamFrames::new();
        let mut frames = Vec::new();
        for piece in wire.chunks(chunk) {
            stream.push(piece)?;
            while let Some(frame) = stream.next_frame()? {
                frames.push(frame);
            }
        }
        frames.extend(stream.finish()?);
        Ok(frames)
    }

    #[test]
    fn a_bare_stream_is_one_frame_whole_at_its_end() {
        let frame = media(1, 3000);
        assert_ne!(frame[0], 0, "a protobuf message never starts with 0");
        for chunk in [1, 7, 1200, frame.len()] {
            assert_eq!(read(&frame, chunk).unwrap(), std::slice::from_ref(&frame));
        }
    }

    #[test]
    fn a_group_gives_each_frame_as_soon_as_it_is_in() {
        let frames = [media(1, 24_000), media(2, 2400), media(3, 2400)];
        let wire: Vec<u8> = frames.iter().flat_map(|f| encode(f)).collect();
        for chunk in [1, 5, 1200, wire.len()] {
            assert_eq!(read(&wire, chunk).unwrap(), frames);
        }
        // The first frame is out before the stream ends.
        let mut stream = StreamFrames::new();
        stream.push(&wire[..4 + frames[0].len()]).unwrap();
        assert_eq!(stream.next_frame().unwrap(), Some(frames[0].clone()));
        assert_eq!(stream.next_frame().unwrap(), None);
    }

    #[test]
    fn a_group_cut_inside_a_frame_is_an_error_and_an_empty_stream_is_nothing() {
        let wire = encode(&media(1, 100));
        assert!(matches!(
            read(&wire[..wire.len() - 1], 10),
            Err(FrameError::Malformed(_))
        ));
        assert_eq!(read(&[], 10).unwrap(), Vec::<Bytes>::new());
    }

    #[test]
    fn oversize_frames_are_refused_in_either_shape() {
        let mut bare = StreamFrames::new();
        bare.push(&[0x0a]).unwrap();
        assert!(matches!(
            bare.push(&vec![1; MAX_FRAME]),
            Err(FrameError::TooLarge { .. })
        ));
        let mut group = StreamFrames::new();
        group
            .push(&u32::try_from(MAX_FRAME + 1).unwrap().to_be_bytes())
            .unwrap();
        assert!(matches!(
            group.next_frame(),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
