//! One connection from the browser to one relay, over WebSocket or
//! WebTransport: the browser twin of the native client's `connection` and
//! `peer` modules.
//!
//! [`connect`] opens the transport, sends `Hello` and waits for `Welcome`
//! within a deadline. Afterwards every frame the relay sends arrives on the
//! connection's [`Incoming`] channel, stamped with the time it was read off
//! the socket (before it waits behind anything else), so RTT samples are not
//! inflated by a busy page. The channel ends when the connection closes.
//! Dropping a [`Connection`] closes it.

pub mod ws;
pub mod wt;

use std::fmt;
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use futures::channel::mpsc;
use rallypoint_client::{Candidate, Micros, TransportKind};
use rallypoint_protocol::encode;
use rallypoint_protocol::v1::{
    ClientFrame, ErrorCode, Hello, ServerFrame, Welcome, client_frame, server_frame,
};

use crate::clock;
use crate::route::route;

/// A frame from the relay and when it was read.
#[derive(Debug, Clone)]
pub struct Received {
    pub frame: ServerFrame,
    pub at: Micros,
}

/// Frames from one connection, in arrival order; ends when it closes.
pub type Incoming = mpsc::UnboundedReceiver<Received>;

#[derive(Debug, Clone, PartialEq)]
pub enum ConnectError {
    Failed(String),
    Timeout(Duration),
    /// The relay answered Hello with an `Error` frame.
    Refused {
        code: ErrorCode,
        message: String,
    },
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Failed(reason) => f.write_str(reason),
            ConnectError::Timeout(after) => {
                write!(f, "no Welcome within {:.1} s", after.as_secs_f64())
            }
            ConnectError::Refused { message, .. } => write!(f, "relay refused: {message}"),
        }
    }
}

/// An open, authenticated connection.
pub enum Connection {
    WebSocket(ws::WsConnection),
    WebTransport(wt::WtConnection),
}

impl Connection {
    /// Sends a frame on the route the protocol prescribes for its kind.
    /// `false` if the connection can no longer send.
    pub fn send(&self, frame: &ClientFrame) -> bool {
        let bytes = encode(frame);
        match self {
            Connection::WebSocket(ws) => ws.send(&bytes),
            Connection::WebTransport(wt) => {
                let route = route(
                    frame.kind.as_ref(),
                    TransportKind::WebTransport,
                    bytes.len(),
                    wt.max_datagram(),
                );
                wt.send(bytes, route)
            }
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

/// A connection that said Welcome.
pub struct Connected {
    pub conn: Connection,
    pub incoming: Incoming,
    /// What the relay said: among others, when the token expires.
    pub welcome: Welcome,
}

/// Connects to `candidate` and authenticates with `hello`, giving up after
/// `timeout`. Dropping the future mid-way closes whatever was opened.
pub async fn connect(
    candidate: &Candidate,
    hello: Hello,
    timeout: Duration,
) -> Result<Connected, ConnectError> {
    let handshake = async {
        let (conn, mut incoming) = match candidate.transport {
            TransportKind::WebSocket => {
                let (ws, incoming) = ws::open(&candidate.url).await?;
                (Connection::WebSocket(ws), incoming)
            }
            TransportKind::WebTransport => {
                let (wt, incoming) = wt::open(&candidate.url, candidate.cert_hash_bytes()).await?;
                (Connection::WebTransport(wt), incoming)
            }
        };
        conn.send(&ClientFrame::of(client_frame::Kind::Hello(hello)));
        while let Some(received) = incoming.next().await {
            match received.frame.kind {
                Some(server_frame::Kind::Welcome(welcome)) => {
                    return Ok(Connected {
                        conn,
                        incoming,
                        welcome,
                    });
                }
                Some(server_frame::Kind::Error(error)) => {
                    return Err(ConnectError::Refused {
                        code: ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified),
                        message: error.message,
                    });
                }
                _ => {}
            }
        }
        Err(ConnectError::Failed("closed before Welcome".into()))
    };
    let deadline = clock::sleep_ms(timeout.as_millis() as u32);
    futures::select! {
        result = handshake.fuse() => result,
        _ = deadline.fuse() => Err(ConnectError::Timeout(timeout)),
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
