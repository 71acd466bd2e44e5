//! The client's side of the protocol, sans-IO: everything from the first
//! byte on a connection to the last report acknowledged.
//!
//! The [`Election`] decides *which* relay serves; the session owns the rest
//! of the protocol around it, the way quinn-proto owns QUIC's handshake:
//! - each connection's handshake ([`handshake`]): Hello, Welcome under a
//!   deadline, an Error before Welcome turned into a refusal;
//! - each connection's generation ([`connections`]), so late events of a
//!   replaced connection change nothing;
//! - which frame each election action becomes (probes, joins, demotions),
//!   what each server frame means for the election (probe answers, Drain,
//!   refusals), which frames are room traffic for the application;
//! - how each frame travels ([`route`]);
//! - the election reports kept until a relay acknowledges them and offered
//!   again now and then ([`reports`]), stamped from a seed and a wall-clock
//!   offset handed in as data;
//! - the token kept fresh so a long call outlives it ([`token`]);
//! - when the live table is worth redrawing ([`snapshots`]).
//!
//! Like the election it owns no socket and no clock: a driver (the native
//! runner, the browser driver) opens transports when asked, moves bytes and
//! time in and out, and shows the [`Update`]s. That keeps the two clients'
//! behaviour one piece of code, tested here with virtual time.

pub mod connections;
pub mod driver;
pub mod handshake;
mod media_state;
pub mod reports;
pub mod route;
mod snapshots;
pub mod token;
pub mod uplink;

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use rallypoint_protocol::copies::{self, SeenFrames};
use rallypoint_protocol::limits;
use rallypoint_protocol::v1::{
    ClientFrame, ClientInfo, ElectionReport, ErrorCode, Join, KeyframeRequest, Leave, Media,
    MediaState, Probe, Refresh, ServerFrame, TelemetryAck, TelemetryReport, TrackKind,
    client_frame, server_frame, telemetry_report,
};

use crate::Candidate;
use crate::election::{
    Action, CandidateId, CandidateView, Decision, Election, ElectionConfig, Event, Notice,
    finish_report,
};
use crate::time::Micros;
pub use connections::ConnectionId;
use connections::{Connections, Phase};
use handshake::Answer;
pub use handshake::Identity;
use media_state::MediaStatePacer;
use reports::{ReportIds, ReportQueue};
pub use route::Route;
pub use snapshots::SNAPSHOT_EVERY;
use snapshots::SnapshotPacer;
use token::TokenKeeper;
use uplink::UplinkQueue;

/// At most one [`Update::Preparing`] (a keyframe of every picture) per
/// this interval. On a rough path (5% loss each way, 30 ms jitter) a talker
/// whom nobody answers with media hears only its probe answers, and its
/// relay turns suspect by chance about twice a second (measured by
/// `a_rough_path_causes_no_false_failover_for_a_talker_alone`): a keyframe
/// each time would be several times the video's bitrate. With anyone else's
/// audio in the call it is once in twenty ten-minute calls.
pub const PREPARE_KEYFRAME_EVERY: Duration = Duration::from_secs(2);

/// How often reports refused for a passing reason are offered again.
pub const REPORT_RETRY: Duration = Duration::from_secs(20);

/// What a session is started with.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub election: ElectionConfig,
    pub identity: Identity,
    /// Joined through the winner; `None` only measures (`rallypoint probe`).
    pub room: Option<String>,
    /// A connection that has not said Welcome this long after it was asked
    /// for has failed.
    pub connect_timeout: Duration,
    /// 16 random bytes, once per call: report ids derive from them.
    pub report_seed: [u8; 16],
    /// The wall clock (unix ms) at the driver's time zero: reports are
    /// stamped with it and token expiry (unix seconds) becomes driver time.
    pub wall_at_zero_ms: u64,
}

