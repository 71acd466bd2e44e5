//! Drives the sans-IO [`Election`] with browser connections: the wasm twin
//! of the native client's runner.
//!
//! One task owns the election and every candidate's connection; each
//! connection's frames arrive on one channel, tagged with the candidate and
//! already stamped with their arrival time. The driver turns the election's
//! actions into connects, probes, joins, demotions and closes, hands the
//! serving connection's room traffic to the call, and delivers every
//! election report to the serving relay's telemetry intake — keeping the ones
//! made while no relay was reachable until one is.

use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use rallypoint_client::election::{
    Action, CandidateId, CandidateView, Decision, Election, ElectionConfig, Event, Notice,
    finish_report,
};
use rallypoint_client::{Candidate, Micros};
use rallypoint_protocol::PROTOCOL_VERSION;
use rallypoint_protocol::v1::{
    ClientContext, ClientFrame, ClientInfo, ElectionReport, ErrorCode, Hello, Join,
    KeyframeRequest, Leave, Media, Probe, TelemetryReport, TrackKind, client_frame, server_frame,
    telemetry_report,
};
use wasm_bindgen_futures::spawn_local;

use crate::clock;
use crate::reports::ReportQueue;
use crate::transport::{self, ConnectError, Connected, Connection, Received};

/// How often reports refused for a passing reason are offered again.
const REPORT_RETRY: Duration = Duration::from_secs(20);
/// Live tables are redrawn at most this often between decisions.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub election: ElectionConfig,
    pub connect_timeout: Duration,
    pub room: String,
    pub token: String,
    /// Random bytes fixed for the whole call: with the token's user id they
    /// make the peer id, so every relay knows this participant as the same one.
    pub session_id: Bytes,
    pub info: ClientInfo,
}

/// What the call asks of the driver.
#[derive(Debug)]
pub enum Command {
    /// Send through the serving relay (dropped while none serves).
    SendMedia(Media),
    RequestKeyframe {
        peer_id: String,
        kind: TrackKind,
    },
    /// Leave the room and close everything.
    Stop,
}

/// What the driver tells the call.
#[derive(Debug, Clone)]
pub enum Output {
    /// The election decided (initially, a failover, or a switch); the room is
    /// joined through `candidate`.
    Decided {
        decision: Decision,
        candidate: Candidate,
    },
    CandidateFailed {
        candidate: Candidate,
        reason: String,
    },
    /// A relay refused this client (bad or expired token, wrong room, …).
    Refused {
        candidate: Candidate,
        code: ErrorCode,
        message: String,
    },
    NoRelayReachable {
        retry_in: Duration,
        attempt: u32,
    },
    /// Every candidate's state and statistics.
    Snapshot(Vec<CandidateView>),
    /// A frame from the room through the serving relay.
    Room(Received),
    /// Election reports: delivered to a relay, and still kept.
    Reports {
        delivered: u32,
        pending: usize,
    },
}

enum Input {
    Connected(CandidateId, Connected),
    ConnectFailed(CandidateId, ConnectError),
    Frame(CandidateId, u64, Received),
    Closed(CandidateId, u64),
}

struct Driver {
    config: DriverConfig,
    election: Election,
    connections: Vec<Option<(u64, Connection)>>,
    generation: u64,
    serving: Option<CandidateId>,
    reports: ReportQueue,
    last_snapshot: Option<Micros>,
    inputs: mpsc::UnboundedSender<Input>,
    outputs: mpsc::UnboundedSender<Output>,
}

/// Starts a driver; it runs until [`Command::Stop`] or until the command
/// sender is dropped.
pub fn spawn(
    candidates: Vec<Candidate>,
    config: DriverConfig,
) -> (
    mpsc::UnboundedSender<Command>,
    mpsc::UnboundedReceiver<Output>,
) {
    let (command_tx, commands) = mpsc::unbounded();
    let (output_tx, outputs) = mpsc::unbounded();
    spawn_local(run(candidates, config, commands, output_tx));
    (command_tx, outputs)
}

