//! WebTransport (HTTP/3 over QUIC), served with wtransport.
//!
//! * Control: the first bidirectional stream the client opens; frames carry a
//!   4-byte big-endian length prefix (`rallypoint_protocol::length_prefixed`).
//! * Probes: datagrams, so RTT is measured on the UDP path media takes. The
//!   answer goes back the way the probe came.
//! * Media: a datagram when the encoded frame fits the path's datagram size,
//!   otherwise one unidirectional stream per frame (video keyframes). Clients
//!   do the same towards the relay.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rallypoint_protocol::{FrameError, length_prefixed, limits};
use tokio::io::AsyncReadExt;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use wtransport::endpoint::IncomingSession;
use wtransport::endpoint::endpoint_side::Server;
use wtransport::{Connection, Endpoint, RecvStream, SendStream, VarInt};

use super::{ERROR_FLUSH, inbound, is_invalid};
use crate::config::TransportKind;
use crate::metrics::Stats;
use crate::session::outbox::{Control, OutboxReceiver, Outgoing, outbox};
use crate::session::{self, ConnectionInfo, Inbound, SessionEnd};
use crate::state::RelayState;

/// Outgoing unidirectional streams in flight per connection; beyond this a
/// large media frame is dropped like any frame for a slow receiver.
const MAX_OUTGOING_STREAMS: usize = 32;
/// Application close codes.
const CLOSE_REFUSED: u32 = 1;
const CLOSE_DRAINED: u32 = 2;

/// Accepts WebTransport sessions until `stop` turns true.
pub async fn accept_loop(
    relay: Arc<RelayState>,
    endpoint: Arc<Endpoint<Server>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            incoming = endpoint.accept() => {
                tokio::spawn(handle_incoming(relay.clone(), incoming));
            }
        }
    }
    tracing::info!("stopped accepting WebTransport sessions");
}

async fn handle_incoming(relay: Arc<RelayState>, incoming: IncomingSession) {
    let request = match incoming.await {
        Ok(request) => request,
        Err(e) => {
            tracing::debug!("WebTransport handshake failed: {e}");
            return;
        }
    };
    if let Err(reason) = relay.readiness() {
        tracing::info!(%reason, "refusing a WebTransport session");
        request.too_many_requests().await;
        return;
    }
    match request.accept().await {
        Ok(connection) => serve(relay, connection).await,
        Err(e) => tracing::debug!("accepting a WebTransport session failed: {e}"),
    }
}

async fn serve(relay: Arc<RelayState>, connection: Connection) {
    relay.stats.connection_opened(TransportKind::Wt);
    let limits = &relay.config.limits;
    let control = tokio::time::timeout(limits.hello_timeout, connection.accept_bi()).await;
    let Ok(Ok((control_send, control_recv))) = control else {
        connection.close(VarInt::from_u32(CLOSE_REFUSED), b"no control stream opened");
        relay.stats.connection_closed(TransportKind::Wt);
        return;
    };
    let client_ip: IpAddr = connection.remote_address().ip().to_canonical();
    let max_datagram_size = connection.max_datagram_size().unwrap_or(0);
    let (outbox, outgoing) = outbox(limits.control_queue, limits.media_queue);
    let (inbound_tx, inbound_rx) = mpsc::channel(64);

    let readers = [
        tokio::spawn(read_control(control_recv, inbound_tx.clone())),
        tokio::spawn(read_datagrams(connection.clone(), inbound_tx.clone())),
        tokio::spawn(read_streams(connection.clone(), inbound_tx)),
    ];
    let writer = tokio::spawn(write(
        connection.clone(),
        control_send,
        outgoing,
        outbox.kill_switch(),
        max_datagram_size,
        relay.stats.clone(),
    ));

    let info = ConnectionInfo {
        transport: TransportKind::Wt,
        client_ip: Some(client_ip),
        max_datagram_size: max_datagram_size as u32,
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
    relay.stats.connection_closed(TransportKind::Wt);
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

/// Each unidirectional stream carries exactly one frame (a large media frame).
async fn read_streams(connection: Connection, tx: mpsc::Sender<Inbound>) {
    while let Ok(stream) = connection.accept_uni().await {
        let tx = tx.clone();
        tokio::spawn(async move {
            let item = match read_whole(stream, limits::MAX_FRAME).await {
                Ok(bytes) => inbound(bytes, false),
                Err(e) => Inbound::Invalid(e),
            };
            let _ = forward(&tx, item).await;
        });
    }
}

async fn read_whole(stream: RecvStream, max: usize) -> Result<Bytes, FrameError> {
    let mut body = Vec::new();
    stream
        .take(max as u64 + 1)
        .read_to_end(&mut body)
        .await
        .map_err(|e| FrameError::Malformed(format!("stream read failed: {e}")))?;
    if body.len() > max {
        return Err(FrameError::TooLarge {
            len: body.len(),
            max,
        });
    }
    Ok(Bytes::from(body))
}

async fn write(
    connection: Connection,
    mut control: SendStream,
    mut outgoing: OutboxReceiver,
    kill: CancellationToken,
    max_datagram_size: usize,
    stats: Arc<Stats>,
) {
    let streams = Arc::new(Semaphore::new(MAX_OUTGOING_STREAMS));
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
                let _ = control.write_all(&length_prefixed::encode(&frame)).await;
                let _ = control.finish().await;
                // Let the peer read the Error before the connection closes.
                let _ = tokio::time::timeout(Duration::from_secs(1), control.stopped()).await;
                connection.close(
                    VarInt::from_u32(CLOSE_REFUSED),
                    b"refused; see the Error frame",
                );
                break;
            }
            Outgoing::Media(frame) => {
                if frame.len() <= max_datagram_size {
                    // A datagram that does not fit the congestion window is
                    // lost like any datagram: media tolerates it.
                    let _ = connection.send_datagram(frame);
                    continue;
                }
                let Ok(permit) = streams.clone().try_acquire_owned() else {
                    stats
                        .media_dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                };
                let connection = connection.clone();
                tokio::spawn(async move {
                    if let Ok(opening) = connection.open_uni().await
                        && let Ok(mut stream) = opening.await
                    {
                        let _ = stream.write_all(&frame).await;
                        let _ = stream.finish().await;
                    }
                    drop(permit);
                });
            }
        }
    }
}
