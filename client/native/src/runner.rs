//! Drives the sans-IO [`Election`] with real connections.
//!
//! One task owns the election and every candidate's sending half; each
//! connection's frames arrive on one channel, tagged with the candidate and
//! stamped when they were read off the socket. The runner turns the election's
//! actions into connects, probes, joins and closes, hands room traffic of the
//! serving connection to the application, and delivers every election report
//! to a relay — keeping the ones made while no relay was reachable until one is.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rallypoint_client::election::{
    Action, CandidateId, CandidateView, Decision, Election, ElectionConfig, Event, Notice,
    finish_report,
};
use rallypoint_client::{Candidate, Micros};
use rallypoint_protocol::v1::{
    ClientFrame, ElectionReport, Join, Media, TelemetryReport, client_frame, server_frame,
    telemetry_report,
};
use tokio::sync::mpsc;

use crate::connection::{Received, Sender};
use crate::peer::{ClientIdentity, Peer};

/// Reports kept while no relay is reachable (oldest dropped beyond this).
const MAX_PENDING_REPORTS: usize = 64;
/// How often unacknowledged reports are offered again.
const REPORT_RETRY: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub election: ElectionConfig,
    pub connect_timeout: Duration,
    /// Join this room through the elected relay; `None` only measures
    /// (`rallypoint probe`).
    pub room: Option<String>,
    pub identity: ClientIdentity,
}

/// What the application asks of the runner.
#[derive(Debug)]
pub enum Command {
    /// Send a media frame through the serving relay (dropped while none serves).
    SendMedia(Media),
    /// Ask a participant for a keyframe.
    RequestKeyframe { peer_id: String, kind: i32 },
    /// Hang up and stop.
    Stop,
}

/// What the runner tells the application.
// A decision carries its full report; outputs come a few times per election,
// so boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Output {
    /// The election decided (initially, or a switch); the room is joined
    /// through the winner when the runner has a room.
    Decided {
        decision: Decision,
        candidate: Candidate,
        report: ElectionReport,
    },
    CandidateFailed {
        candidate: Candidate,
        reason: String,
    },
    NoRelayReachable {
        retry_in: Duration,
        attempt: u32,
    },
    /// Live statistics, after every change worth redrawing.
    Snapshot(Vec<CandidateView>),
    /// A frame from the room through the serving relay (media, presence,
    /// keyframe requests), stamped with its arrival.
    Room(Received),
    /// A report was accepted or refused by the relay's intake.
    ReportAck {
        accepted: bool,
        reason: String,
    },
}

enum Input {
    Connected(CandidateId, Peer),
    ConnectFailed(CandidateId, String),
    Frame(CandidateId, u64, Received),
    Closed(CandidateId, u64),
}

struct Runner {
    config: RunnerConfig,
    election: Election,
    origin: Instant,
    senders: Vec<Option<(u64, Sender)>>,
    generation: u64,
    serving: Option<CandidateId>,
    /// Reports not yet acknowledged, and whether one is in flight.
    pending_reports: VecDeque<(ElectionReport, bool)>,
    inputs: mpsc::UnboundedSender<Input>,
    outputs: mpsc::UnboundedSender<Output>,
}

/// Starts a runner; it runs until [`Command::Stop`] or until `commands` closes.
pub fn spawn(
    candidates: Vec<Candidate>,
    config: RunnerConfig,
) -> (
    mpsc::UnboundedSender<Command>,
    mpsc::UnboundedReceiver<Output>,
) {
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    let (output_tx, output_rx) = mpsc::unbounded_channel();
    tokio::spawn(run(candidates, config, command_rx, output_tx));
    (command_tx, output_rx)
}

