//! WebTransport (HTTP/3 over QUIC), served with wtransport.
//!
//! * Control: the first bidirectional stream the client opens; frames carry a
//!   4-byte big-endian length prefix (`rallypoint_protocol::length_prefixed`).
//! * Probes: datagrams, so RTT is measured on the UDP path media takes. The
//!   answer goes back the way the probe came.
//! * Media: a datagram when the encoded frame fits the path's datagram size,
//!   otherwise a unidirectional stream: one per group of pictures to a
//!   client that reads groups, else one per frame ([`media_streams`]).
//!   Clients send the relay one stream per frame ([`client_streams`]).

mod client_streams;
mod media_streams;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use rallypoint_protocol::{length_prefixed, limits};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use wtransport::endpoint::IncomingSession;
use wtransport::endpoint::endpoint_side::Server;
use wtransport::{Connection, Endpoint, RecvStream, SendStream, VarInt};

use super::{ERROR_FLUSH, inbound, is_invalid};
use crate::budget::{ConnectionSlot, OpenConnection};
use crate::config::TransportKind;
use crate::outbox::{Control, DatagramSend, DatagramSink, OutboxReceiver, Outgoing, outbox};
use crate::session::{self, ConnectionInfo, Inbound, SessionEnd};
use crate::state::RelayState;
use media_streams::MediaStreams;
use rallypoint_protocol::queue_age::{self as bounds, QueueAge};

/// The unidirectional streams HTTP/3 itself keeps open (control, QPACK
/// encoder and decoder).
const H3_UNI_STREAMS: u32 = 3;
/// Datagrams QUIC keeps for us while the session is busy (probes, audio).
const DATAGRAM_RECEIVE_BUFFER: usize = 64 * 1024;
/// Stream data (media streams and control) QUIC holds per connection until
/// the client acknowledges it; a write waits beyond it, and a media stream's
/// write gives up after its deadline (`media_streams`). quinn's default
/// (10 MB) let a receiver whose path is slower than its video pile up many
/// seconds of it once nothing else bounded the frames in flight. 1 MiB
/// carries 20 cameras at 1 Mbit/s over a 400 ms round trip.
const SEND_WINDOW: u64 = 1024 * 1024;
/// Control frames go before media queued in QUIC (stream priority).
const CONTROL_PRIORITY: i32 = 1;
/// Handshakes in progress above which a client must first prove its address
/// (QUIC retry), so spoofed Initial packets cannot hold slots.
const RETRY_ABOVE_HANDSHAKES: usize = 64;
/// Application close codes.
const CLOSE_REFUSED: u32 = 1;
const CLOSE_DRAINED: u32 = 2;

/// The relay's WebTransport server settings: QUIC flow control sized so one
/// connection can buffer at most a few maximal media frames.
pub fn server_config(
    listen: std::net::SocketAddr,
    identity: wtransport::Identity,
) -> anyhow::Result<wtransport::ServerConfig> {
    use wtransport::quinn::VarInt as QuicVarInt;
    let frame = QuicVarInt::from_u32((limits::MAX_FRAME + limits::LENGTH_PREFIX) as u32);
    let mut transport = wtransport::config::QuicTransportConfig::default();
    transport
        .max_concurrent_uni_streams(QuicVarInt::from_u32(
            H3_UNI_STREAMS + client_streams::MAX_STREAMS as u32,
        ))
        // The session's CONNECT stream and our control stream, and a spare.
        .max_concurrent_bidi_streams(QuicVarInt::from_u32(4))
        .stream_receive_window(frame)
        .send_window(SEND_WINDOW)
        .receive_window(QuicVarInt::from_u32(2 * (limits::MAX_FRAME as u32)))
        .datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER))
        .datagram_send_buffer_size(bounds::DATAGRAM_SEND_BUFFER);
    Ok(wtransport::ServerConfig::builder()
        .with_bind_address(listen)
        .with_custom_transport(identity, transport)
        .keep_alive_interval(Some(Duration::from_secs(2)))
        .max_idle_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| anyhow::anyhow!("invalid WebTransport idle timeout: {e}"))?
        .build())
}

