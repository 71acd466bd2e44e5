//! One client connection, whatever its transport.
//!
//! The transport adapters (`transport::ws`, `transport::wt`) decode frames and
//! hand them to [`run`] as [`Inbound`] items, and write whatever the session
//! queues on its [`outbox::Outbox`]. The session enforces the protocol:
//!
//! ```text
//!   AwaitingHello --Hello(valid token)--> ProbeOnly --Join(token's room)--> InRoom
//!                                            ^                                |
//!                                            +------------- Leave ------------+
//! ```
//!
//! A probe-only connection (a candidate under test) may probe and report
//! telemetry, nothing else: it is in no room and costs the room nothing.
//! Any violation gets an `Error` frame naming the problem, then the connection
//! is closed; other connections are untouched.

pub mod outbox;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bytes::Bytes;
use rallypoint_protocol::v1::{
    ClientFrame, Drain, ErrorCode, Hello, Media, Participant, ProbeAck, ServerFrame, TrackKind,
    Welcome, client_frame, server_frame, telemetry_report,
};
use rallypoint_protocol::{FrameError, PROTOCOL_VERSION, encode, limits};
use tokio::sync::mpsc;

use crate::auth::peer_id;
use crate::config::TransportKind;
use crate::intake::{RateLimiter, ReportSource};
use crate::metrics::Stats;
use crate::state::{RelayState, unix_micros};
use outbox::{Control, Outbox};
use rallypoint_protocol::token::Claims;

/// What a transport adapter hands to the session.
// Nearly every value is a `Frame`; boxing it would add an allocation per
// frame to save space only on the rare `Invalid`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Inbound {
    Frame {
        frame: ClientFrame,
        /// Came as a WebTransport datagram (answers to probes go back the same way).
        datagram: bool,
        /// Relay clock when the bytes were read — not when the session got to
        /// them — so probe answers report true receive times.
        received_us: u64,
    },
    /// The transport could not decode what the client sent.
    Invalid(FrameError),
}

/// Facts about the connection that the transport knows.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub transport: TransportKind,
    /// Used only for the edge lookup of ASN/ISP/country; never stored or sent.
    pub client_ip: Option<IpAddr>,
    /// Largest ServerFrame the transport sends as one datagram (0: none).
    pub max_datagram_size: u32,
}

enum Phase {
    AwaitingHello,
    ProbeOnly(Identity),
    InRoom { identity: Identity, room: String },
}

struct Identity {
    claims: Claims,
    peer_id: String,
}

/// The session sent an Error and asked the writer to close the connection.
struct Refused;

/// How a session ended, which tells the transport how to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client went away (or the connection was killed): close now.
    Vanished,
    /// An Error frame is queued with `CloseWith`: let the writer deliver it.
    Refused,
}

/// Runs the session until the connection ends.
pub async fn run(
    relay: Arc<RelayState>,
    info: ConnectionInfo,
    mut inbound: mpsc::Receiver<Inbound>,
    outbox: Outbox,
) -> SessionEnd {
    let conn = relay.next_conn_id();
    let mut session = Session {
        relay: relay.clone(),
        info,
        conn,
        outbox: outbox.clone(),
        phase: Phase::AwaitingHello,
        reports: RateLimiter::per_minute(relay.config.telemetry.reports_per_minute, Instant::now()),
    };
    let mut draining = relay.draining.clone();
    let limits = &relay.config.limits;
    let hello_deadline = tokio::time::sleep(limits.hello_timeout);
    tokio::pin!(hello_deadline);
    let idle = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle);
    let mut drained = false;

    let end = loop {
        tokio::select! {
            item = inbound.recv() => match item {
                None => break SessionEnd::Vanished,
                Some(Inbound::Invalid(error)) => {
                    relay.stats.frames_rejected.fetch_add(1, Relaxed);
                    let code = match error {
                        FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
                        _ => ErrorCode::MalformedFrame,
                    };
                    session.refuse(code, format!("{error}; closing this connection"));
                    break SessionEnd::Refused;
                }
                Some(Inbound::Frame { frame, datagram, received_us }) => {
                    idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
                    if session.handle(frame, datagram, received_us).await.is_err() {
                        break SessionEnd::Refused;
                    }
                }
            },
            _ = &mut hello_deadline, if matches!(session.phase, Phase::AwaitingHello) => {
                session.refuse(
                    ErrorCode::Unauthenticated,
                    format!("no Hello within {:?}; send Hello with a token first", limits.hello_timeout),
                );
                break SessionEnd::Refused;
            }
            _ = &mut idle => {
                session.refuse(
                    ErrorCode::ProtocolViolation,
                    format!("nothing received for {:?}; probe or send media to stay connected", limits.idle_timeout),
                );
                break SessionEnd::Refused;
            }
            changed = draining.changed(), if !drained => {
                drained = true;
                if changed.is_ok() && *draining.borrow() {
                    relay.stats.drains_sent.fetch_add(1, Relaxed);
                    outbox.frame(encode(&ServerFrame::of(server_frame::Kind::Drain(Drain {
                        reason: "relay is shutting down".into(),
                        deadline_ms: relay.config.drain_grace.as_millis() as u32,
                    }))));
                }
            }
            _ = outbox.killed() => break SessionEnd::Vanished,
        }
    };

    if let Phase::InRoom { identity, room } = &session.phase {
        // Without a Leave this may be a move to another relay: the room's grace
        // period tells a move from a departure.
        relay.hub.lost(room, conn, &identity.peer_id);
    }
    end
}

