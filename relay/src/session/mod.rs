//! One client connection, whatever its transport.
//!
//! The transport adapters (`transport::ws`, `transport::wt`) decode frames and
//! hand them to [`run`] as [`Inbound`] items, and write whatever the session
//! queues on its [`crate::outbox::Outbox`]. The session enforces the protocol:
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

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bytes::Bytes;
use rallypoint_protocol::v1::{
    ClientFrame, Drain, ErrorCode, Hello, Media, Participant, ProbeAck, Refresh, ServerFrame,
    TelemetryRefusal, TokenRefreshed, TrackKind, Welcome, client_frame, server_frame,
    telemetry_report,
};
use rallypoint_protocol::{FrameError, PROTOCOL_VERSION, encode, limits};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::peer_id;
use crate::budget::SubjectSlot;
use crate::config::TransportKind;
use crate::intake::ReportSource;
use crate::metrics::Stats;
use crate::outbox::{Control, Outbox};
use crate::rate::RateLimiter;
use crate::rooms::{ListenerGate, MediaFacts, RoomDoor};
use crate::state::RelayState;
use rallypoint_protocol::token::Claims;
use rallypoint_service::clock::unix_micros;

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
    /// Fired once Hello is accepted: the transport starts reading what only
    /// an authenticated client may send (WebTransport datagrams and streams).
    pub welcomed: CancellationToken,
    /// Set from Hello: the client reads a group of pictures on one
    /// unidirectional stream (`Hello.media_stream_groups`); WebTransport's
    /// writer asks it for each large picture frame.
    pub media_stream_groups: Arc<AtomicBool>,
}

enum Phase {
    AwaitingHello,
    ProbeOnly(Identity),
    InRoom { identity: Identity, room: String },
}

struct Identity {
    claims: Claims,
    peer_id: String,
    /// This connection's share of its subject's connection budget.
    _subject: SubjectSlot,
}

/// The per-connection budgets after authentication (see `--help`).
/// Microphone/camera changes a connection may announce: a person clicking
/// fast stays within it; over it, changes are dropped and counted.
const MEDIA_STATES_PER_SECOND: u32 = 2;
const MEDIA_STATES_BURST: u32 = 10;

struct Budgets {
    keyframe_requests: RateLimiter,
    media_states: RateLimiter,
    probes: RateLimiter,
    media_frames: RateLimiter,
    media_bytes: RateLimiter,
}

impl Budgets {
    fn new(config: &crate::config::RelayConfig, now: Instant) -> Self {
        let limits = &config.limits;
        let per_second =
            |rate: u32, burst: u32| RateLimiter::new(f64::from(burst), f64::from(rate), now);
        Budgets {
            keyframe_requests: per_second(
                limits.keyframe_requests_per_second,
                limits.keyframe_requests_per_second.saturating_mul(10),
            ),
            // People toggle their microphone or camera a few times a minute;
            // a burst of toggles is allowed, a stream of them is not.
            media_states: per_second(MEDIA_STATES_PER_SECOND, MEDIA_STATES_BURST),
            // A stalled WebSocket delivers its probes in a bunch (see
            // `limits::PROBE_ANSWER_BURST_SECONDS`).
            probes: per_second(
                limits.probes_per_second,
                rallypoint_protocol::limits::probe_answer_burst(limits.probes_per_second),
            ),
            media_frames: per_second(
                limits.media_frames_per_second,
                limits.media_frames_per_second,
            ),
            media_bytes: RateLimiter::new(
                (2 * limits::MAX_MEDIA_PAYLOAD) as f64,
                f64::from(limits.media_bytes_per_second),
                now,
            ),
        }
    }
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
        budgets: Budgets::new(&relay.config, Instant::now()),
        info,
        conn,
        outbox: outbox.clone(),
        phase: Phase::AwaitingHello,
        media_states_sent: 0,
        token_expiry: None,
        preparing_for: None,
        room_door: RoomDoor::default(),
    };
    let mut draining = relay.draining.clone();
    let mut cut_off = relay.cut_off.clone();
    let limits = &relay.config.limits;
    let hello_deadline = tokio::time::sleep(limits.hello_timeout);
    tokio::pin!(hello_deadline);
    let idle = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle);
    // Armed at Hello and at each Refresh (far away until then).
    let token_deadline = tokio::time::sleep(FAR_FUTURE);
    tokio::pin!(token_deadline);
    let mut armed_expiry = None;
    let mut drained = false;
    let mut cut_off_gone = false;

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
                    if session.token_expiry != armed_expiry {
                        armed_expiry = session.token_expiry;
                        if let Some(expiry) = armed_expiry {
                            token_deadline.as_mut().reset(deadline_at_unix(expiry));
                        }
                    }
                }
            },
            _ = &mut token_deadline, if armed_expiry.is_some() => {
                session.refuse(
                    ErrorCode::TokenExpired,
                    "token expired during the call; send Refresh with a fresh token before it expires",
                );
                break SessionEnd::Refused;
            }
            changed = cut_off.changed(), if !cut_off_gone => {
                if changed.is_err() {
                    cut_off_gone = true;
                    continue;
                }
                let is_cut_off = *cut_off.borrow_and_update();
                if is_cut_off && matches!(session.phase, Phase::InRoom { .. }) {
                    relay.stats.drains_sent.fetch_add(1, Relaxed);
                    outbox.frame(encode(&ServerFrame::of(server_frame::Kind::Drain(Drain {
                        reason: "this relay lost its connection to the other relays; move now".into(),
                        deadline_ms: 0,
                    }))));
                }
            }
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
            // A room task refused the client (a full room, NATS lost): it
            // is gone now, not once the writer gets to the Error frame.
            _ = outbox.refused() => break SessionEnd::Refused,
            _ = outbox.killed() => break SessionEnd::Vanished,
        }
    };

    if let Phase::InRoom { identity, room } = &session.phase {
        // Without a Leave this may be a move to another relay: the room's grace
        // period tells a move from a departure.
        relay.hub.lost(room, conn, &identity.peer_id);
    } else if let Some(preparing) = &session.preparing_for {
        relay.hub.unlisten(&preparing.room, conn);
    }
    end
}