/// Accepts WebTransport sessions until `stop` turns true.
///
/// Every QUIC connection attempt takes a slot of the relay's connection budget
/// from its first packet (refused at the limit), must prove its address when
/// many handshakes are in progress, and must finish the QUIC handshake and
/// the WebTransport CONNECT within `--handshake-timeout`.
pub async fn accept_loop(
    relay: Arc<RelayState>,
    endpoint: Arc<Endpoint<Server>>,
    mut stop: watch::Receiver<bool>,
) {
    let handshakes = Arc::new(AtomicUsize::new(0));
    loop {
        tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            incoming = endpoint.accept() => {
                if !incoming.remote_address_validated()
                    && handshakes.load(Relaxed) >= RETRY_ABOVE_HANDSHAKES
                {
                    incoming.retry();
                    continue;
                }
                let Some(slot) = relay.budget.try_admit() else {
                    tracing::debug!(limit = relay.budget.limit(), "at the connection limit; refusing a QUIC connection");
                    incoming.refuse();
                    continue;
                };
                let handshake = Handshake::start(&handshakes);
                tokio::spawn(handle_incoming(relay.clone(), incoming, slot, handshake));
            }
        }
    }
    tracing::info!("stopped accepting WebTransport sessions");
}

/// Counts a handshake in progress until dropped.
struct Handshake(Arc<AtomicUsize>);

impl Handshake {
    fn start(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Relaxed);
        Handshake(count.clone())
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

async fn handle_incoming(
    relay: Arc<RelayState>,
    incoming: IncomingSession,
    slot: ConnectionSlot,
    handshake: Handshake,
) {
    let deadline = relay.config.limits.handshake_timeout;
    let accepted = tokio::time::timeout(deadline, async {
        let request = incoming
            .await
            .map_err(|e| format!("WebTransport handshake failed: {e}"))?;
        if let Err(reason) = relay.accepts_sessions() {
            tracing::info!(%reason, "refusing a WebTransport session");
            request.too_many_requests().await;
            return Err(reason);
        }
        request
            .accept()
            .await
            .map_err(|e| format!("accepting a WebTransport session failed: {e}"))
    })
    .await;
    drop(handshake);
    match accepted {
        Ok(Ok(connection)) => serve(relay, connection, slot).await,
        Ok(Err(reason)) => tracing::debug!("{reason}"),
        Err(_) => tracing::debug!(
            ?deadline,
            "WebTransport handshake and CONNECT took too long"
        ),
    }
}

async fn serve(relay: Arc<RelayState>, connection: Connection, _slot: ConnectionSlot) {
    let _open = OpenConnection::new(relay.stats.clone(), TransportKind::WebTransport);
    let limits = &relay.config.limits;
    let control = tokio::time::timeout(limits.hello_timeout, connection.accept_bi()).await;
    let Ok(Ok((control_send, control_recv))) = control else {
        connection.close(VarInt::from_u32(CLOSE_REFUSED), b"no control stream opened");
        return;
    };
    control_send.set_priority(CONTROL_PRIORITY);
    let client_ip: IpAddr = connection.remote_address().ip().to_canonical();
    let max_datagram_size = connection.max_datagram_size().unwrap_or(0);
    let (outbox, outgoing) = outbox(limits.control_queue, limits.media_queue);
    let queue_age = Arc::new(QueueAge::new(SEND_WINDOW, std::time::Instant::now()));
    let outbox = outbox.with_datagrams(Arc::new(Datagrams {
        connection: connection.clone(),
        max_size: max_datagram_size,
        queue_age: queue_age.clone(),
    }));
    let (inbound_tx, inbound_rx) = mpsc::channel(64);
    let welcomed = CancellationToken::new();
    let media_stream_groups = Arc::new(AtomicBool::new(false));

    // Datagrams and media streams are read only once Hello was accepted:
    // before that QUIC holds them within its flow-control limits.
    let readers = [
        tokio::spawn(read_control(control_recv, inbound_tx.clone())),
        tokio::spawn(after(
            welcomed.clone(),
            read_datagrams(connection.clone(), inbound_tx.clone()),
        )),
        tokio::spawn(after(
            welcomed.clone(),
            client_streams::read(connection.clone(), inbound_tx, relay.stats.clone()),
        )),
    ];
    let writer = tokio::spawn(write(
        connection.clone(),
        control_send,
        outgoing,
        outbox.kill_switch(),
        max_datagram_size,
        MediaStreams::new(
            connection.clone(),
            media_stream_groups.clone(),
            queue_age,
            relay.stats.clone(),
        ),
    ));

    let info = ConnectionInfo {
        transport: TransportKind::WebTransport,
        client_ip: Some(client_ip),
        max_datagram_size: max_datagram_size as u32,
        welcomed,
        media_stream_groups,
    };
    if session::run(relay.clone(), info, inbound_rx, outbox.clone()).await == SessionEnd::Refused {
        let _ = tokio::time::timeout(ERROR_FLUSH + Duration::from_secs(1), writer).await;
    }
    outbox.kill();
    for reader in readers {
        reader.abort();
    }
    let code = if relay.is_draining() {
        CLOSE_DRAINED
    } else {
        CLOSE_REFUSED
    };
    connection.close(VarInt::from_u32(code), b"session ended");
}

/// Media datagrams, sent by the room tasks themselves (see
/// [`crate::outbox`]): a frame that fits goes straight into the connection's
/// datagram buffer, one that does not find room there — room being what the
/// connection drains within [`bounds::MAX_DATAGRAM_WAIT`] — is dropped and
/// counted like a frame for a slow receiver (so a picture waits for its next
/// keyframe) instead of pushing out an older datagram unseen. The check and
/// the send are two steps: a probe answer (sent by the writer, which does not
/// check) landing between them can still push out one older datagram
/// uncounted — rare, as probe answers are a few a second.
#[derive(Debug)]
struct Datagrams {
    connection: Connection,
    max_size: usize,
    queue_age: Arc<QueueAge>,
}

/// The most a WebTransport datagram adds in front of its payload (the
/// session's quarter stream id, a QUIC varint).
const DATAGRAM_HEADER: usize = 8;

impl DatagramSink for Datagrams {
    fn send(&self, frame: &Bytes) -> DatagramSend {
        if frame.len() > self.max_size {
            return DatagramSend::TooLarge;
        }
        let quic = self.connection.quic_connection();
        if !self
            .queue_age
            .media_datagram_fits(quic, frame.len() + DATAGRAM_HEADER)
        {
            return DatagramSend::NoRoom;
        }
        match self.connection.send_datagram(frame) {
            Ok(()) => DatagramSend::Sent,
            Err(wtransport::error::SendDatagramError::TooLarge) => DatagramSend::TooLarge,
            Err(_) => DatagramSend::Closed,
        }
    }
}

/// Runs `task` once `gate` fires.
async fn after(gate: CancellationToken, task: impl std::future::Future<Output = ()>) {
    gate.cancelled().await;
    task.await
}

async fn forward(tx: &mpsc::Sender<Inbound>, item: Inbound) -> bool {
    let stop = is_invalid(&item);
    tx.send(item).await.is_ok() && !stop
}

async fn read_control(mut recv: RecvStream, tx: mpsc::Sender<Inbound>) {
    let mut decoder = length_prefixed::Decoder::new(limits::MAX_CONTROL_FRAME);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match recv.read(&mut buf).await {
            Ok(Some(n)) => n,
            Ok(None) | Err(_) => return,
        };
        decoder.push(&buf[..n]);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    if !forward(&tx, inbound(frame, false)).await {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = forward(&tx, Inbound::Invalid(e)).await;
                    return;
                }
            }
        }
    }
}

