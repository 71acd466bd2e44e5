//! One connection from the browser to one relay, over WebSocket or
//! WebTransport: a byte pipe, the browser twin of the native client's
//! `connection` module. The handshake on it and the route of each frame are
//! the session's ([`rallypoint_client::session`]).
//!
//! [`open`] opens the transport within a deadline. Afterwards every frame the
//! relay sends arrives on the connection's [`Incoming`] channel, stamped with
//! the time it was read off the socket (before it waits behind anything
//! else), so RTT samples are not inflated by a busy page. The channel ends
//! when the connection closes. Dropping a [`Connection`] closes it.

pub mod ws;
pub mod wt;

use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::channel::mpsc;
use rallypoint_client::session::Route;
use rallypoint_client::{Candidate, Micros, TransportKind};
use rallypoint_protocol::encode;
use rallypoint_protocol::v1::{ClientFrame, ServerFrame};

use crate::clock;

/// A frame from the relay and when it was read.
#[derive(Debug, Clone)]
pub struct Received {
    pub frame: ServerFrame,
    pub at: Micros,
}

/// Frames from one connection, in arrival order; ends when it closes.
pub type Incoming = mpsc::UnboundedReceiver<Received>;

/// An open connection.
pub enum Connection {
    WebSocket(ws::WsConnection),
    WebTransport(wt::WtConnection),
}

impl Connection {
    /// Largest frame sent as one datagram (0 on WebSocket).
    pub fn max_datagram(&self) -> usize {
        match self {
            Connection::WebSocket(_) => 0,
            Connection::WebTransport(wt) => wt.max_datagram(),
        }
    }

    /// Sends an encoded frame on `route`; `false` if the connection can no
    /// longer send.
    pub fn send(&self, bytes: Bytes, route: Route) -> bool {
        match self {
            Connection::WebSocket(ws) => ws.send(&bytes),
            Connection::WebTransport(wt) => wt.send(bytes, route),
        }
    }

    /// Sends a last control frame (the hang-up's `Leave`) and closes once it
    /// is on its way, so the room hears of the hang-up at once.
    pub async fn finish(self, frame: ClientFrame) {
        let bytes = encode(&frame);
        match self {
            // close() sends what send() queued before the closing handshake.
            Connection::WebSocket(ws) => {
                ws.send(&bytes);
            }
            Connection::WebTransport(wt) => {
                let flushed = wt.finish(&bytes).fuse();
                let give_up = clock::sleep_ms(1000).fuse();
                futures::pin_mut!(flushed, give_up);
                futures::select! {
                    _ = flushed => {},
                    _ = give_up => {},
                }
            }
        }
    }
}

/// Opens a transport to `candidate`, giving up after `timeout`. Dropping
/// the future mid-way closes whatever was opened.
pub async fn open(
    candidate: &Candidate,
    timeout: Duration,
) -> Result<(Connection, Incoming), String> {
    let opening = async {
        Ok(match candidate.transport {
            TransportKind::WebSocket => {
                let (ws, incoming) = ws::open(&candidate.url).await?;
                (Connection::WebSocket(ws), incoming)
            }
            TransportKind::WebTransport => {
                let (wt, incoming) = wt::open(&candidate.url, candidate.cert_hash_bytes()).await?;
                (Connection::WebTransport(wt), incoming)
            }
        })
    };
    let deadline = clock::sleep_ms(timeout.as_millis() as u32);
    futures::select! {
        result = opening.fuse() => result,
        _ = deadline.fuse() => Err(format!("not open within {:.1} s", timeout.as_secs_f64())),
    }
}

/// What a JavaScript exception says, for error messages.
pub(crate) fn describe(error: &wasm_bindgen::JsValue) -> String {
    use wasm_bindgen::JsCast;
    if let Some(e) = error.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    error.as_string().unwrap_or_else(|| format!("{error:?}"))
}