/// What the driver does on the network for the session.
// Nearly every transmit is a `Send`; boxing its frame would add an
// allocation per media frame to save space only on the rare others.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Transmit {
    /// Open a transport to the candidate (WebSocket or WebTransport, as its
    /// [`Candidate`] says), giving up after `timeout`; answer with
    /// [`Session::opened`] or [`Session::open_failed`]. The handshake on it
    /// is the session's.
    Open {
        connection: ConnectionId,
        timeout: Duration,
    },
    /// Send the frame on the connection, the way `route` says.
    Send {
        connection: ConnectionId,
        frame: ClientFrame,
        route: Route,
    },
    /// Drop the connection.
    Close(ConnectionId),
    /// Get a fresh token for the same user and room (the current one
    /// expires at `expires_unix`, unix seconds) and hand it in with
    /// [`Session::refresh_token`]; asked again later while none comes. A
    /// driver that cannot get tokens ignores it: relays then end the call
    /// with `TokenExpired`.
    FetchToken { expires_unix: u64 },
}

/// What the application hears.
// A decision carries its full report; updates come a few times per
// election, so boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// The election decided (initially, or a switch); the room is joined
    /// through `candidate` when the session has a room.
    Decided {
        decision: Decision,
        candidate: Candidate,
        report: ElectionReport,
    },
    CandidateFailed {
        candidate: Candidate,
        reason: String,
    },
    /// A relay refused this client with an Error frame, in answer to Hello
    /// (bad or expired token, unsupported version, …) or later (token
    /// expired, wrong room, …).
    Refused {
        candidate: Candidate,
        code: ErrorCode,
        message: String,
    },
    NoRelayReachable {
        retry_in: Duration,
        attempt: u32,
    },
    /// The serving relay went silent: until it answers or the call moves,
    /// media goes through `candidate` as well. Pictures should start afresh
    /// with a keyframe: frames sent into the silence are lost. Told at most
    /// once per [`PREPARE_KEYFRAME_EVERY`] (media goes both ways each time).
    Preparing {
        candidate: Candidate,
    },
    /// Election reports: delivered, still kept, and the acknowledgement that
    /// changed them (none when reports were only sent).
    Reports {
        delivered: u32,
        pending: usize,
        ack: Option<TelemetryAck>,
    },
    /// Every candidate's state and statistics: at once when the election
    /// acts, at most every [`SNAPSHOT_EVERY`] when only measurements move.
    Snapshot(Vec<CandidateView>),
}

/// What the application asks of a driver (the native runner, the browser
/// driver), whose session carries it out.
#[derive(Debug)]
pub enum Command {
    /// Send a media frame through the serving relay (dropped while none
    /// serves).
    SendMedia(Media),
    /// Ask a participant for a keyframe of `kind`.
    RequestKeyframe { peer_id: String, kind: TrackKind },
    /// The microphone or camera changed: the room is told now and at every
    /// later join (a move to another relay carries it on).
    SetMediaState(MediaState),
    /// Hang up and stop.
    Stop,
}

/// What a driver tells the application; `R` is its transport's received
/// frame (stamped with its arrival in the driver's clock).
// Sized by the decision's report; at call rates (tens of room frames per
// second) the bigger channel slot costs nothing worth a box per update.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Output<R> {
    /// What the session said: a decision (the room is joined through the
    /// winner when there is a room), a failed or refusing candidate, no
    /// relay reachable, election reports delivered, the live table.
    Session(Update),
    /// A frame from the room through the serving relay (media, presence,
    /// keyframe requests).
    Room(R),
}

/// Where a server frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameUse {
    /// The session's (or nobody's: a replaced connection's, a standby's
    /// room traffic).
    Consumed,
    /// Room traffic (media, presence, keyframe requests) from the serving
    /// relay, or media from a prepared standby, each frame once: the
    /// application's.
    Room,
}

