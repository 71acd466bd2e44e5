//! One client connection to one relay, over WebSocket or WebTransport.
//!
//! Frames go where the protocol's rule ([`rallypoint_client::session::route`])
//! sends them: on WebTransport, control frames on the control stream
//! (length-prefixed), probes and small media as datagrams, large media on its
//! own unidirectional stream (from the relay, a group of pictures may share
//! one: `rallypoint_protocol::media_streams`). On WebSocket, every frame is
//! one binary message.
//!
//! Every received frame is stamped with the time it was read off the socket,
//! before it waits in any queue, so RTT samples are not inflated by a busy
//! consumer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rallypoint_client::session::route::route;
use rallypoint_client::{Candidate, TransportKind};
use rallypoint_protocol::media_streams::StreamFrames;
use rallypoint_protocol::queue_age::{self, QueueAge};
use rallypoint_protocol::v1::{ClientFrame, ServerFrame};
use rallypoint_protocol::{decode_server_frame, encode, length_prefixed, limits};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use wtransport::error::StreamWriteError;

/// A frame from the relay, with when it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub frame: ServerFrame,
    pub at: Instant,
    pub datagram: bool,
}

pub use rallypoint_client::session::Route;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{label} ({url}): connection timed out after {timeout:?}")]
    Timeout {
        label: String,
        url: String,
        timeout: Duration,
    },
    #[error("{label} ({url}): {reason}")]
    Failed {
        label: String,
        url: String,
        reason: String,
    },
}

enum Command {
    Send(Bytes, Route),
    Close,
}

/// A live connection. Dropping it closes the connection.
pub struct Connection {
    sender: Sender,
    incoming: mpsc::Receiver<Received>,
}

/// The sending half of a connection; dropping it closes the connection.
pub struct Sender {
    transport: TransportKind,
    commands: mpsc::UnboundedSender<Command>,
    closed: CancellationToken,
    max_datagram: usize,
    wt: Option<wtransport::Connection>,
    /// How much media the WebTransport connection may queue
    /// ([`rallypoint_protocol::queue_age`]); unused on WebSocket.
    queue_age: QueueAge,
    given_up: Arc<AtomicU64>,
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

impl std::ops::Deref for Connection {
    type Target = Sender;
    fn deref(&self) -> &Sender {
        &self.sender
    }
}

/// Most bytes WebTransport puts before a datagram's payload (the session's
/// quarter stream id, a QUIC variable-length integer).
const WT_DATAGRAM_HEADER_MAX: usize = 8;

/// Frames buffered from the relay before the consumer reads them.
const INCOMING_QUEUE: usize = 4096;

/// Uni streams a WebTransport connection opens and writes at once. A frame
/// that needs a stream (a keyframe, a frame too large for a datagram) while
/// this many are still waiting for the relay's stream credit or being written
/// is given up on, not queued: by the time a slot frees it would be late, and
/// a queue behind a stalled path only grows. A written stream is finished
/// and its slot freed at once; QUIC retransmits what the relay has not
/// acknowledged. (Holding the slot until the relay acknowledged the stream
/// allowed 32 frames per round trip: 107 a second at 300 ms.)
pub const MAX_STREAMS_IN_FLIGHT: usize = 32;

impl Connection {
    /// Opens a connection to `candidate`, giving up after `timeout`.
    pub async fn connect(candidate: &Candidate, timeout: Duration) -> Result<Self, ConnectError> {
        let fail = |reason: String| ConnectError::Failed {
            label: candidate.label(),
            url: candidate.url.clone(),
            reason,
        };
        let attempt = async {
            match candidate.transport {
                TransportKind::WebSocket => connect_ws(&candidate.url, candidate.cert_hash_bytes())
                    .await
                    .map_err(fail),
                TransportKind::WebTransport => {
                    connect_wt(&candidate.url, candidate.cert_hash_bytes())
                        .await
                        .map_err(fail)
                }
            }
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| ConnectError::Timeout {
                label: candidate.label(),
                url: candidate.url.clone(),
                timeout,
            })?
    }