async fn run(
    candidates: Vec<Candidate>,
    config: DriverConfig,
    mut commands: mpsc::UnboundedReceiver<Command>,
    outputs: mpsc::UnboundedSender<Output>,
) {
    let (input_tx, mut inputs) = mpsc::unbounded();
    let client = ClientContext {
        platform: config.info.platform.clone(),
        client_version: config.info.client_version.clone(),
        browser_family: config.info.browser_family.clone(),
        effective_connection_type: config.info.effective_connection_type.clone(),
        ..Default::default()
    };
    let election = Election::new(
        candidates.clone(),
        config.election.clone(),
        config.session_id.clone(),
        client,
    );
    let mut driver = Driver {
        connections: candidates.iter().map(|_| None).collect(),
        config,
        election,
        generation: 0,
        serving: None,
        reports: ReportQueue::default(),
        last_snapshot: None,
        inputs: input_tx,
        outputs,
    };
    driver.election.start(clock::now());
    driver.pump(true);
    let mut report_retry_at = clock::now() + REPORT_RETRY;
    loop {
        let wake = driver
            .election
            .poll_timeout()
            .map_or(report_retry_at, |t| t.min(report_retry_at));
        let sleep = clock::sleep_ms(wake.since(clock::now()).as_millis() as u32).fuse();
        futures::pin_mut!(sleep);
        let mut changed = false;
        futures::select! {
            input = inputs.next() => {
                let Some(input) = input else { break };
                changed = driver.input(input);
            }
            command = commands.next() => match command {
                None | Some(Command::Stop) => break,
                Some(command) => driver.command(command),
            },
            _ = sleep => {
                let now = clock::now();
                if now >= report_retry_at {
                    report_retry_at = now + REPORT_RETRY;
                    driver.flush_reports();
                }
                driver.election.handle_timeout(now);
            }
        }
        driver.pump(changed);
    }
    driver.hang_up();
}

impl Driver {
    /// Handles one input; `true` if the live table changed.
    fn input(&mut self, input: Input) -> bool {
        let now = clock::now();
        match input {
            Input::Connected(id, connected) => {
                self.generation += 1;
                let generation = self.generation;
                let Connected { conn, mut incoming } = connected;
                self.connections[id] = Some((generation, conn));
                let tx = self.inputs.clone();
                spawn_local(async move {
                    while let Some(received) = incoming.next().await {
                        if tx
                            .unbounded_send(Input::Frame(id, generation, received))
                            .is_err()
                        {
                            return;
                        }
                    }
                    let _ = tx.unbounded_send(Input::Closed(id, generation));
                });
                self.election
                    .handle(Event::Connected { candidate: id }, now);
                true
            }
            Input::ConnectFailed(id, error) => {
                if let ConnectError::Refused { code, message } = &error {
                    self.refused(id, *code, message.clone());
                }
                let reason = error.to_string();
                self.election.handle(
                    Event::ConnectFailed {
                        candidate: id,
                        reason,
                    },
                    now,
                );
                true
            }
            Input::Frame(id, generation, received) => {
                self.current_generation(id) == Some(generation) && self.frame(id, received)
            }
            Input::Closed(id, generation) => {
                if self.current_generation(id) != Some(generation) {
                    return false;
                }
                self.connections[id] = None;
                let reason = "connection closed by the relay or the network".to_owned();
                self.election.handle(
                    Event::ConnectionLost {
                        candidate: id,
                        reason,
                    },
                    now,
                );
                true
            }
        }
    }

    fn current_generation(&self, id: CandidateId) -> Option<u64> {
        self.connections[id].as_ref().map(|(g, _)| *g)
    }

    fn connection(&self, id: CandidateId) -> Option<&Connection> {
        self.connections[id].as_ref().map(|(_, c)| c)
    }

    fn send(&self, id: CandidateId, kind: client_frame::Kind) -> bool {
        self.connection(id)
            .is_some_and(|c| c.send(&ClientFrame::of(kind)))
    }