pub struct Session {
    election: Election,
    session_id: Bytes,
    info: ClientInfo,
    room: Option<String>,
    /// Microphone and camera, as the room should see them, told within the
    /// relay's budget.
    media_states: MediaStatePacer,
    connect_timeout: Duration,
    connections: Connections,
    serving: Option<CandidateId>,
    /// Per candidate, how long what is sent waits on its way up to its
    /// relay, as its probe answers show (kept from before it serves: the
    /// answers of a connection carrying no media are its path's base);
    /// media is held back while the serving one's is too long ([`uplink`]).
    uplinks: Vec<UplinkQueue>,
    /// Media frames held back for that, for the driver's statistics.
    media_held_back: u64,
    /// Picture tracks (by kind) one of whose frames was held back: their
    /// deltas are held too until a keyframe goes.
    awaiting_keyframe: Vec<i32>,
    /// The standby the media also goes through while the serving relay is
    /// suspect (make-before-break, [`Action::Prepare`]).
    preparing: Option<CandidateId>,
    /// When [`Update::Preparing`] was last told.
    prepared_pictures_at: Option<Micros>,
    /// Room media already passed on: while a standby is prepared, the room's
    /// frames come through it and the serving relay both.
    seen: SeenFrames,
    /// When `seen` was last told that time passed.
    seen_ticked_at: Micros,
    reports: ReportQueue,
    report_ids: ReportIds,
    /// When kept reports are next offered again (while any are kept).
    report_retry_at: Option<Micros>,
    wall_at_zero_ms: u64,
    tokens: TokenKeeper,
    snapshots: SnapshotPacer,
    transmits: VecDeque<Transmit>,
    updates: VecDeque<Update>,
}

impl Session {
    pub fn new(candidates: Vec<Candidate>, config: SessionConfig) -> Self {
        let SessionConfig {
            election,
            identity,
            room,
            connect_timeout,
            report_seed,
            wall_at_zero_ms,
        } = config;
        let transports = candidates.iter().map(|c| c.transport).collect();
        let tokens = TokenKeeper::new(identity.token, candidates.len());
        let uplinks = vec![UplinkQueue::default(); candidates.len()];
        let context = handshake::report_context(&identity.info);
        Session {
            election: Election::new(candidates, election, identity.session_id.clone(), context),
            session_id: identity.session_id,
            info: identity.info,
            room,
            media_states: MediaStatePacer::default(),
            connect_timeout,
            connections: Connections::new(transports),
            serving: None,
            uplinks,
            media_held_back: 0,
            awaiting_keyframe: Vec::new(),
            preparing: None,
            prepared_pictures_at: None,
            seen: SeenFrames::default(),
            seen_ticked_at: Micros::ZERO,
            reports: ReportQueue::default(),
            report_ids: ReportIds::new(report_seed),
            report_retry_at: None,
            wall_at_zero_ms,
            tokens,
            snapshots: SnapshotPacer::default(),
            transmits: VecDeque::new(),
            updates: VecDeque::new(),
        }
    }

    /// Starts the tournament: every candidate is connected at once.
    pub fn start(&mut self, now: Micros) {
        self.election.start(now);
        self.drain(now);
    }

    /// The transport the session asked for is open; datagrams on it carry
    /// at most `max_datagram` bytes (0 without datagrams). The session says
    /// Hello on it. `false` when the session no longer wants the connection
    /// (it gave up on it or replaced it): the driver drops it.
    pub fn opened(&mut self, connection: ConnectionId, max_datagram: usize, now: Micros) -> bool {
        if !self.connections.opened(connection, max_datagram) {
            return false;
        }
        self.tokens.presenting(connection.candidate);
        let hello = handshake::hello(self.tokens.token(), &self.session_id, &self.info);
        self.send_on(connection, hello);
        self.drain(now);
        true
    }

    /// The transport could not be opened.
    pub fn open_failed(&mut self, connection: ConnectionId, reason: String, now: Micros) {
        if self.connections.phase(connection).is_some() {
            self.connections.close(connection.candidate);
            self.connect_failed(connection.candidate, reason, now);
        }
    }