    /// The next frame from the relay; `None` once the connection is closed.
    pub async fn recv(&mut self) -> Option<Received> {
        self.incoming.recv().await
    }

    /// A frame if one is already buffered.
    pub fn try_recv(&mut self) -> Option<Received> {
        self.incoming.try_recv().ok()
    }

    /// Separates sending from receiving, so one task can read while another writes.
    pub fn into_split(self) -> (Sender, mpsc::Receiver<Received>) {
        (self.sender, self.incoming)
    }
}

impl Sender {
    pub fn transport(&self) -> TransportKind {
        self.transport
    }

    /// Largest frame sent as one datagram (0 on WebSocket).
    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }

    /// Frames this connection gave up on before they left: on WebTransport,
    /// a frame that needs a stream while [`MAX_STREAMS_IN_FLIGHT`] are still
    /// being written, or one the connection refused. Whoever counts what
    /// arrived elsewhere (the load generator) subtracts these, so the
    /// relay is not blamed for them.
    pub fn frames_given_up(&self) -> u64 {
        self.given_up.load(Ordering::Relaxed)
    }

    /// Sends a frame on the route its kind calls for.
    pub fn send(&self, frame: &ClientFrame) -> bool {
        let bytes = encode(frame);
        let route = route(
            frame.kind.as_ref(),
            self.transport,
            bytes.len(),
            self.max_datagram,
        );
        self.send_raw(bytes, route)
    }

    /// Datagrams this connection's QUIC stack has put on the wire
    /// (WebTransport; `None` on WebSocket): against the frames a sender
    /// handed over, what its own connection dropped before they left.
    pub fn datagrams_sent(&self) -> Option<u64> {
        self.wt
            .as_ref()
            .map(|wt| wt.quic_connection().stats().frame_tx.datagram)
    }

    /// Sends `frame` as one WebTransport datagram once the connection's
    /// datagram buffer has room for it. [`Sender::send`] gives media up
    /// when the connection's queue is longer than a call can wait
    /// ([`queue_age`]: stale media is worthless); a sender that must not
    /// outrun its own connection — a benchmark's blast, which measures what
    /// lies beyond the connection — waits here instead, as a WebSocket
    /// sender waits for TCP. Room is checked, then taken: only while nothing else sends
    /// datagrams on this connection (media through [`Sender::send`],
    /// probes) is none of the buffer's datagrams dropped. False on
    /// WebSocket, for a frame larger than a datagram, or once the
    /// connection is closed.
    pub async fn send_datagram_when_room(&self, frame: &ClientFrame) -> bool {
        let Some(wt) = &self.wt else { return false };
        let bytes = encode(frame);
        if bytes.len() > self.max_datagram {
            return false;
        }
        let needed = bytes.len() + WT_DATAGRAM_HEADER_MAX;
        while wt.quic_connection().datagram_send_buffer_space() < needed {
            if self.closed.is_cancelled() {
                return false;
            }
            // The buffer drains by a congestion window at a time: a
            // millisecond is a small part of emptying it.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        wt.send_datagram(&bytes).is_ok()
    }

    /// Sends bytes on `route` as they are: what the session encoded and
    /// routed, or (in tests) malformed frames. A WebTransport datagram
    /// leaves at once, never behind a control frame that waits for flow
    /// control: probes and audio are how the client tells a live path from
    /// a dead one. A media datagram is given up when the connection's queue
    /// already holds more than it drains in
    /// [`queue_age::MAX_DATAGRAM_WAIT`] (an uplink slower than what is sent
    /// over it); a probe never is.
    pub fn send_raw(&self, bytes: Bytes, route: Route) -> bool {
        match (&self.wt, route) {
            (Some(wt), Route::Probe | Route::Datagram) => {
                if self.closed.is_cancelled() {
                    return false;
                }
                let refused = route == Route::Datagram
                    && !self.queue_age.media_datagram_fits(
                        wt.quic_connection(),
                        bytes.len() + WT_DATAGRAM_HEADER_MAX,
                    );
                if refused || wt.send_datagram(bytes).is_err() {
                    self.given_up.fetch_add(1, Ordering::Relaxed);
                }
                true
            }
            (Some(wt), Route::Stream) => {
                self.queue_age.refresh_on(wt.quic_connection());
                self.commands.send(Command::Send(bytes, route)).is_ok()
            }
            _ => self.commands.send(Command::Send(bytes, route)).is_ok(),
        }
    }

    /// Closes the connection (gracefully where the transport allows).
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }

