//! WebSocket: one binary message carries one frame, in both directions.
//! Served by axum (tokio-tungstenite underneath) at `/ws`.

mod stale_media;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use rallypoint_protocol::limits;
use tokio::sync::mpsc;

use self::stale_media::{StaleMedia, Verdict};
use super::{ERROR_FLUSH, inbound, is_invalid, malformed};
use crate::budget::OpenConnection;
use crate::config::TransportKind;
use crate::intake::client_address;
use crate::metrics::Stats;
use crate::outbox::{Control, OutboxReceiver, Outgoing, outbox};
use crate::session::{self, ConnectionInfo, SessionEnd};
use crate::state::RelayState;

/// Slack above the largest frame so an oversize frame reaches our decoder and
/// gets a polite Error instead of a torn connection.
const MESSAGE_SLACK: usize = 64 * 1024;
/// tungstenite's read chunk and initial write buffer (128 KiB each by
/// default, allocated per connection before Hello). Frames are mostly audio
/// and probes of ~100 bytes; larger ones take a few more reads.
const READ_BUFFER: usize = 8 * 1024;
const WRITE_BUFFER: usize = 8 * 1024;

/// The most a relay's TCP socket holds unsent before it stops taking more
/// (`TCP_NOTSENT_LOWAT`, set at accept): 33 ms at 500 kbit/s, a quarter of
/// a second at 60. Beyond it and tungstenite's write buffer
/// ([`WRITE_BUFFER`], where frames already judged fresh wait too) media
/// waits in the connection's queue, where [`stale_media`] drops what waited
/// too long; the kernel's buffer would hold seconds of it unseen. On a fast
/// path the socket drains as fast as it is written, and this changes
/// nothing. Measured (`tests/slow_downlink.rs`, 20 ms audio behind
/// 60 kbit/s): at 4 KiB the frames that arrived were 910 ms old (p50), at
/// 2 KiB 636 ms, at 1 KiB no better (656 ms: the rest waits elsewhere),
/// each hearing the link's worth; behind 500 kbit/s 429, 409 and 410 ms.
pub const UNSENT_LOW_WATER: u32 = 2 * 1024;

pub async fn upgrade(
    State(relay): State<Arc<RelayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Err(reason) = relay.accepts_sessions() {
        return (StatusCode::SERVICE_UNAVAILABLE, reason).into_response();
    }
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let client_ip = client_address(
        peer.ip(),
        forwarded,
        &relay.config.telemetry.trusted_proxies,
    );
    ws.max_message_size(limits::MAX_FRAME + MESSAGE_SLACK)
        .max_frame_size(limits::MAX_FRAME + MESSAGE_SLACK)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| serve(relay, socket, client_ip))
}

async fn serve(relay: Arc<RelayState>, socket: WebSocket, client_ip: std::net::IpAddr) {
    let _open = OpenConnection::new(relay.stats.clone(), TransportKind::WebSocket);
    let (sink, mut stream) = socket.split();
    let limits = &relay.config.limits;
    let (outbox, outgoing) = outbox(limits.control_queue, limits.media_queue);
    let (inbound_tx, inbound_rx) = mpsc::channel(64);

    let mut reader = tokio::spawn(async move {
        // After the session stops listening the reader keeps draining, so the
        // WebSocket closing handshake completes and the kernel never answers
        // unread data with a reset that would destroy our Error frame.
        let mut forwarding = true;
        while let Some(message) = stream.next().await {
            if !forwarding {
                continue;
            }
            let item = match message {
                Ok(Message::Binary(bytes)) => inbound(bytes, false),
                Ok(Message::Text(_)) => {
                    malformed("text messages are not part of the protocol; send binary frames")
                }
                Ok(Message::Close(_)) => break,
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                // Oversize messages beyond the slack end up here too
                // ("Space limit exceeded"); the connection is unusable after.
                Err(e) => malformed(format!("cannot read the WebSocket message: {e}")),
            };
            let stop = is_invalid(&item);
            if inbound_tx.send(item).await.is_err() || stop {
                forwarding = false;
            }
        }
    });
    let mut writer = tokio::spawn(write(
        sink,
        outgoing,
        outbox.kill_switch(),
        relay.stats.clone(),
    ));

    let info = ConnectionInfo {
        transport: TransportKind::WebSocket,
        client_ip: Some(client_ip),
        max_datagram_size: 0,
        welcomed: tokio_util::sync::CancellationToken::new(),
        media_stream_groups: Default::default(),
    };
    let end = session::run(relay.clone(), info, inbound_rx, outbox.clone()).await;
    // A refused session lets the writer deliver the Error frame first.
    if end == SessionEnd::Vanished {
        outbox.kill();
    }
    // Both halves must go for the socket to close: a client that stopped
    // reading would otherwise hold its socket (and our kernel buffers) for as
    // long as it likes. Each handle is awaited once (a finished JoinHandle
    // must not be polled again).
    for task in [&mut writer, &mut reader] {
        if tokio::time::timeout(ERROR_FLUSH, &mut *task).await.is_err() {
            task.abort();
        }
        outbox.kill();
    }
}

/// Writes queued frames, flushing only when the queue is momentarily empty:
/// one syscall per burst instead of one per frame under load, and no added
/// delay when traffic is light. Media that waited too long is dropped
/// ([`stale_media`]).
async fn write(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut outgoing: OutboxReceiver,
    kill: tokio_util::sync::CancellationToken,
    stats: Arc<Stats>,
) {
    let mut stale = StaleMedia::default();
    'writing: loop {
        let first = tokio::select! {
            item = outgoing.next() => item,
            _ = kill.cancelled() => None,
        };
        let Some(mut item) = first else { break };
        loop {
            let bytes = match item {
                Outgoing::Control(
                    Control::Frame(bytes) | Control::ProbeAck { frame: bytes, .. },
                ) => Some(bytes),
                Outgoing::Media(frame) => match stale.judge(&frame, Instant::now()) {
                    Verdict::Write => Some(frame.bytes),
                    Verdict::Stale => {
                        stats.media_dropped.fetch_add(1, Relaxed);
                        None
                    }
                    Verdict::AwaitingKeyframe => {
                        stats.media_skipped_awaiting_keyframe.fetch_add(1, Relaxed);
                        None
                    }
                },
                Outgoing::Control(Control::CloseWith(bytes)) => {
                    let _ = sink.send(Message::Binary(bytes)).await;
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: close_code::POLICY,
                            reason: "refused; see the Error frame".into(),
                        })))
                        .await;
                    break 'writing;
                }
            };
            if let Some(bytes) = bytes {
                let fed = tokio::select! {
                    fed = sink.feed(Message::Binary(bytes)) => fed.is_ok(),
                    _ = kill.cancelled() => false,
                };
                if !fed {
                    break 'writing;
                }
            }
            match outgoing.try_next() {
                Some(next) => item = next,
                None => break,
            }
        }
        let flushed = tokio::select! {
            flushed = sink.flush() => flushed.is_ok(),
            _ = kill.cancelled() => false,
        };
        if !flushed {
            break;
        }
    }
    let _ = tokio::time::timeout(ERROR_FLUSH, sink.close()).await;
    // Nothing more reaches this client: its session must end too (the
    // socket failed, or the client was refused and the Error went out).
    kill.cancel();
}