async fn run(
    candidates: Vec<Candidate>,
    config: RunnerConfig,
    mut commands: mpsc::UnboundedReceiver<Command>,
    outputs: mpsc::UnboundedSender<Output>,
) {
    let (input_tx, mut inputs) = mpsc::unbounded_channel();
    let client = rallypoint_protocol::v1::ClientContext {
        platform: config.identity.info.platform.clone(),
        client_version: config.identity.info.client_version.clone(),
        browser_family: config.identity.info.browser_family.clone(),
        effective_connection_type: config.identity.info.effective_connection_type.clone(),
        ..Default::default()
    };
    let election = Election::new(
        candidates.clone(),
        config.election.clone(),
        config.identity.session_id.clone(),
        client,
    );
    let mut runner = Runner {
        senders: (0..candidates.len()).map(|_| None).collect(),
        config,
        election,
        origin: Instant::now(),
        generation: 0,
        serving: None,
        pending_reports: VecDeque::new(),
        inputs: input_tx,
        outputs,
    };
    runner.election.start(Micros::ZERO);
    runner.pump();
    // Reports refused for a passing reason are offered again now and then.
    let mut report_retry = tokio::time::interval(REPORT_RETRY);
    loop {
        let deadline = runner
            .election
            .poll_timeout()
            .map(|t| tokio::time::Instant::from_std(runner.origin + Duration::from_micros(t.0)));
        tokio::select! {
            input = inputs.recv() => {
                let Some(input) = input else { break };
                runner.input(input);
            }
            command = commands.recv() => match command {
                None | Some(Command::Stop) => break,
                Some(command) => runner.command(command),
            },
            _ = report_retry.tick() => runner.flush_reports(),
            _ = sleep_until(deadline) => {
                let now = runner.now();
                runner.election.handle_timeout(now);
            }
        }
        runner.pump();
    }
    runner.hang_up();
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Runner {
    fn now(&self) -> Micros {
        self.at(Instant::now())
    }

    fn at(&self, instant: Instant) -> Micros {
        Micros(instant.saturating_duration_since(self.origin).as_micros() as u64)
    }

    fn input(&mut self, input: Input) {
        match input {
            Input::Connected(id, peer) => {
                let (sender, mut receiver) = peer.conn.into_split();
                self.generation += 1;
                let generation = self.generation;
                self.senders[id] = Some((generation, sender));
                let tx = self.inputs.clone();
                tokio::spawn(async move {
                    while let Some(received) = receiver.recv().await {
                        if tx.send(Input::Frame(id, generation, received)).is_err() {
                            return;
                        }
                    }
                    let _ = tx.send(Input::Closed(id, generation));
                });
                let now = self.now();
                self.election
                    .handle(Event::Connected { candidate: id }, now);
            }
            Input::ConnectFailed(id, reason) => {
                let now = self.now();
                self.election.handle(
                    Event::ConnectFailed {
                        candidate: id,
                        reason,
                    },
                    now,
                );
            }
            Input::Frame(id, generation, received) => {
                if self.current_generation(id) == Some(generation) {
                    self.frame(id, received);
                }
            }
            Input::Closed(id, generation) => {
                if self.current_generation(id) == Some(generation) {
                    self.senders[id] = None;
                    let now = self.now();
                    self.election.handle(
                        Event::ConnectionLost {
                            candidate: id,
                            reason: "connection closed by the relay or the network".into(),
                        },
                        now,
                    );
                }
            }
        }
    }

    fn current_generation(&self, id: CandidateId) -> Option<u64> {
        self.senders[id].as_ref().map(|(g, _)| *g)
    }

    fn frame(&mut self, id: CandidateId, received: Received) {
        let Some(kind) = &received.frame.kind else {
            return;
        };
        match kind {
            server_frame::Kind::ProbeAck(ack) => {
                let event = Event::ProbeAck {
                    candidate: id,
                    seq: ack.seq,
                    sent_at: Micros(ack.client_send_us),
                    received_at: self.at(received.at),
                };
                let now = self.now();
                self.election.handle(event, now);
            }
            server_frame::Kind::Drain(_) => {
                let now = self.now();
                self.election.handle(Event::Drain { candidate: id }, now);
            }
            server_frame::Kind::Error(error) => {
                let now = self.now();
                self.senders[id] = None;
                self.election.handle(
                    Event::ConnectionLost {
                        candidate: id,
                        reason: format!("relay refused: {}", error.message),
                    },
                    now,
                );
            }
            server_frame::Kind::TelemetryAck(ack) => {
                let settled = ack.accepted || ack.reason.starts_with("invalid");
                self.pending_reports.retain_mut(|(report, in_flight)| {
                    if report.report_id != ack.report_id {
                        return true;
                    }
                    // Refused for a passing reason (rate limit, stream down):
                    // send again with the next flush.
                    *in_flight = false;
                    !settled
                });
                let _ = self.outputs.send(Output::ReportAck {
                    accepted: ack.accepted,
                    reason: ack.reason.clone(),
                });
            }
            server_frame::Kind::Welcome(_) => {}
            _ if Some(id) == self.serving => {
                let _ = self.outputs.send(Output::Room(received));
            }
            _ => {}
        }
    }

    fn command(&mut self, command: Command) {
        let frame = match command {
            Command::SendMedia(media) => ClientFrame::of(client_frame::Kind::Media(media)),
            Command::RequestKeyframe { peer_id, kind } => {
                ClientFrame::of(client_frame::Kind::KeyframeRequest(
                    rallypoint_protocol::v1::KeyframeRequest { peer_id, kind },
                ))
            }
            Command::Stop => return,
        };
        if let Some(sender) = self.serving.and_then(|id| self.sender(id)) {
            sender.send(&frame);
        }
    }

    fn sender(&self, id: CandidateId) -> Option<&Sender> {
        self.senders[id].as_ref().map(|(_, s)| s)
    }

    /// Carries out the election's actions and forwards its notices.
    fn pump(&mut self) {
        let mut changed = false;
        while let Some(action) = self.election.poll_action() {
            changed = true;
            self.act(action);
        }
        while let Some(notice) = self.election.poll_notice() {
            changed = true;
            self.notice(notice);
        }
        if changed {
            let _ = self
                .outputs
                .send(Output::Snapshot(self.election.snapshot()));
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Open { candidate } => {
                let target = self.election.candidate(candidate).clone();
                let identity = self.config.identity.clone();
                let timeout = self.config.connect_timeout;
                let tx = self.inputs.clone();
                tokio::spawn(async move {
                    let input = match Peer::connect(&target, &identity, timeout).await {
                        Ok(peer) => Input::Connected(candidate, peer),
                        Err(e) => Input::ConnectFailed(candidate, e.to_string()),
                    };
                    let _ = tx.send(input);
                });
            }
            Action::SendProbe { candidate, seq } => {
                let now = self.now();
                if let Some(sender) = self.sender(candidate) {
                    sender.send(&ClientFrame::of(client_frame::Kind::Probe(
                        rallypoint_protocol::v1::Probe {
                            seq,
                            client_send_us: now.0,
                        },
                    )));
                }
            }
            Action::Join {
                candidate,
                join_seq,
            } => {
                self.serving = Some(candidate);
                if let (Some(room), Some(sender)) = (&self.config.room, self.sender(candidate)) {
                    sender.send(&ClientFrame::of(client_frame::Kind::Join(Join {
                        room: room.clone(),
                        join_seq,
                    })));
                }
                // Whatever was in flight on the previous relay may be lost.
                for (_, in_flight) in &mut self.pending_reports {
                    *in_flight = false;
                }
                self.flush_reports();
            }
            Action::Demote { candidate } => {
                if self.config.room.is_some()
                    && let Some(sender) = self.sender(candidate)
                {
                    sender.send(&ClientFrame::of(client_frame::Kind::Leave(
                        rallypoint_protocol::v1::Leave { moving: true },
                    )));
                }
            }
            Action::Close { candidate } => {
                if self.serving == Some(candidate) {
                    self.serving = None;
                }
                self.senders[candidate] = None;
            }
        }
    }

    fn notice(&mut self, notice: Notice) {
        match notice {
            Notice::Decided {
                decision,
                mut report,
            } => {
                stamp(&mut report);
                self.queue_report(report.clone());
                let candidate = self.election.candidate(decision.winner).clone();
                let _ = self.outputs.send(Output::Decided {
                    decision,
                    candidate,
                    report,
                });
            }
            Notice::CandidateFailed { candidate, reason } => {
                let candidate = self.election.candidate(candidate).clone();
                let _ = self
                    .outputs
                    .send(Output::CandidateFailed { candidate, reason });
            }
            Notice::NoRelayReachable {
                retry_in,
                attempt,
                mut report,
            } => {
                stamp(&mut report);
                self.queue_report(report);
                let _ = self
                    .outputs
                    .send(Output::NoRelayReachable { retry_in, attempt });
            }
        }
    }

    fn queue_report(&mut self, report: ElectionReport) {
        if self.pending_reports.len() == MAX_PENDING_REPORTS {
            self.pending_reports.pop_front();
        }
        self.pending_reports.push_back((report, false));
        self.flush_reports();
    }

    /// Sends kept reports that are not in flight through the serving relay;
    /// they stay kept until the relay acknowledges them.
    fn flush_reports(&mut self) {
        let Some(sender) = self
            .serving
            .and_then(|id| self.senders[id].as_ref().map(|(_, s)| s))
        else {
            return;
        };
        for (report, in_flight) in self.pending_reports.iter_mut().filter(|(_, f)| !*f) {
            *in_flight = sender.send(&ClientFrame::of(client_frame::Kind::Telemetry(
                TelemetryReport {
                    kind: Some(telemetry_report::Kind::Election(report.clone())),
                },
            )));
        }
    }

    fn hang_up(&mut self) {
        if let Some(sender) = self.serving.and_then(|id| self.sender(id))
            && self.config.room.is_some()
        {
            sender.send(&ClientFrame::of(client_frame::Kind::Leave(
                rallypoint_protocol::v1::Leave { moving: false },
            )));
            sender.close();
        }
    }
}

/// Gives a report its random id and the wall-clock time.
fn stamp(report: &mut ElectionReport) {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    finish_report(report, rand::random(), unix_ms);
}