async fn read_datagrams(connection: Connection, tx: mpsc::Sender<Inbound>) {
    while let Ok(datagram) = connection.receive_datagram().await {
        if !forward(&tx, inbound(datagram.payload(), true)).await {
            return;
        }
    }
}

async fn write(
    connection: Connection,
    mut control: SendStream,
    mut outgoing: OutboxReceiver,
    kill: CancellationToken,
    max_datagram_size: usize,
    mut media_streams: MediaStreams,
) {
    loop {
        let item = tokio::select! {
            item = outgoing.next() => item,
            _ = kill.cancelled() => None,
        };
        let Some(item) = item else { break };
        match item {
            Outgoing::Control(Control::Frame(frame)) => {
                if control
                    .write_all(&length_prefixed::encode(&frame))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Outgoing::Control(Control::ProbeAck { frame, datagram }) => {
                let sent = datagram
                    && frame.len() <= max_datagram_size
                    && connection.send_datagram(frame.clone()).is_ok();
                if !sent
                    && control
                        .write_all(&length_prefixed::encode(&frame))
                        .await
                        .is_err()
                {
                    break;
                }
            }
            Outgoing::Control(Control::CloseWith(frame)) => {
                let error = length_prefixed::encode(&frame);
                let _ = tokio::time::timeout(ERROR_FLUSH, async {
                    let _ = control.write_all(&error).await;
                    let _ = control.finish().await;
                })
                .await;
                // Let the peer read the Error before the connection closes.
                let _ = tokio::time::timeout(Duration::from_secs(1), control.stopped()).await;
                connection.close(
                    VarInt::from_u32(CLOSE_REFUSED),
                    b"refused; see the Error frame",
                );
                break;
            }
            // Frames too large for a datagram and picture keyframes come
            // this way; the others went straight to the connection
            // (`Datagrams`).
            Outgoing::Media(frame) => media_streams.send(frame),
        }
    }
    // Nothing more reaches this client: its session must end too.
    kill.cancel();
}