    /// The connection ended without the session asking.
    pub fn closed(&mut self, connection: ConnectionId, now: Micros) {
        let Some(phase) = self.connections.phase(connection) else {
            return;
        };
        self.connections.close(connection.candidate);
        if phase == Phase::Open {
            self.lost(
                connection.candidate,
                "connection closed by the relay or the network".into(),
                now,
            );
        } else {
            self.connect_failed(
                connection.candidate,
                "connection closed before Welcome".into(),
                now,
            );
        }
    }

    /// The newest token: what a new connection presents in Hello.
    pub fn token(&self) -> &str {
        self.tokens.token()
    }

    /// A fresh token for the same user and room (after
    /// [`Transmit::FetchToken`], or whenever the application has one): every
    /// open connection, serving or not, is refreshed with it, and new ones
    /// present it.
    pub fn refresh_token(&mut self, token: String) {
        self.tokens.replace(token);
        for id in 0..self.connections.candidates() {
            if self.connections.is_open(id) {
                self.send_refresh(id);
            }
        }
    }

    /// A frame from `connection`, read off the socket at `received_at`
    /// (not when the driver got to it: probe RTTs must not include a busy
    /// loop's delay).
    pub fn frame(
        &mut self,
        connection: ConnectionId,
        frame: &ServerFrame,
        received_at: Micros,
        now: Micros,
    ) -> FrameUse {
        let Some(kind) = &frame.kind else {
            return FrameUse::Consumed;
        };
        match self.connections.phase(connection) {
            Some(Phase::Open) => {}
            Some(Phase::Greeting) => {
                self.greeting(connection, kind, now);
                self.drain(now);
                return FrameUse::Consumed;
            }
            Some(Phase::Opening) | None => return FrameUse::Consumed,
        }
        let id = connection.candidate;
        if Some(id) == self.serving {
            let heard = Event::Heard {
                candidate: id,
                at: received_at,
            };
            self.election.handle(heard, now);
        }
        let used = match kind {
            server_frame::Kind::ProbeAck(ack) => {
                let relay_hold =
                    Duration::from_micros(ack.relay_send_us.saturating_sub(ack.relay_recv_us));
                // A send time after the answer came is no probe of ours.
                if ack.client_send_us <= received_at.0 {
                    let round_trip = received_at
                        .since(Micros(ack.client_send_us))
                        .saturating_sub(relay_hold);
                    self.uplinks[id].answered(
                        now,
                        ack.client_send_us,
                        ack.relay_recv_us,
                        round_trip,
                    );
                }
                let event = Event::ProbeAck {
                    candidate: id,
                    seq: ack.seq,
                    relay_hold,
                    received_at,
                };
                self.election.handle(event, now);
                if self.snapshots.measured(now) {
                    self.push_snapshot();
                }
                FrameUse::Consumed
            }
            server_frame::Kind::Drain(_) => {
                self.election.handle(Event::Drain { candidate: id }, now);
                FrameUse::Consumed
            }
            server_frame::Kind::Error(_) => {
                if let Some((code, message)) = handshake::refusal(kind) {
                    self.refused(connection, code, message.clone());
                    self.lost(id, format!("relay refused: {message}"), now);
                }
                FrameUse::Consumed
            }
            server_frame::Kind::TelemetryAck(ack) => {
                self.reports.on_ack(ack);
                self.arm_report_retry(now);
                self.report_progress(Some(ack.clone()));
                FrameUse::Consumed
            }
            server_frame::Kind::TokenRefreshed(refreshed) => {
                self.token_expiry(id, refreshed.token_expires_unix, now);
                FrameUse::Consumed
            }
            server_frame::Kind::Welcome(_) => FrameUse::Consumed,
            server_frame::Kind::Media(media)
                if Some(id) == self.serving || Some(id) == self.preparing =>
            {
                self.first_copy(media, now)
            }
            _ if Some(id) == self.serving => FrameUse::Room,
            _ => FrameUse::Consumed,
        };
        self.drain(now);
        used
    }

