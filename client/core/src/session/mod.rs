//! The client's side of the protocol around the election, sans-IO.
//!
//! The [`Election`] decides *which* relay serves; the session says what that
//! means on the wire: which frame each election action becomes (probes, joins,
//! demotions), what each server frame means for the election (probe answers,
//! Drain, refusals), which frames are room traffic for the application, and
//! the election reports kept until a relay acknowledges them, and the token
//! kept fresh so a long call outlives it ([`token`]).
//!
//! Like the election it owns no socket and no clock: the native runner and the
//! browser driver feed it connection events and frames with the time, carry
//! out its [`Transmit`]s on their own connections, and show its [`Update`]s.
//! That keeps the two clients' behaviour one piece of code, tested here with
//! virtual time.

pub mod reports;
pub mod token;

use std::collections::VecDeque;
use std::time::Duration;

use rallypoint_protocol::v1::{
    ClientContext, ClientFrame, ElectionReport, ErrorCode, Join, Leave, Probe, Refresh,
    ServerFrame, TelemetryAck, TelemetryReport, Welcome, client_frame, server_frame,
    telemetry_report,
};

use crate::Candidate;
use crate::election::{
    Action, CandidateId, CandidateView, Decision, Election, ElectionConfig, Event, Notice,
    finish_report,
};
use crate::time::Micros;
use reports::ReportQueue;
use token::TokenKeeper;

/// How often reports refused for a passing reason are offered again.
pub const REPORT_RETRY: Duration = Duration::from_secs(20);

/// A random id and the wall-clock time (unix ms): what only the I/O layer
/// can supply. Reports are stamped with both; token expiry (unix seconds)
/// is turned into the driver's clock with the time.
pub type Stamp = Box<dyn FnMut() -> ([u8; 16], u64) + Send>;

/// What the I/O layer does on the network for the session.
// Nearly every transmit is a `Send`; boxing its frame would add an
// allocation per media frame to save space only on the rare others.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Transmit {
    /// Open a probe-only connection to the candidate (the Hello is the I/O
    /// layer's; it presents [`Session::token`], the newest); answer with
    /// [`Session::connected`] or [`Session::connect_failed`].
    Connect(CandidateId),
    /// Send the frame on the candidate's connection, if it still has one.
    Send(CandidateId, ClientFrame),
    /// Drop the candidate's connection.
    Close(CandidateId),
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
    /// A relay refused this client with an Error frame (bad or expired
    /// token, wrong room, …).
    Refused {
        candidate: Candidate,
        code: ErrorCode,
        message: String,
    },
    NoRelayReachable {
        retry_in: Duration,
        attempt: u32,
    },
    /// Election reports: delivered, still kept, and the acknowledgement that
    /// changed them (none when reports were only sent).
    Reports {
        delivered: u32,
        pending: usize,
        ack: Option<TelemetryAck>,
    },
}

/// Where a server frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameUse {
    /// The session used it; `true` when the live table changed.
    Consumed(bool),
    /// Room traffic (media, presence, keyframe requests) from the serving
    /// relay: the application's.
    Room,
}

pub struct Session {
    election: Election,
    /// Joined through the winner; `None` only measures (`rallypoint probe`).
    room: Option<String>,
    /// Candidates with a connection the I/O layer holds.
    open: Vec<bool>,
    serving: Option<CandidateId>,
    reports: ReportQueue,
    tokens: TokenKeeper,
    stamp: Stamp,
    transmits: VecDeque<Transmit>,
    updates: VecDeque<Update>,
    /// Actions or notices came out of the election since the last look.
    decided: bool,
}

impl Session {
    pub fn new(
        candidates: Vec<Candidate>,
        config: ElectionConfig,
        session_id: bytes::Bytes,
        client: ClientContext,
        room: Option<String>,
        token: String,
        stamp: Stamp,
    ) -> Self {
        let open = vec![false; candidates.len()];
        let tokens = TokenKeeper::new(token, candidates.len());
        Session {
            election: Election::new(candidates, config, session_id, client),
            room,
            open,
            serving: None,
            reports: ReportQueue::default(),
            tokens,
            stamp,
            transmits: VecDeque::new(),
            updates: VecDeque::new(),
            decided: false,
        }
    }