/// "Never", for a timer that is not armed yet (tokio's own far future is
/// about 30 years; this is plenty and overflow-safe).
const FAR_FUTURE: std::time::Duration = std::time::Duration::from_secs(86_400 * 365);

/// The tokio instant at which the wall clock reads `unix_seconds`.
fn deadline_at_unix(unix_seconds: u64) -> tokio::time::Instant {
    let now_us = unix_micros();
    let left = unix_seconds
        .saturating_mul(1_000_000)
        .saturating_sub(now_us)
        .min(FAR_FUTURE.as_micros() as u64);
    tokio::time::Instant::now() + std::time::Duration::from_micros(left)
}

struct Session {
    relay: Arc<RelayState>,
    info: ConnectionInfo,
    conn: u64,
    outbox: Outbox,
    phase: Phase,
    budgets: Budgets,
    /// Microphone/camera changes passed to the room so far: their order,
    /// which the room's queue may not keep when it is full.
    media_states_sent: u64,
    /// When the connection's token expires, leeway included (unix seconds).
    token_expiry: Option<u64>,
    /// The room a probe-only connection forwards media into while its client
    /// prepares a move here (`Join.prepare`, make-before-break): media only,
    /// the roster untouched.
    preparing_for: Option<Preparing>,
    /// The room task this connection's media goes to.
    room_door: RoomDoor,
}