    /// A room media frame is the application's unless it already came the
    /// other way (a prepared standby and the serving relay both forward it).
    fn first_copy(&mut self, media: &Media, now: Micros) -> FrameUse {
        if now.since(self.seen_ticked_at) >= copies::TICK_EVERY {
            self.seen_ticked_at = now;
            self.seen.tick();
        }
        let track = (media.sender.clone(), media.kind);
        if self.seen.first_copy(&track, media.seq) {
            FrameUse::Room
        } else {
            FrameUse::Consumed
        }
    }

    /// Carries out what the application asks ([`Command::Stop`] is the
    /// driver's own: it ends its loop).
    pub fn command(&mut self, command: Command, now: Micros) {
        match command {
            Command::SendMedia(media) => self.send_to_room(client_frame::Kind::Media(media), now),
            Command::RequestKeyframe { peer_id, kind } => self.send_to_room(
                client_frame::Kind::KeyframeRequest(KeyframeRequest {
                    peer_id,
                    kind: kind as i32,
                }),
                now,
            ),
            Command::SetMediaState(state) => {
                // Without a serving relay it is dropped; the next Join
                // carries the current state anyway.
                if let Some(state) = self.media_states.set(state, now) {
                    self.send_to_room(client_frame::Kind::MediaState(state), now);
                }
            }
            Command::Stop => {}
        }
    }

    /// Sends `kind` (media, a keyframe request, a media state) through the
    /// serving relay; dropped while none serves.
    pub fn send_to_room(&mut self, kind: client_frame::Kind, now: Micros) {
        let (Some(serving_id), Some(serving)) = (self.serving, self.serving_connection()) else {
            return;
        };
        if !matches!(kind, client_frame::Kind::Media(_)) {
            self.send_on(serving, ClientFrame::of(kind));
            self.drain(now);
            return;
        }
        // Talking still: the serving relay is probed as fast, which is how
        // a held-back uplink is seen to drain.
        self.election.handle(Event::MediaSent { at: now }, now);
        let len = kind.encoded_len();
        // Each connection's own uplink decides for it: a prepared standby
        // (make-before-break) still gets what its path has time for.
        let to_serving = !self.held_back(serving_id, &kind, now);
        let to_standby = self
            .preparing
            .and_then(|id| Some((id, self.connections.open_one(id)?)))
            .filter(|&(id, _)| self.uplinks[id].frame_may_go(now, len, is_picture(&kind)));
        if let Some((id, standby)) = to_standby {
            self.uplinks[id].sent(now, len);
            self.send_on(standby, ClientFrame::of(kind.clone()));
        }
        if to_serving {
            self.uplinks[serving_id].sent(now, len);
            self.send_on(serving, ClientFrame::of(kind));
        } else {
            self.media_held_back += 1;
        }
        self.drain(now);
    }

