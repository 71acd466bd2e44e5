//! The rallypoint wire format, shared by the relay, the native client and the
//! browser client (this crate compiles for `wasm32-unknown-unknown`).
//!
//! * [`v1`]: the protobuf messages generated from `proto/rallypoint/v1/*.proto`.
//! * [`copies`]: telling a media frame's second copy from a late frame.
//! * [`frame`]: encoding and decoding of whole frames with hard size limits,
//!   checked before anything is allocated.
//! * [`length_prefixed`]: the stream framing used on WebTransport streams.
//! * [`media_streams`]: reading a relay's unidirectional media streams (one
//!   bare frame, or a track's group of pictures).
//! * [`queue_age`]: how long media may wait in a WebTransport sender's QUIC
//!   queues, for the relay and the native client.
//! * [`subjects`]: the NATS subject scheme relays and the collector agree on.
//! * [`telemetry`]: validation of election reports (bounds and sane ranges).
//! * [`transport`]: the two transports, named once for every crate.
//!
//! Nothing here does I/O.

pub mod copies;
pub mod frame;
pub mod length_prefixed;
pub mod limits;
pub mod media_streams;
pub mod names;
pub mod queue_age;
pub mod subjects;
pub mod telemetry;
pub mod token;
pub mod transport;

/// Generated protobuf messages, version 1 of the protocol.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/rallypoint.v1.rs"));
}

/// The protocol version this build speaks; sent in `Hello` and `Welcome`.
pub const PROTOCOL_VERSION: u32 = 1;

pub use frame::{FrameError, decode_client_frame, decode_server_frame, encode};
/// Re-exported so users decode messages with the exact prost this crate generated for.
pub use prost;
pub use transport::TransportKind;

/// Lower-case hex, as ids and certificate hashes are written in JSON, logs
/// and ClickHouse filters.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of `text` written as [`hex`] (either case); `None` if it is
/// not an even number of hex digits.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