    /// Starts the tournament: every candidate is connected at once.
    pub fn start(&mut self, now: Micros) {
        self.election.start(now);
        self.drain(now);
    }

    /// The candidate's connection said `welcome` to its Hello.
    pub fn connected(&mut self, id: CandidateId, welcome: &Welcome, now: Micros) {
        self.open[id] = true;
        self.token_expiry(id, welcome.token_expires_unix, now);
        self.election
            .handle(Event::Connected { candidate: id }, now);
        self.drain(now);
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
        for id in 0..self.open.len() {
            if self.open[id] {
                self.send_refresh(id);
            }
        }
    }

    pub fn connect_failed(&mut self, id: CandidateId, reason: String, now: Micros) {
        self.election.handle(
            Event::ConnectFailed {
                candidate: id,
                reason,
            },
            now,
        );
        self.drain(now);
    }

    /// The candidate's connection ended without the session asking.
    pub fn closed(&mut self, id: CandidateId, now: Micros) {
        self.lost(
            id,
            "connection closed by the relay or the network".into(),
            now,
        );
    }

    /// A frame from candidate `id`, read off the socket at `received_at`
    /// (not when the I/O layer got to it: probe RTTs must not include a busy
    /// loop's delay).
    pub fn frame(
        &mut self,
        id: CandidateId,
        frame: &ServerFrame,
        received_at: Micros,
        now: Micros,
    ) -> FrameUse {
        let Some(kind) = &frame.kind else {
            return FrameUse::Consumed(false);
        };
        let used = match kind {
            server_frame::Kind::ProbeAck(ack) => {
                let event = Event::ProbeAck {
                    candidate: id,
                    seq: ack.seq,
                    relay_hold: Duration::from_micros(
                        ack.relay_send_us.saturating_sub(ack.relay_recv_us),
                    ),
                    received_at,
                };
                self.election.handle(event, now);
                FrameUse::Consumed(true)
            }
            server_frame::Kind::Drain(_) => {
                self.election.handle(Event::Drain { candidate: id }, now);
                FrameUse::Consumed(true)
            }
            server_frame::Kind::Error(error) => {
                let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified);
                self.updates.push_back(Update::Refused {
                    candidate: self.election.candidate(id).clone(),
                    code,
                    message: error.message.clone(),
                });
                self.transmits.push_back(Transmit::Close(id));
                self.lost(id, format!("relay refused: {}", error.message), now);
                FrameUse::Consumed(true)
            }
            server_frame::Kind::TelemetryAck(ack) => {
                self.reports.on_ack(ack);
                self.report_progress(Some(ack.clone()));
                FrameUse::Consumed(false)
            }
            server_frame::Kind::TokenRefreshed(refreshed) => {
                self.token_expiry(id, refreshed.token_expires_unix, now);
                FrameUse::Consumed(false)
            }
            server_frame::Kind::Welcome(_) => FrameUse::Consumed(false),
            _ if Some(id) == self.serving => FrameUse::Room,
            _ => FrameUse::Consumed(false),
        };
        self.drain(now);
        used
    }

    /// Sends `kind` (media, a keyframe request) through the serving relay;
    /// dropped while none serves.
    pub fn send_to_room(&mut self, kind: client_frame::Kind) {
        if let Some(serving) = self.serving_connection() {
            self.transmits
                .push_back(Transmit::Send(serving, ClientFrame::of(kind)));
        }
    }

    pub fn poll_timeout(&self) -> Option<Micros> {
        [self.election.poll_timeout(), self.tokens.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn handle_timeout(&mut self, now: Micros) {
        self.election.handle_timeout(now);
        if let Some(expires_unix) = self.tokens.handle_timeout(now) {
            self.transmits
                .push_back(Transmit::FetchToken { expires_unix });
        }
        self.drain(now);
    }

    /// Offers the kept reports that are not in flight to the serving relay.
    pub fn flush_reports(&mut self) {
        let Some(serving) = self.serving_connection() else {
            return;
        };
        let unsent = self.reports.take_unsent();
        if unsent.is_empty() {
            return;
        }
        for report in unsent {
            self.transmits.push_back(Transmit::Send(
                serving,
                ClientFrame::of(client_frame::Kind::Telemetry(TelemetryReport {
                    kind: Some(telemetry_report::Kind::Election(report)),
                })),
            ));
        }
        self.report_progress(None);
    }

    /// Hanging up: the frame that tells the room at once, and the connection
    /// to send it on (then close). Nothing without a room or a serving relay.
    pub fn hang_up(&mut self) -> Option<(CandidateId, ClientFrame)> {
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

    /// Whether the election acted or decided since the last call.
    pub fn take_decided(&mut self) -> bool {
        std::mem::take(&mut self.decided)
    }

    pub fn snapshot(&self) -> Vec<CandidateView> {
        self.election.snapshot()
    }

    pub fn candidate(&self, id: CandidateId) -> &Candidate {
        self.election.candidate(id)
    }

    /// The relay serving the room, if its connection is up.
    pub fn serving(&self) -> Option<CandidateId> {
        self.serving_connection()
    }

    pub fn reports_pending(&self) -> usize {
        self.reports.pending()
    }

    /// A relay said when the token of `id`'s connection expires; a
    /// connection still on an older token gets the newest at once.
    fn token_expiry(&mut self, id: CandidateId, expires_unix: u64, now: Micros) {
        let (_, wall_ms) = (self.stamp)();
        if self.tokens.expiry(id, expires_unix, wall_ms, now) {
            self.send_refresh(id);
        }
    }

    fn send_refresh(&mut self, id: CandidateId) {
        self.tokens.presenting(id);
        let token = self.tokens.token().to_owned();
        self.transmits.push_back(Transmit::Send(
            id,
            ClientFrame::of(client_frame::Kind::Refresh(Refresh { token })),
        ));
    }

    fn serving_connection(&self) -> Option<CandidateId> {
        self.serving.filter(|&id| self.open[id])
    }

    fn lost(&mut self, id: CandidateId, reason: String, now: Micros) {
        self.open[id] = false;
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
    /// updates.
    fn drain(&mut self, now: Micros) {
        while let Some(action) = self.election.poll_action() {
            self.decided = true;
            self.act(action, now);
        }
        while let Some(notice) = self.election.poll_notice() {
            self.decided = true;
            self.notice(notice);
        }
    }

    fn act(&mut self, action: Action, now: Micros) {
        match action {
            Action::Open { candidate } => {
                self.tokens.presenting(candidate);
                self.transmits.push_back(Transmit::Connect(candidate));
            }
            Action::SendProbe { candidate, seq } => self.transmits.push_back(Transmit::Send(
                candidate,
                ClientFrame::of(client_frame::Kind::Probe(Probe {
                    seq,
                    client_send_us: now.0,
                })),
            )),
            Action::Join {
                candidate,
                join_seq,
            } => {
                self.serving = Some(candidate);
                if let Some(room) = &self.room {
                    self.transmits.push_back(Transmit::Send(
                        candidate,
                        ClientFrame::of(client_frame::Kind::Join(Join {
                            room: room.clone(),
                            join_seq,
                        })),
                    ));
                }
                // Whatever was in flight on the previous relay may be lost.
                self.reports.resend_all();
                self.flush_reports();
            }
            Action::Demote { candidate } => {
                if self.room.is_some() {
                    self.transmits.push_back(Transmit::Send(
                        candidate,
                        ClientFrame::of(client_frame::Kind::Leave(Leave { moving: true })),
                    ));
                }
            }
            Action::Close { candidate } => {
                if self.serving == Some(candidate) {
                    self.serving = None;
                }
                self.open[candidate] = false;
                self.transmits.push_back(Transmit::Close(candidate));
            }
        }
    }

    fn notice(&mut self, notice: Notice) {
        match notice {
            Notice::Decided { decision, report } => {
                let report = self.keep_report(report);
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
                self.keep_report(report);
                self.updates
                    .push_back(Update::NoRelayReachable { retry_in, attempt });
            }
        }
    }

    /// Stamps a report and keeps it until a relay acknowledges it.
    fn keep_report(&mut self, mut report: ElectionReport) -> ElectionReport {
        let (id, unix_ms) = (self.stamp)();
        finish_report(&mut report, id, unix_ms);
        self.reports.push(report.clone());
        self.flush_reports();
        report
    }

    fn report_progress(&mut self, ack: Option<TelemetryAck>) {
        self.updates.push_back(Update::Reports {
            delivered: self.reports.delivered(),
            pending: self.reports.pending(),
            ack,
        });
    }
}

#[cfg(test)]
mod tests;