    /// Closes abruptly, as a crashing client would.
    pub fn abort(&self) {
        if let Some(wt) = &self.wt {
            wt.close(wtransport::VarInt::from_u32(0), b"aborted");
        }
        self.closed.cancel();
    }

    /// Resolves once the connection is closed for any reason.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }
}

/// Connects over `ws://`, or `wss://` (checked against the system's roots,
/// or pinned to `cert_hash` when the candidate has one; see [`crate::tls`]).
async fn connect_ws(url: &str, cert_hash: Option<[u8; 32]>) -> Result<Connection, String> {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(limits::MAX_FRAME + 64 * 1024))
        .max_frame_size(Some(limits::MAX_FRAME + 64 * 1024));
    let connector = if url.starts_with("wss://") {
        Some(tokio_tungstenite::Connector::Rustls(
            crate::tls::client_config(cert_hash)?,
        ))
    } else {
        None
    };
    let (socket, _) =
        tokio_tungstenite::connect_async_tls_with_config(url, Some(config), true, connector)
            .await
            .map_err(|e| format!("WebSocket connect failed: {e}"))?;
    let (mut sink, mut stream) = socket.split();
    let (commands, mut command_rx) = mpsc::unbounded_channel();
    let (incoming_tx, incoming) = mpsc::channel(INCOMING_QUEUE);
    let closed = CancellationToken::new();

    let reader_closed = closed.clone();
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                m = stream.next() => m,
                _ = reader_closed.cancelled() => break,
            };
            let at = Instant::now();
            match message {
                Some(Ok(Message::Binary(bytes))) => {
                    let Ok(frame) = decode_server_frame(bytes) else {
                        tracing::warn!("relay sent an undecodable frame; closing");
                        break;
                    };
                    if incoming_tx
                        .send(Received {
                            frame,
                            at,
                            datagram: false,
                        })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
        reader_closed.cancel();
    });

    let writer_closed = closed.clone();
    tokio::spawn(async move {
        loop {
            let command = tokio::select! {
                c = command_rx.recv() => c,
                _ = writer_closed.cancelled() => None,
            };
            match command {
                Some(Command::Send(bytes, _)) => {
                    if sink.send(Message::Binary(bytes)).await.is_err() {
                        break;
                    }
                }
                Some(Command::Close) => {
                    let _ = sink.close().await;
                    break;
                }
                None => break,
            }
        }
        writer_closed.cancel();
    });

    Ok(Connection {
        sender: Sender {
            transport: TransportKind::WebSocket,
            commands,
            closed,
            max_datagram: 0,
            wt: None,
            queue_age: QueueAge::new(0, Instant::now()),
            given_up: Arc::default(),
        },
        incoming,
    })
}

/// Unacknowledged stream data the client's QUIC connection holds; a media
/// stream's write waits beyond it (holding its slot, so frames after it are
/// given up). quinn's default, 10 MB, is a minute of a 1.3 Mbit/s uplink:
/// this is a camera and a screen share over a 600 ms round trip, with room
/// for keyframes. (Datagrams do not count against it.)
const SEND_WINDOW: u64 = 512 * 1024;
/// The control stream goes before media streams waiting to be sent; the
/// one QUIC is sending is finished first (streams leave in the order they
/// were written, below), so a control frame may wait for a keyframe: 0.4 s
/// for 100 kB at 2 Mbit/s. Probes and audio are datagrams and do not wait.
const CONTROL_PRIORITY: i32 = 1;
/// Application error code of RESET_STREAM for a media stream the relay
/// stopped (it gave up on the frame): the rest is not sent.
const RESET_STOPPED: u32 = 1;