/// A standby's preparation: its room, and whether the room serves it now
/// (see `rooms::listener`).
struct Preparing {
    room: String,
    gate: ListenerGate,
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
                // A relay cut off from NATS must lose elections: silence is
                // what every client already treats as a dead relay.
                if self.relay.is_cut_off() {
                    self.relay.stats.probes_withheld.fetch_add(1, Relaxed);
                    return Ok(());
                }
                if !self.budgets.probes.try_take(Instant::now()) {
                    self.relay.stats.probes_over_budget.fetch_add(1, Relaxed);
                    return Ok(());
                }
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
            (client_frame::Kind::Refresh(refresh), _) => {
                self.take_room_op()?;
                self.refresh(refresh)
            }
            (client_frame::Kind::Join(join), Phase::ProbeOnly(_)) if join.prepare => {
                self.prepare(join)
            }
            (client_frame::Kind::Join(join), Phase::ProbeOnly(_)) => {
                self.take_room_op()?;
                self.join(join)
            }
            (client_frame::Kind::Join(_), Phase::InRoom { .. }) => {
                self.violation("already in a room; send Leave before joining again")
            }
            (client_frame::Kind::Media(media), Phase::InRoom { identity, room }) => {
                let (room, sender) = (room.clone(), identity.peer_id.clone());
                self.media(&room, &sender, media).await
            }
            (client_frame::Kind::Media(media), Phase::ProbeOnly(identity)) => {
                let now = Instant::now();
                let stats = &self.relay.stats;
                match &self.preparing_for {
                    Some(Preparing { room, gate }) if gate.is_open(now) => {
                        let (room, sender) = (room.clone(), identity.peer_id.clone());
                        self.media(&room, &sender, media).await
                    }
                    // A standby the room does not serve (yet): its client
                    // keeps sending, as it would in the room — dropped, and
                    // over the budget dropped as in the room.
                    Some(_) => {
                        let unheard = if self.budgets.media_frames.try_take(now) {
                            &stats.media_unheard
                        } else {
                            &stats.media_over_budget
                        };
                        unheard.fetch_add(1, Relaxed);
                        Ok(())
                    }
                    // A WebTransport datagram or stream can overtake the
                    // Join sent on the control stream, or outlive the
                    // Leave: dropped, within the media budget; a flood is
                    // out of protocol.
                    None => {
                        if !self.budgets.media_frames.try_take(now) {
                            return self.violation(
                                "media before Join: a connection under test may only probe",
                            );
                        }
                        stats.media_not_in_room.fetch_add(1, Relaxed);
                        Ok(())
                    }
                }
            }
            (client_frame::Kind::KeyframeRequest(request), Phase::InRoom { identity, room }) => {
                if !crate::auth::is_peer_id(&request.peer_id) {
                    return self.violation("KeyframeRequest.peer_id is not a peer id");
                }
                if !self.budgets.keyframe_requests.try_take(Instant::now()) {
                    self.relay
                        .stats
                        .keyframe_requests_over_budget
                        .fetch_add(1, Relaxed);
                    return Ok(());
                }
                let kind = TrackKind::try_from(request.kind).unwrap_or(TrackKind::Video);
                self.relay
                    .hub
                    .keyframe_request(room, &identity.peer_id, &request.peer_id, kind);
                Ok(())
            }
            // A preparing client's room traffic goes through the relay it
            // still serves on; its state comes with the Join that moves here.
            (
                client_frame::Kind::KeyframeRequest(_) | client_frame::Kind::MediaState(_),
                Phase::ProbeOnly(_),
            ) if self.preparing_for.is_some() => Ok(()),
            (client_frame::Kind::KeyframeRequest(_), Phase::ProbeOnly(_)) => {
                self.violation("keyframe request before Join")
            }
            (client_frame::Kind::MediaState(state), Phase::InRoom { identity, room }) => {
                if !self.budgets.media_states.try_take(Instant::now()) {
                    self.relay
                        .stats
                        .media_states_over_budget
                        .fetch_add(1, Relaxed);
                    return Ok(());
                }
                self.media_states_sent += 1;
                self.relay.hub.media_state(
                    room,
                    self.conn,
                    &identity.peer_id,
                    state,
                    self.media_states_sent,
                );
                Ok(())
            }
            (client_frame::Kind::MediaState(_), Phase::ProbeOnly(_)) => {
                self.violation("media state before Join")
            }
            (client_frame::Kind::Leave(leave), Phase::InRoom { .. }) => {
                self.take_room_op()?;
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
                self.room_door = RoomDoor::default();
                Ok(())
            }
            (client_frame::Kind::Leave(_), Phase::ProbeOnly(_)) => {
                if let Some(preparing) = self.preparing_for.take() {
                    self.relay.hub.unlisten(&preparing.room, self.conn);
                }
                self.room_door = RoomDoor::default();
                Ok(())
            }
            (
                client_frame::Kind::Telemetry(report),
                Phase::ProbeOnly(identity) | Phase::InRoom { identity, .. },
            ) => {
                let Some(telemetry_report::Kind::Election(report)) = report.kind else {
                    return self.violation("telemetry report without content");
                };
                let limited = self.relay.report_rates.try_take(
                    self.info.client_ip,
                    &identity.claims.sub,
                    Instant::now(),
                );
                if let Err(retry) = limited {
                    self.relay.intake.refuse(
                        report.report_id,
                        TelemetryRefusal::RateLimited,
                        format!("rate limited: retry in {} ms", retry.as_millis()),
                        &self.outbox,
                    );
                    return Ok(());
                }
                let source = ReportSource {
                    client_ip: self.info.client_ip,
                    may_send_synthetic: identity.claims.synthetic,
                };
                let regions = self.relay.config.telemetry.known_regions();
                self.relay
                    .intake
                    .submit(report, source, regions, &self.outbox);
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
        let Some(subject) = self.relay.subjects.try_admit(&claims.sub) else {
            self.refuse(
                ErrorCode::RateLimited,
                format!(
                    "this token's user already has {} connections to this relay; close some first",
                    self.relay.subjects.limit()
                ),
            );
            return Err(Refused);
        };
        let peer_id = peer_id(&claims.sub, &hello.session_id);
        let token_expires_unix = claims.exp;
        self.outbox
            .frame(encode(&ServerFrame::of(server_frame::Kind::Welcome(
                Welcome {
                    peer_id: peer_id.clone(),
                    relay_id: self.relay.config.relay_id.clone(),
                    region: self.relay.config.region.clone(),
                    protocol_version: PROTOCOL_VERSION,
                    max_datagram_size: self.info.max_datagram_size,
                    token_expires_unix,
                    probes_per_second: self.relay.config.limits.probes_per_second,
                },
            ))));
        self.token_expiry = Some(self.relay.verifier.expiry_with_leeway(&claims));
        self.phase = Phase::ProbeOnly(Identity {
            claims,
            peer_id,
            _subject: subject,
        });
        self.info
            .media_stream_groups
            .store(hello.media_stream_groups, Relaxed);
        self.info.welcomed.cancel();
        Ok(())
    }