struct Session {
    relay: Arc<RelayState>,
    info: ConnectionInfo,
    conn: u64,
    outbox: Outbox,
    phase: Phase,
    reports: RateLimiter,
}

impl Session {
    async fn handle(
        &mut self,
        frame: ClientFrame,
        datagram: bool,
        received_us: u64,
    ) -> Result<(), Refused> {
        let Some(kind) = frame.kind else {
            return Ok(());
        };
        match (kind, &self.phase) {
            (client_frame::Kind::Hello(hello), Phase::AwaitingHello) => self.hello(hello),
            (client_frame::Kind::Hello(_), _) => {
                self.violation("Hello was already accepted on this connection")
            }
            (_, Phase::AwaitingHello) => {
                self.refuse(
                    ErrorCode::Unauthenticated,
                    "send Hello with a token before anything else",
                );
                Err(Refused)
            }
            (client_frame::Kind::Probe(probe), _) => {
                let ack = ProbeAck {
                    seq: probe.seq,
                    client_send_us: probe.client_send_us,
                    relay_recv_us: received_us,
                    relay_send_us: unix_micros(),
                    relay_id: self.relay.config.relay_id.clone(),
                    region: self.relay.config.region.clone(),
                };
                self.relay.stats.probes_answered.fetch_add(1, Relaxed);
                self.outbox.control(Control::ProbeAck {
                    frame: encode(&ServerFrame::of(server_frame::Kind::ProbeAck(ack))),
                    datagram,
                });
                Ok(())
            }
            (client_frame::Kind::Join(join), Phase::ProbeOnly(_)) => self.join(join),
            (client_frame::Kind::Join(_), Phase::InRoom { .. }) => {
                self.violation("already in a room; send Leave before joining again")
            }
            (client_frame::Kind::Media(media), Phase::InRoom { identity, room }) => {
                let (room, sender) = (room.clone(), identity.peer_id.clone());
                self.media(&room, &sender, media).await
            }
            (client_frame::Kind::Media(_), Phase::ProbeOnly(_)) => {
                self.violation("media before Join: a connection under test may only probe")
            }
            (client_frame::Kind::KeyframeRequest(request), Phase::InRoom { identity, room }) => {
                let kind = TrackKind::try_from(request.kind).unwrap_or(TrackKind::Video);
                self.relay
                    .hub
                    .keyframe_request(room, &identity.peer_id, &request.peer_id, kind);
                Ok(())
            }
            (client_frame::Kind::KeyframeRequest(_), Phase::ProbeOnly(_)) => {
                self.violation("keyframe request before Join")
            }
            (client_frame::Kind::Leave(leave), Phase::InRoom { .. }) => {
                let Phase::InRoom { identity, room } =
                    std::mem::replace(&mut self.phase, Phase::AwaitingHello)
                else {
                    unreachable!("matched above");
                };
                if leave.moving {
                    self.relay.hub.lost(&room, self.conn, &identity.peer_id);
                } else {
                    self.relay.hub.hangup(&room, self.conn, &identity.peer_id);
                }
                self.phase = Phase::ProbeOnly(identity);
                Ok(())
            }
            (client_frame::Kind::Leave(_), Phase::ProbeOnly(_)) => Ok(()),
            (
                client_frame::Kind::Telemetry(report),
                Phase::ProbeOnly(identity) | Phase::InRoom { identity, .. },
            ) => {
                let Some(telemetry_report::Kind::Election(report)) = report.kind else {
                    return self.violation("telemetry report without content");
                };
                if !self.reports.try_take(Instant::now()) {
                    let retry = self.reports.retry_after();
                    self.outbox
                        .frame(encode(&ServerFrame::of(server_frame::Kind::TelemetryAck(
                            rallypoint_protocol::v1::TelemetryAck {
                                report_id: report.report_id,
                                accepted: false,
                                reason: format!("rate limited: retry in {} ms", retry.as_millis()),
                            },
                        ))));
                    self.relay.stats.reports_rejected.fetch_add(1, Relaxed);
                    return Ok(());
                }
                let source = ReportSource {
                    client_ip: self.info.client_ip,
                    peer_id: &identity.peer_id,
                };
                self.relay.intake.submit(report, source, &self.outbox);
                Ok(())
            }
        }
    }