/// The QUIC settings of a WebTransport connection to a relay.
fn quic_transport() -> wtransport::config::QuicTransportConfig {
    let mut transport = wtransport::config::QuicTransportConfig::default();
    transport
        .keep_alive_interval(Some(Duration::from_secs(2)))
        .max_idle_timeout(Some(
            Duration::from_secs(10)
                .try_into()
                .expect("10 s is a valid QUIC idle timeout"),
        ))
        .send_window(SEND_WINDOW)
        .datagram_send_buffer_size(queue_age::DATAGRAM_SEND_BUFFER)
        // Media streams leave in the order they were written: each frame
        // finishes before the next instead of all of them creeping along
        // together until the relay's deadline stops them. (Falling
        // priorities per stream, with fairness on, were tried instead: 16
        // of far_sender's 180 frames were given up.)
        .send_fairness(false);
    transport
}

async fn connect_wt(url: &str, cert_hash: Option<[u8; 32]>) -> Result<Connection, String> {
    let builder = wtransport::ClientConfig::builder().with_bind_default();
    let mut config = match cert_hash {
        Some(hash) => builder
            .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(hash)])
            .build(),
        None => builder.with_native_certs().build(),
    };
    config
        .quic_config_mut()
        .transport_config(std::sync::Arc::new(quic_transport()));
    let endpoint = wtransport::Endpoint::client(config)
        .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    let connection = endpoint
        .connect(url)
        .await
        .map_err(|e| format!("WebTransport connect failed: {e}"))?;
    let (mut control_send, control_recv) = connection
        .open_bi()
        .await
        .map_err(|e| format!("cannot open the control stream: {e}"))?
        .await
        .map_err(|e| format!("cannot open the control stream: {e}"))?;
    control_send.set_priority(CONTROL_PRIORITY);
    let max_datagram = connection.max_datagram_size().unwrap_or(0);
    let (commands, mut command_rx) = mpsc::unbounded_channel();
    let (incoming_tx, incoming) = mpsc::channel(INCOMING_QUEUE);
    let closed = CancellationToken::new();
    let given_up = Arc::new(AtomicU64::new(0));

    // Control stream reader.
    {
        let tx = incoming_tx.clone();
        let closed = closed.clone();
        let mut recv = control_recv;
        tokio::spawn(async move {
            let mut decoder = length_prefixed::Decoder::new(limits::MAX_CONTROL_FRAME);
            let mut buf = vec![0u8; 16 * 1024];
            'read: loop {
                let n = tokio::select! {
                    r = recv.read(&mut buf) => match r {
                        Ok(Some(n)) => n,
                        _ => break,
                    },
                    _ = closed.cancelled() => break,
                };
                let at = Instant::now();
                decoder.push(&buf[..n]);
                loop {
                    let bytes = match decoder.next_frame() {
                        Ok(Some(bytes)) => bytes,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!("relay sent an oversize control frame ({e}); closing");
                            break 'read;
                        }
                    };
                    let Ok(frame) = decode_server_frame(bytes) else {
                        tracing::warn!("relay sent an undecodable control frame; closing");
                        break 'read;
                    };
                    if tx
                        .send(Received {
                            frame,
                            at,
                            datagram: false,
                        })
                        .await
                        .is_err()
                    {
                        break 'read;
                    }
                }
            }
            closed.cancel();
        });
    }
    // Datagram reader.
    {
        let tx = incoming_tx.clone();
        let closed = closed.clone();
        let connection = connection.clone();
        tokio::spawn(async move {
            loop {
                let datagram = tokio::select! {
                    d = connection.receive_datagram() => match d {
                        Ok(d) => d,
                        Err(_) => break,
                    },
                    _ = closed.cancelled() => break,
                };
                let at = Instant::now();
                if let Ok(frame) = decode_server_frame(datagram.payload()) {
                    // A full queue means the consumer is behind: drop, as the
                    // network would.
                    let _ = tx.try_send(Received {
                        frame,
                        at,
                        datagram: true,
                    });
                }
            }
            closed.cancel();
        });
    }
    // Unidirectional stream reader (large media: one frame per stream, or a
    // group of pictures).
    {
        let tx = incoming_tx;
        let closed = closed.clone();
        let connection = connection.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    s = connection.accept_uni() => match s {
                        Ok(s) => s,
                        Err(_) => break,
                    },
                    _ = closed.cancelled() => break,
                };
                tokio::spawn(read_media_stream(stream, tx.clone()));
            }
            closed.cancel();
        });
    }
    // Writer.
    {
        let closed = closed.clone();
        let connection = connection.clone();
        let streams = Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS_IN_FLIGHT));
        let given_up = given_up.clone();
        tokio::spawn(async move {
            loop {
                let command = tokio::select! {
                    c = command_rx.recv() => c,
                    _ = closed.cancelled() => None,
                };
                match command {
                    Some(Command::Send(bytes, Route::Control)) => {
                        if control_send
                            .write_all(&length_prefixed::encode(&bytes))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    // `Sender::send_raw` hands datagrams to QUIC itself.
                    Some(Command::Send(_, Route::Probe | Route::Datagram)) => {}
                    Some(Command::Send(bytes, Route::Stream)) => {
                        let Ok(permit) = streams.clone().try_acquire_owned() else {
                            given_up.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        let connection = connection.clone();
                        let given_up = given_up.clone();
                        tokio::spawn(async move {
                            // Given up only if the stream could not be opened
                            // or written: once written, QUIC holds the bytes
                            // until the relay acknowledges them. `finish`
                            // marks the end without waiting for that
                            // (wtransport's own `finish` waits).
                            let written = async {
                                let mut stream = connection.open_uni().await.ok()?.await.ok()?;
                                stream.write_all(&bytes).await.ok()?;
                                Some(stream)
                            };
                            let Some(mut stream) = written.await else {
                                given_up.fetch_add(1, Ordering::Relaxed);
                                return;
                            };
                            let _ = stream.quic_stream_mut().finish();
                            drop(permit);
                            // If the relay stops the stream (its deadline
                            // passed), send no more of it.
                            if let StreamWriteError::Stopped(_) = stream.stopped().await {
                                let _ = stream.reset(wtransport::VarInt::from_u32(RESET_STOPPED));
                            }
                        });
                    }
                    Some(Command::Close) | None => break,
                }
            }
            let _ = control_send.finish().await;
            connection.close(wtransport::VarInt::from_u32(0), b"client closed");
            closed.cancel();
        });
    }
    // Keep the endpoint alive as long as the connection.
    {
        let closed = closed.clone();
        let connection = connection.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = connection.closed() => {}
                _ = closed.cancelled() => {}
            }
            closed.cancel();
            drop(endpoint);
        });
    }

    Ok(Connection {
        sender: Sender {
            transport: TransportKind::WebTransport,
            commands,
            closed,
            max_datagram,
            wt: Some(connection),
            queue_age: QueueAge::new(SEND_WINDOW, Instant::now()),
            given_up,
        },
        incoming,
    })
}

/// Reads one unidirectional media stream, handing over each frame as soon as
/// it is whole (`rallypoint_protocol::media_streams`). A stream that breaks
/// the framing is dropped from there on; the connection lives on.
async fn read_media_stream(mut stream: wtransport::RecvStream, tx: mpsc::Sender<Received>) {
    let mut frames = StreamFrames::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(Some(n)) => n,
            Ok(None) => break,
            Err(_) => return,
        };
        if frames.push(&buf[..n]).is_err() {
            return;
        }
        loop {
            match frames.next_frame() {
                Ok(Some(frame)) => {
                    if !deliver_streamed(&tx, frame).await {
                        return;
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    if let Ok(Some(frame)) = frames.finish() {
        deliver_streamed(&tx, frame).await;
    }
}

/// Decodes a frame read from a stream and queues it; false once nobody reads.
async fn deliver_streamed(tx: &mpsc::Sender<Received>, bytes: Bytes) -> bool {
    let at = Instant::now();
    match decode_server_frame(bytes) {
        Ok(frame) => tx
            .send(Received {
                frame,
                at,
                datagram: false,
            })
            .await
            .is_ok(),
        Err(_) => true,
    }
}