    /// A fresh token for the same user and room keeps the call going.
    fn refresh(&mut self, refresh: Refresh) -> Result<(), Refused> {
        let claims = match self.relay.verifier.verify(&refresh.token) {
            Ok(claims) => claims,
            Err(e) => {
                self.relay.stats.auth_failures.fetch_add(1, Relaxed);
                self.refuse(e.code, format!("Refresh: {}", e.message));
                return Err(Refused);
            }
        };
        let identity = match &mut self.phase {
            Phase::ProbeOnly(identity) | Phase::InRoom { identity, .. } => identity,
            Phase::AwaitingHello => unreachable!("Refresh before Hello is refused earlier"),
        };
        if claims.sub != identity.claims.sub || claims.room != identity.claims.room {
            return self.violation("Refresh must carry a token for the same user and room");
        }
        let token_expires_unix = claims.exp;
        self.token_expiry = Some(self.relay.verifier.expiry_with_leeway(&claims));
        identity.claims = claims;
        self.outbox.frame(encode(&ServerFrame::of(
            server_frame::Kind::TokenRefreshed(TokenRefreshed { token_expires_unix }),
        )));
        Ok(())
    }

    /// Join, Leave and Refresh are rare in a real call; a loop of them is an
    /// attack on everyone else in the room (each Join and Leave is announced
    /// to every relay, each Refresh costs a signature check). The budget is
    /// the token subject's, so reconnecting does not refill it.
    fn take_room_op(&mut self) -> Result<(), Refused> {
        let subject = match &self.phase {
            Phase::ProbeOnly(identity) | Phase::InRoom { identity, .. } => &identity.claims.sub,
            Phase::AwaitingHello => return Ok(()),
        };
        if self
            .relay
            .room_op_rates
            .try_take(subject, Instant::now())
            .is_ok()
        {
            return Ok(());
        }
        self.refuse(
            ErrorCode::RateLimited,
            format!(
                "more than {} Join, Leave or Refresh per minute for this user; try again later",
                self.relay.config.limits.room_ops_per_minute
            ),
        );
        Err(Refused)
    }