    pub fn poll_timeout(&self) -> Option<Micros> {
        [
            self.election.poll_timeout(),
            self.tokens.poll_timeout(),
            self.connections.poll_timeout(),
            self.report_retry_at,
            self.snapshots.poll_timeout(),
            self.media_states.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle_timeout(&mut self, now: Micros) {
        for overdue in self.connections.overdue(now) {
            self.connections.close(overdue.candidate);
            self.transmits.push_back(Transmit::Close(overdue));
            let reason = format!(
                "no Welcome within {:.1} s",
                self.connect_timeout.as_secs_f64()
            );
            self.connect_failed(overdue.candidate, reason, now);
        }
        self.election.handle_timeout(now);
        if let Some(expires_unix) = self.tokens.handle_timeout(now) {
            self.transmits
                .push_back(Transmit::FetchToken { expires_unix });
        }
        if self.report_retry_at.is_some_and(|at| at <= now) {
            self.report_retry_at = None;
            self.flush_reports();
            self.arm_report_retry(now);
        }
        if self.snapshots.handle_timeout(now) {
            self.push_snapshot();
        }
        if let Some(state) = self.media_states.handle_timeout(now) {
            self.send_to_room(client_frame::Kind::MediaState(state), now);
        }
        self.drain(now);
    }

    /// Hanging up: the frame that tells the room at once, and the connection
    /// to send it on (then close). Nothing without a room or a serving relay.
    pub fn hang_up(&mut self) -> Option<(ConnectionId, ClientFrame)> {
        let serving = self.serving_connection()?;
        self.serving = None;
        self.room.as_ref()?;
        Some((
            serving,
            ClientFrame::of(client_frame::Kind::Leave(Leave { moving: false })),
        ))
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_update(&mut self) -> Option<Update> {
        self.updates.pop_front()
    }

    pub fn snapshot(&self) -> Vec<CandidateView> {
        self.election.snapshot()
    }

    pub fn candidate(&self, id: CandidateId) -> &Candidate {
        self.election.candidate(id)
    }

    /// The relay serving the room, if its connection is up.
    pub fn serving(&self) -> Option<CandidateId> {
        self.serving_connection().map(|c| c.candidate)
    }

    /// Media frames held back because the uplink to the serving relay was
    /// queueing too long ([`uplink`]).
    pub fn media_held_back(&self) -> u64 {
        self.media_held_back
    }

    /// How long the latest probe answered by the serving relay waited on
    /// its way up.
    pub fn uplink_wait(&self) -> Duration {
        self.serving
            .map_or(Duration::ZERO, |id| self.uplinks[id].wait())
    }

    pub fn reports_pending(&self) -> usize {
        self.reports.pending()
    }

    /// The wall clock (unix ms) at driver time `now`.
    fn wall_ms(&self, now: Micros) -> u64 {
        self.wall_at_zero_ms + now.as_millis()
    }

    /// What a relay said to the Hello on `connection`.
    fn greeting(&mut self, connection: ConnectionId, kind: &server_frame::Kind, now: Micros) {
        let id = connection.candidate;
        match handshake::answer(kind) {
            Some(Answer::Welcome(welcome)) => {
                self.connections.welcomed(connection);
                self.token_expiry(id, welcome.token_expires_unix, now);
                let probes_answered = limits::probes_answered(welcome.probes_per_second);
                self.election.handle(
                    Event::Connected {
                        candidate: id,
                        probes_answered,
                    },
                    now,
                );
            }
            Some(Answer::Refused { code, message }) => {
                self.refused(connection, code, message.clone());
                self.connect_failed(id, format!("relay refused: {message}"), now);
            }
            None => {}
        }
    }

    /// A relay refused this client on `connection`: the application hears
    /// it and the connection is dropped.
    fn refused(&mut self, connection: ConnectionId, code: ErrorCode, message: String) {
        self.updates.push_back(Update::Refused {
            candidate: self.election.candidate(connection.candidate).clone(),
            code,
            message,
        });
        self.connections.close(connection.candidate);
        self.transmits.push_back(Transmit::Close(connection));
    }

    fn connect_failed(&mut self, id: CandidateId, reason: String, now: Micros) {
        self.election.handle(
            Event::ConnectFailed {
                candidate: id,
                reason,
            },
            now,
        );
        self.drain(now);
    }

    /// A relay said when the token of `id`'s connection expires; a
    /// connection still on an older token gets the newest at once.
    fn token_expiry(&mut self, id: CandidateId, expires_unix: u64, now: Micros) {
        if self.tokens.expiry(id, expires_unix, self.wall_ms(now), now) {
            self.send_refresh(id);
        }
    }

    fn send_refresh(&mut self, id: CandidateId) {
        let Some(connection) = self.connections.open_one(id) else {
            return;
        };
        self.tokens.presenting(id);
        let token = self.tokens.token().to_owned();
        self.send_on(
            connection,
            ClientFrame::of(client_frame::Kind::Refresh(Refresh { token })),
        );
    }

    /// Sends `frame` on `connection` the way the protocol routes it.
    fn send_on(&mut self, connection: ConnectionId, frame: ClientFrame) {
        let route = self.connections.route(connection, &frame);
        self.transmits.push_back(Transmit::Send {
            connection,
            frame,
            route,
        });
    }

    /// Sends `frame` on the candidate's connection once it said Welcome.
    fn send_to(&mut self, id: CandidateId, frame: ClientFrame) {
        if let Some(connection) = self.connections.open_one(id) {
            self.send_on(connection, frame);
        }
    }

    /// Whether a media frame is held back: the serving relay's uplink has
    /// no time for it ([`uplink`]), or it is a picture's delta after a frame
    /// of its track was held back (useless until the next keyframe).
    fn held_back(&mut self, serving: CandidateId, kind: &client_frame::Kind, now: Micros) -> bool {
        let client_frame::Kind::Media(media) = kind else {
            return false;
        };
        let track = media.kind;
        let picture = is_picture(kind);
        let waiting = self.awaiting_keyframe.contains(&track);
        let held = (picture && waiting && !media.keyframe)
            || !self.uplinks[serving].frame_may_go(now, kind.encoded_len(), picture);
        if picture {
            match held {
                true if !waiting => self.awaiting_keyframe.push(track),
                false if waiting => self.awaiting_keyframe.retain(|&t| t != track),
                _ => {}
            }
        }
        held
    }

    fn serving_connection(&self) -> Option<ConnectionId> {
        self.connections.open_one(self.serving?)
    }

    fn lost(&mut self, id: CandidateId, reason: String, now: Micros) {
        if let Some(connection) = self.connections.close(id) {
            self.transmits.push_back(Transmit::Close(connection));
        }
        // Its next connection will be in no room (the election prepares
        // another standby if it still needs one).
        if self.preparing == Some(id) {
            self.preparing = None;
        }
        self.election.handle(
            Event::ConnectionLost {
                candidate: id,
                reason,
            },
            now,
        );
        self.drain(now);
    }

    /// Turns the election's actions into transmits and its notices into
    /// updates; the live table is redrawn after any.
    fn drain(&mut self, now: Micros) {
        let mut acted = false;
        while let Some(action) = self.election.poll_action() {
            // Sending a probe changes nothing people see; its answer does,
            // and is paced.
            acted |= !matches!(action, Action::SendProbe { .. });
            self.act(action, now);
        }
        while let Some(notice) = self.election.poll_notice() {
            acted = true;
            self.notice(notice, now);
        }
        if acted && self.snapshots.acted(now) {
            self.push_snapshot();
        }
    }

    fn act(&mut self, action: Action, now: Micros) {
        match action {
            Action::Open { candidate } => {
                // A new connection: its queue is measured anew.
                self.uplinks[candidate] = UplinkQueue::default();
                let (connection, replaced) =
                    self.connections.open(candidate, now, self.connect_timeout);
                if let Some(replaced) = replaced {
                    self.transmits.push_back(Transmit::Close(replaced));
                }
                self.transmits.push_back(Transmit::Open {
                    connection,
                    timeout: self.connect_timeout,
                });
            }
            Action::SendProbe { candidate, seq } => {
                let probe = ClientFrame::of(client_frame::Kind::Probe(Probe {
                    seq,
                    client_send_us: now.0,
                }));
                self.send_to(candidate, probe);
            }
            Action::Join {
                candidate,
                join_seq,
            } => {
                self.serving = Some(candidate);
                if self.preparing == Some(candidate) {
                    self.preparing = None; // the Join below makes it the move
                }
                if let Some(room) = self.room.clone() {
                    self.send_to(
                        candidate,
                        ClientFrame::of(client_frame::Kind::Join(Join {
                            room,
                            join_seq,
                            state: Some(self.media_states.current()),
                            prepare: false,
                        })),
                    );
                    self.media_states.joined();
                }
                // Whatever was in flight on the previous relay may be lost.
                self.reports.resend_all();
                self.flush_reports();
            }
            Action::Demote { candidate } => {
                if self.room.is_some() {
                    self.send_to(
                        candidate,
                        ClientFrame::of(client_frame::Kind::Leave(Leave { moving: true })),
                    );
                }
            }
            Action::Prepare { candidate } => {
                let Some(room) = self.room.clone() else {
                    return;
                };
                self.preparing = Some(candidate);
                self.send_to(
                    candidate,
                    ClientFrame::of(client_frame::Kind::Join(Join {
                        room,
                        prepare: true,
                        ..Join::default()
                    })),
                );
                let due = self
                    .prepared_pictures_at
                    .is_none_or(|at| now.since(at) >= PREPARE_KEYFRAME_EVERY);
                if due {
                    self.prepared_pictures_at = Some(now);
                    self.updates.push_back(Update::Preparing {
                        candidate: self.election.candidate(candidate).clone(),
                    });
                }
            }
            Action::Unprepare { candidate } => {
                if self.preparing == Some(candidate) {
                    self.preparing = None;
                    self.send_to(
                        candidate,
                        ClientFrame::of(client_frame::Kind::Leave(Leave { moving: true })),
                    );
                }
            }
            Action::Close { candidate } => {
                if self.serving == Some(candidate) {
                    self.serving = None;
                }
                if self.preparing == Some(candidate) {
                    self.preparing = None;
                }
                if let Some(connection) = self.connections.close(candidate) {
                    self.transmits.push_back(Transmit::Close(connection));
                }
            }
        }
    }

    fn notice(&mut self, notice: Notice, now: Micros) {
        match notice {
            Notice::Decided { decision, report } => {
                let report = self.keep_report(report, now);
                let candidate = self.election.candidate(decision.winner).clone();
                self.updates.push_back(Update::Decided {
                    decision,
                    candidate,
                    report,
                });
            }
            Notice::CandidateFailed { candidate, reason } => {
                let candidate = self.election.candidate(candidate).clone();
                self.updates
                    .push_back(Update::CandidateFailed { candidate, reason });
            }
            Notice::NoRelayReachable {
                retry_in,
                attempt,
                report,
            } => {
                self.keep_report(report, now);
                self.updates
                    .push_back(Update::NoRelayReachable { retry_in, attempt });
            }
        }
    }

    /// Offers the kept reports that are not in flight to the serving relay.
    fn flush_reports(&mut self) {
        let Some(serving) = self.serving_connection() else {
            return;
        };
        let unsent = self.reports.take_unsent();
        if unsent.is_empty() {
            return;
        }
        for report in unsent {
            self.send_on(
                serving,
                ClientFrame::of(client_frame::Kind::Telemetry(TelemetryReport {
                    kind: Some(telemetry_report::Kind::Election(report)),
                })),
            );
        }
        self.report_progress(None);
    }

    /// Reports refused for a passing reason (or sent to a relay that went
    /// away) are offered again every [`REPORT_RETRY`] while any are kept.
    fn arm_report_retry(&mut self, now: Micros) {
        if self.reports.pending() == 0 {
            self.report_retry_at = None;
        } else if self.report_retry_at.is_none() {
            self.report_retry_at = Some(now + REPORT_RETRY);
        }
    }

    /// Stamps a report and keeps it until a relay acknowledges it.
    fn keep_report(&mut self, mut report: ElectionReport, now: Micros) -> ElectionReport {
        finish_report(&mut report, self.report_ids.next_id(), self.wall_ms(now));
        self.reports.push(report.clone());
        self.flush_reports();
        self.arm_report_retry(now);
        report
    }

    fn report_progress(&mut self, ack: Option<TelemetryAck>) {
        self.updates.push_back(Update::Reports {
            delivered: self.reports.delivered(),
            pending: self.reports.pending(),
            ack,
        });
    }

    fn push_snapshot(&mut self) {
        self.updates
            .push_back(Update::Snapshot(self.election.snapshot()));
    }
}

/// A camera's or a screen's frame, which is shown only with the frames
/// before it back to a keyframe.
fn is_picture(kind: &client_frame::Kind) -> bool {
    matches!(kind, client_frame::Kind::Media(media)
        if matches!(media.kind(), TrackKind::Video | TrackKind::Screen))
}

#[cfg(test)]
mod tests;