    fn hello(&mut self, hello: Hello) -> Result<(), Refused> {
        if hello.protocol_version != PROTOCOL_VERSION {
            self.refuse(
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {} is not supported; this relay speaks {PROTOCOL_VERSION}",
                    hello.protocol_version
                ),
            );
            return Err(Refused);
        }
        let claims = match self.relay.verifier.verify(&hello.token) {
            Ok(claims) => claims,
            Err(e) => {
                self.relay.stats.auth_failures.fetch_add(1, Relaxed);
                self.refuse(e.code, e.message);
                return Err(Refused);
            }
        };
        if !(8..=64).contains(&hello.session_id.len()) {
            self.refuse(
                ErrorCode::ProtocolViolation,
                "Hello.session_id must be 8 to 64 random bytes, the same for the whole call",
            );
            return Err(Refused);
        }
        let peer_id = peer_id(&claims.sub, &hello.session_id);
        self.outbox
            .frame(encode(&ServerFrame::of(server_frame::Kind::Welcome(
                Welcome {
                    peer_id: peer_id.clone(),
                    relay_id: self.relay.config.relay_id.clone(),
                    region: self.relay.config.region.clone(),
                    protocol_version: PROTOCOL_VERSION,
                    max_datagram_size: self.info.max_datagram_size,
                },
            ))));
        self.phase = Phase::ProbeOnly(Identity { claims, peer_id });
        Ok(())
    }

    fn join(&mut self, join: rallypoint_protocol::v1::Join) -> Result<(), Refused> {
        let Phase::ProbeOnly(identity) = std::mem::replace(&mut self.phase, Phase::AwaitingHello)
        else {
            unreachable!("join is only handled when probe-only");
        };
        if join.room != identity.claims.room {
            self.refuse(
                ErrorCode::WrongRoom,
                format!(
                    "this token admits to room {:?}, not {:?}; ask the issuer for a token for that room",
                    identity.claims.room, join.room
                ),
            );
            return Err(Refused);
        }
        if !self
            .relay
            .verifier
            .still_valid(&identity.claims, unix_micros() / 1_000_000)
        {
            self.refuse(
                ErrorCode::TokenExpired,
                "token expired while this connection was probe-only; fetch a new one and reconnect",
            );
            return Err(Refused);
        }
        let participant = Participant {
            peer_id: identity.peer_id.clone(),
            display_name: identity.claims.name.clone(),
            ..Default::default()
        };
        self.relay.hub.join(
            &join.room,
            self.conn,
            participant,
            join.join_seq,
            self.outbox.clone(),
        );
        self.phase = Phase::InRoom {
            identity,
            room: join.room,
        };
        Ok(())
    }

    async fn media(&mut self, room: &str, sender: &str, mut media: Media) -> Result<(), Refused> {
        if media.payload.len() > limits::MAX_MEDIA_PAYLOAD {
            self.refuse(
                ErrorCode::FrameTooLarge,
                format!("media payload exceeds {} bytes", limits::MAX_MEDIA_PAYLOAD),
            );
            return Err(Refused);
        }
        if !matches!(
            TrackKind::try_from(media.kind),
            Ok(TrackKind::Audio | TrackKind::Video)
        ) {
            return self.violation("media kind must be audio or video");
        }
        let stats = &self.relay.stats;
        Stats::add(&stats.media_packets_in, 1);
        Stats::add(&stats.media_bytes_in, media.payload.len() as u64);
        media.sender = sender.to_owned();
        let frame: Bytes = encode(&ServerFrame::of(server_frame::Kind::Media(media)));
        self.relay.hub.publish_media(room, sender, frame).await;
        Ok(())
    }

    fn violation(&mut self, what: &str) -> Result<(), Refused> {
        self.relay.stats.frames_rejected.fetch_add(1, Relaxed);
        self.refuse(
            ErrorCode::ProtocolViolation,
            format!("protocol violation: {what}"),
        );
        Err(Refused)
    }

    /// Sends an Error frame and has the writer close the connection after it.
    fn refuse(&mut self, code: ErrorCode, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(conn = self.conn, ?code, %message, "refusing connection");
        self.outbox
            .control(Control::CloseWith(encode(&ServerFrame::error(
                code, message,
            ))));
    }
}