    /// `Join.prepare`: forward this connection's media into the room, and
    /// the room's media to it, from now on, but tell nobody — the client
    /// may move here. A preparation this relay cannot take (over the
    /// subject's budget, the room too busy) is not made, and the connection
    /// stays a standby: the client's move, if it comes, is a plain Join.
    /// (A relay that has lost NATS refuses what its rooms were asked, this
    /// included, and closes: it is no standby any more.)
    fn prepare(&mut self, join: rallypoint_protocol::v1::Join) -> Result<(), Refused> {
        let Phase::ProbeOnly(identity) = &self.phase else {
            unreachable!("prepare is only handled when probe-only");
        };
        if self.preparing_for.is_some() {
            return Ok(());
        }
        let (claims, peer_id) = (identity.claims.clone(), identity.peer_id.clone());
        self.admit(&claims, &join.room)?;
        let stats = &self.relay.stats;
        // Each preparation costs the room's task a command (and perhaps
        // every relay of the room a roster beat): a loop of them is bounded
        // per token subject, across its connections.
        if self
            .relay
            .prepare_rates
            .try_take(&claims.sub, Instant::now())
            .is_err()
        {
            stats.prepares_over_budget.fetch_add(1, Relaxed);
            return Ok(());
        }
        let Some(gate) = self.relay.hub.listen(
            &join.room,
            self.conn,
            &peer_id,
            &claims.sub,
            self.outbox.clone(),
        ) else {
            stats.prepares_room_busy.fetch_add(1, Relaxed);
            return Ok(());
        };
        stats.moves_prepared.fetch_add(1, Relaxed);
        self.preparing_for = Some(Preparing {
            room: join.room,
            gate,
        });
        self.room_door = RoomDoor::default();
        Ok(())
    }

    /// Whether `claims` may enter `room` on this relay now: the token's own
    /// room, a relay still joined to the others, a token still valid.
    fn admit(&mut self, claims: &Claims, room: &str) -> Result<(), Refused> {
        if room != claims.room {
            self.refuse(
                ErrorCode::WrongRoom,
                format!(
                    "this token admits to room {:?}, not {:?}; ask the issuer for a token for that room",
                    claims.room, room
                ),
            );
            return Err(Refused);
        }
        if self.relay.is_cut_off() {
            self.refuse(
                ErrorCode::Unavailable,
                "this relay lost its connection to the other relays; elect another relay",
            );
            return Err(Refused);
        }
        if !self
            .relay
            .verifier
            .still_valid(claims, rallypoint_service::clock::unix_seconds())
        {
            self.refuse(
                ErrorCode::TokenExpired,
                "token expired while this connection was probe-only; fetch a new one and reconnect",
            );
            return Err(Refused);
        }
        Ok(())
    }

    fn join(&mut self, join: rallypoint_protocol::v1::Join) -> Result<(), Refused> {
        let Phase::ProbeOnly(identity) = &self.phase else {
            unreachable!("join is only handled when probe-only");
        };
        let claims = identity.claims.clone();
        self.admit(&claims, &join.room)?;
        // A prepared standby's slot passes to the join in the room's task.
        let prepared = self.preparing_for.take().map(|p| p.room);
        let Phase::ProbeOnly(identity) = std::mem::replace(&mut self.phase, Phase::AwaitingHello)
        else {
            unreachable!("checked above");
        };
        let participant = Participant {
            peer_id: identity.peer_id.clone(),
            display_name: identity.claims.name.clone(),
            state: join.state,
            ..Default::default()
        };
        let joined = self.relay.hub.join(
            &join.room,
            self.conn,
            participant,
            join.join_seq,
            self.media_states_sent,
            self.outbox.clone(),
        );
        if !joined {
            if let Some(room) = prepared {
                self.relay.hub.unlisten(&room, self.conn);
            }
            self.refuse(
                ErrorCode::Unavailable,
                "this room is too busy on this relay right now; try again or elect another relay",
            );
            return Err(Refused);
        }
        self.phase = Phase::InRoom {
            identity,
            room: join.room,
        };
        self.room_door = RoomDoor::default();
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
            Ok(TrackKind::Audio | TrackKind::Video | TrackKind::Screen)
        ) {
            return self.violation("media kind must be audio, video or screen");
        }
        let stats = &self.relay.stats;
        let now = Instant::now();
        // A frame over either budget is dropped (its frame token is spent).
        let frames_ok = self.budgets.media_frames.try_take(now);
        if !frames_ok
            || !self
                .budgets
                .media_bytes
                .try_take_n(media.payload.len() as f64, now)
        {
            stats.media_over_budget.fetch_add(1, Relaxed);
            return Ok(());
        }
        Stats::add(&stats.media_packets_in, 1);
        Stats::add(&stats.media_bytes_in, media.payload.len() as u64);
        media.sender = sender.to_owned();
        let facts = MediaFacts::of(&media);
        let frame: Bytes = encode(&ServerFrame::of(server_frame::Kind::Media(media)));
        self.relay
            .hub
            .publish_media(&mut self.room_door, room, sender, facts, frame)
            .await;
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
            .refuse(encode(&ServerFrame::error(code, message)));
    }
}
