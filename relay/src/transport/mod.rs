//! Transport adapters: turn a WebSocket or a WebTransport session into the
//! session's [`Inbound`](crate::session::Inbound) items and write its outbox.
//! Framing lives in `rallypoint_protocol`; protocol rules live in `session`.

pub mod http_server;
pub mod ws;
pub mod wt;

use std::time::Duration;

use bytes::Bytes;
use rallypoint_protocol::{FrameError, decode_client_frame};

use crate::session::Inbound;
use rallypoint_service::clock::unix_micros;

/// How long a refused connection's writer may take to deliver the Error frame.
const ERROR_FLUSH: Duration = Duration::from_secs(2);

/// Decodes one received frame into what the session consumes, stamping the
/// receive time now, at the edge.
fn inbound(bytes: Bytes, datagram: bool) -> Inbound {
    let received_us = unix_micros();
    match decode_client_frame(bytes) {
        Ok(frame) => Inbound::Frame {
            frame,
            datagram,
            received_us,
        },
        Err(e) => Inbound::Invalid(e),
    }
}

fn is_invalid(item: &Inbound) -> bool {
    matches!(item, Inbound::Invalid(_))
}

fn malformed(what: impl Into<String>) -> Inbound {
    Inbound::Invalid(FrameError::Malformed(what.into()))
}
