//! Whole-frame encoding and decoding.
//!
//! A frame is one `ClientFrame` or `ServerFrame` protobuf message. Decoding
//! checks the size first, then the protobuf, then that the frame actually says
//! something (an empty `kind` is a malformed frame, not a no-op), then the
//! per-kind limit (only media may be large).

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::limits::{MAX_CONTROL_FRAME, MAX_FRAME};
use crate::v1::{ClientFrame, ServerFrame, client_frame, server_frame};

/// Why a frame was refused. Every variant names what was wrong so the relay can
/// put it in an `Error` frame for the peer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("frame is not a valid protobuf message: {0}")]
    Malformed(String),
    #[error("frame carries no message")]
    Empty,
}

/// Encodes any message into a fresh buffer.
pub fn encode(message: &impl Message) -> Bytes {
    let mut buf = BytesMut::with_capacity(message.encoded_len());
    message
        .encode(&mut buf)
        .expect("BytesMut grows as needed, so encoding cannot run out of space");
    buf.freeze()
}

/// Decodes a frame a client sent.
pub fn decode_client_frame(bytes: Bytes) -> Result<ClientFrame, FrameError> {
    check_len(bytes.len(), MAX_FRAME)?;
    let len = bytes.len();
    let frame = ClientFrame::decode(bytes).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let kind = frame.kind.as_ref().ok_or(FrameError::Empty)?;
    if !matches!(kind, client_frame::Kind::Media(_)) {
        check_len(len, MAX_CONTROL_FRAME)?;
    }
    Ok(frame)
}

/// Decodes a frame a relay sent.
pub fn decode_server_frame(bytes: Bytes) -> Result<ServerFrame, FrameError> {
    check_len(bytes.len(), MAX_FRAME)?;
    let len = bytes.len();
    let frame = ServerFrame::decode(bytes).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let kind = frame.kind.as_ref().ok_or(FrameError::Empty)?;
    if !matches!(kind, server_frame::Kind::Media(_)) {
        check_len(len, MAX_CONTROL_FRAME)?;
    }
    Ok(frame)
}

fn check_len(len: usize, max: usize) -> Result<(), FrameError> {
    if len > max {
        Err(FrameError::TooLarge { len, max })
    } else {
        Ok(())
    }
}

/// Shorthands for building frames.
impl ClientFrame {
    pub fn of(kind: client_frame::Kind) -> Self {
        ClientFrame { kind: Some(kind) }
    }
}

impl ServerFrame {
    pub fn of(kind: server_frame::Kind) -> Self {
        ServerFrame { kind: Some(kind) }
    }

    /// An `Error` frame.
    pub fn error(code: crate::v1::ErrorCode, message: impl Into<String>) -> Self {
        Self::of(server_frame::Kind::Error(crate::v1::Error {
            code: code as i32,
            message: message.into(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Media, Probe, TrackKind};

    #[test]
    fn round_trips_a_probe() {
        let frame = ClientFrame::of(client_frame::Kind::Probe(Probe {
            seq: 7,
            client_send_us: 123,
        }));
        assert_eq!(decode_client_frame(encode(&frame)).unwrap(), frame);
    }

    #[test]
    fn empty_frame_is_refused() {
        assert_eq!(
            decode_client_frame(Bytes::new()).unwrap_err(),
            FrameError::Empty
        );
    }

    #[test]
    fn oversize_frame_is_refused_before_decoding() {
        let bytes = Bytes::from(vec![0u8; MAX_FRAME + 1]);
        assert!(matches!(
            decode_client_frame(bytes),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn large_control_frames_are_refused_but_large_media_is_not() {
        let media = ClientFrame::of(client_frame::Kind::Media(Media {
            kind: TrackKind::Video as i32,
            payload: Bytes::from(vec![1u8; 200_000]),
            ..Default::default()
        }));
        assert!(decode_client_frame(encode(&media)).is_ok());

        let hello = ClientFrame::of(client_frame::Kind::Hello(crate::v1::Hello {
            token: "x".repeat(MAX_CONTROL_FRAME + 1),
            ..Default::default()
        }));
        assert!(matches!(
            decode_client_frame(encode(&hello)),
            Err(FrameError::TooLarge { .. })
        ));
    }

    proptest::proptest! {
        /// Decoding arbitrary bytes returns a frame or an error, never panics,
        /// and anything it accepts re-encodes to a frame it accepts again.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            if let Ok(frame) = decode_client_frame(Bytes::from(bytes.clone())) {
                proptest::prop_assert!(decode_client_frame(encode(&frame)).is_ok());
            }
            if let Ok(frame) = decode_server_frame(Bytes::from(bytes)) {
                proptest::prop_assert!(decode_server_frame(encode(&frame)).is_ok());
            }
        }
    }

    #[test]
    fn garbage_is_malformed() {
        let bytes = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decode_client_frame(bytes),
            Err(FrameError::Malformed(_))
        ));
    }
}