    /// A frame from candidate `id`; `true` if the live table changed.
    fn frame(&mut self, id: CandidateId, received: Received) -> bool {
        let Some(kind) = &received.frame.kind else {
            return false;
        };
        let now = clock::now();
        match kind {
            server_frame::Kind::ProbeAck(ack) => {
                let event = Event::ProbeAck {
                    candidate: id,
                    seq: ack.seq,
                    sent_at: Micros(ack.client_send_us),
                    received_at: received.at,
                };
                self.election.handle(event, now);
                true
            }
            server_frame::Kind::Drain(_) => {
                self.election.handle(Event::Drain { candidate: id }, now);
                true
            }
            server_frame::Kind::Error(error) => {
                let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified);
                self.refused(id, code, error.message.clone());
                self.connections[id] = None;
                let reason = format!("relay refused: {}", error.message);
                self.election.handle(
                    Event::ConnectionLost {
                        candidate: id,
                        reason,
                    },
                    now,
                );
                true
            }
            server_frame::Kind::TelemetryAck(ack) => {
                self.reports.on_ack(ack);
                self.report_progress();
                false
            }
            server_frame::Kind::Welcome(_) => false,
            _ if Some(id) == self.serving => {
                let _ = self.outputs.unbounded_send(Output::Room(received));
                false
            }
            _ => false,
        }
    }

    fn refused(&self, id: CandidateId, code: ErrorCode, message: String) {
        let _ = self.outputs.unbounded_send(Output::Refused {
            candidate: self.election.candidate(id).clone(),
            code,
            message,
        });
    }

    fn command(&mut self, command: Command) {
        let Some(serving) = self.serving else { return };
        let kind = match command {
            Command::SendMedia(media) => client_frame::Kind::Media(media),
            Command::RequestKeyframe { peer_id, kind } => {
                client_frame::Kind::KeyframeRequest(KeyframeRequest {
                    peer_id,
                    kind: kind as i32,
                })
            }
            Command::Stop => return,
        };
        self.send(serving, kind);
    }

    /// Carries out the election's actions and forwards its notices; redraws
    /// the live table when something changed.
    fn pump(&mut self, changed: bool) {
        let mut decided = false;
        while let Some(action) = self.election.poll_action() {
            decided = true;
            self.act(action);
        }
        while let Some(notice) = self.election.poll_notice() {
            decided = true;
            self.notice(notice);
        }
        let now = clock::now();
        let due = self
            .last_snapshot
            .is_none_or(|at| now.since(at) >= SNAPSHOT_EVERY);
        if decided || (changed && due) {
            self.last_snapshot = Some(now);
            let _ = self
                .outputs
                .unbounded_send(Output::Snapshot(self.election.snapshot()));
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Open { candidate } => {
                let target = self.election.candidate(candidate).clone();
                let hello = Hello {
                    protocol_version: PROTOCOL_VERSION,
                    token: self.config.token.clone(),
                    client: Some(self.config.info.clone()),
                    session_id: self.config.session_id.clone(),
                };
                let timeout = self.config.connect_timeout;
                let tx = self.inputs.clone();
                spawn_local(async move {
                    let input = match transport::connect(&target, hello, timeout).await {
                        Ok(connected) => Input::Connected(candidate, connected),
                        Err(e) => Input::ConnectFailed(candidate, e),
                    };
                    let _ = tx.unbounded_send(input);
                });
            }
            Action::SendProbe { candidate, seq } => {
                let client_send_us = clock::now().0;
                self.send(
                    candidate,
                    client_frame::Kind::Probe(Probe {
                        seq,
                        client_send_us,
                    }),
                );
            }
            Action::Join {
                candidate,
                join_seq,
            } => {
                self.serving = Some(candidate);
                let room = self.config.room.clone();
                self.send(candidate, client_frame::Kind::Join(Join { room, join_seq }));
                // Whatever was in flight on the previous relay may be lost.
                self.reports.resend_all();
                self.flush_reports();
            }
            Action::Demote { candidate } => {
                self.send(candidate, client_frame::Kind::Leave(Leave { moving: true }));
            }
            Action::Close { candidate } => {
                if self.serving == Some(candidate) {
                    self.serving = None;
                }
                self.connections[candidate] = None;
            }
        }
    }

    fn notice(&mut self, notice: Notice) {
        match notice {
            Notice::Decided { decision, report } => {
                self.keep_report(report);
                let candidate = self.election.candidate(decision.winner).clone();
                let _ = self.outputs.unbounded_send(Output::Decided {
                    decision,
                    candidate,
                });
            }
            Notice::CandidateFailed { candidate, reason } => {
                let candidate = self.election.candidate(candidate).clone();
                let _ = self
                    .outputs
                    .unbounded_send(Output::CandidateFailed { candidate, reason });
            }
            Notice::NoRelayReachable {
                retry_in,
                attempt,
                report,
            } => {
                self.keep_report(report);
                let _ = self
                    .outputs
                    .unbounded_send(Output::NoRelayReachable { retry_in, attempt });
            }
        }
    }

    /// Stamps a report with what only the driver knows and keeps it until a
    /// relay acknowledges it.
    fn keep_report(&mut self, mut report: ElectionReport) {
        finish_report(&mut report, clock::random_id(), clock::unix_ms());
        self.reports.push(report);
        self.flush_reports();
    }

    /// Sends kept reports that are not in flight through the serving relay.
    fn flush_reports(&mut self) {
        if let Some(serving) = self.serving.filter(|&id| self.connection(id).is_some()) {
            for report in self.reports.take_unsent() {
                self.send(
                    serving,
                    client_frame::Kind::Telemetry(TelemetryReport {
                        kind: Some(telemetry_report::Kind::Election(report)),
                    }),
                );
            }
        }
        self.report_progress();
    }

    fn report_progress(&self) {
        let _ = self.outputs.unbounded_send(Output::Reports {
            delivered: self.reports.delivered(),
            pending: self.reports.pending(),
        });
    }

    /// Hangs up: the room is told at once, every connection is closed.
    fn hang_up(&mut self) {
        if let Some(serving) = self.serving.take()
            && let Some((_, conn)) = self.connections[serving].take()
        {
            spawn_local(
                conn.finish(ClientFrame::of(client_frame::Kind::Leave(Leave {
                    moving: false,
                }))),
            );
        }
        self.connections.clear();
    }
}
