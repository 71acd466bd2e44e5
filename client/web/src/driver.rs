//! Runs the sans-IO client [`Session`] (and the election inside it) on
//! browser connections: the wasm twin of the native client's runner.
//!
//! One task owns the session and every candidate's connection; each
//! connection's frames arrive on one channel, tagged with the candidate and
//! already stamped with their arrival time. The driver carries out the
//! session's transmits (connect, send, close) and tells the call what it
//! needs: decisions, refusals, the live table, the serving relay's room
//! traffic, and how the election reports are doing. What the frames mean is
//! the session's business, shared with the native client.
//!
//! When the session asks for a fresh token, ahead of expiry, the driver gets
//! one from the same development issuer the lobby used, for the same user,
//! and hands it in: the call outlives its first token.

use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use rallypoint_client::election::{CandidateView, ElectionConfig};
use rallypoint_client::session::{FrameUse, REPORT_RETRY, Session, Transmit, Update};
use rallypoint_client::{Candidate, Micros};
use rallypoint_protocol::PROTOCOL_VERSION;
use rallypoint_protocol::v1::{
    ClientContext, ClientInfo, Hello, KeyframeRequest, Media, TrackKind, client_frame,
};
use wasm_bindgen_futures::spawn_local;

use crate::transport::{self, ConnectError, Connected, Connection, Received};
use crate::{clock, http};

/// Live tables are redrawn at most this often between decisions.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub election: ElectionConfig,
    pub connect_timeout: Duration,
    pub room: String,
    /// The first token; the session keeps the newest.
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
// Sized by the decision's report; at call rates (tens of room frames per
// second) the bigger channel slot costs nothing worth a box per update.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Output {
    /// What the session said: a decision (the room is joined through the
    /// winner), a failed or refusing candidate (also a refused connect), no
    /// relay reachable, election reports delivered and still kept.
    Session(Update),
    /// Every candidate's state and statistics.
    Snapshot(Vec<CandidateView>),
    /// A frame from the room through the serving relay.
    Room(Received),
}

enum Input {
    Connected(usize, Connected),
    ConnectFailed(usize, ConnectError),
    Frame(usize, u64, Received),
    Closed(usize, u64),
    Token(Result<String, String>),
}

struct Driver {
    config: DriverConfig,
    session: Session,
    /// Each candidate's connection, with its generation (frames of a replaced
    /// connection are ignored).
    connections: Vec<Option<(u64, Connection)>>,
    generation: u64,
    last_snapshot: Option<Micros>,
    inputs: mpsc::UnboundedSender<Input>,
    outputs: mpsc::UnboundedSender<Output>,
    /// A token fetch is under way (the session may ask again meanwhile).
    fetching: bool,
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
    let session = Session::new(
        candidates.clone(),
        config.election.clone(),
        config.session_id.clone(),
        client,
        Some(config.room.clone()),
        config.token.clone(),
        Box::new(|| (clock::random_id(), clock::unix_ms())),
    );
    let mut driver = Driver {
        connections: candidates.iter().map(|_| None).collect(),
        config,
        session,
        generation: 0,
        last_snapshot: None,
        inputs: input_tx,
        outputs,
        fetching: false,
    };
    driver.session.start(clock::now());
    driver.pump(true);
    let mut report_retry_at = clock::now() + REPORT_RETRY;
    loop {
        let wake = driver
            .session
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
                    driver.session.flush_reports();
                }
                driver.session.handle_timeout(now);
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
                let Connected {
                    conn,
                    mut incoming,
                    welcome,
                } = connected;
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
                self.session.connected(id, &welcome, now);
                true
            }
            Input::ConnectFailed(id, error) => {
                if let ConnectError::Refused { code, message } = &error {
                    let refused = Update::Refused {
                        candidate: self.session.candidate(id).clone(),
                        code: *code,
                        message: message.clone(),
                    };
                    let _ = self.outputs.unbounded_send(Output::Session(refused));
                }
                self.session.connect_failed(id, error.to_string(), now);
                true
            }
            Input::Frame(id, generation, received) => {
                if self.current_generation(id) != Some(generation) {
                    return false;
                }
                match self.session.frame(id, &received.frame, received.at, now) {
                    FrameUse::Room => {
                        let _ = self.outputs.unbounded_send(Output::Room(received));
                        false
                    }
                    FrameUse::Consumed(changed) => changed,
                }
            }
            Input::Closed(id, generation) => {
                if self.current_generation(id) != Some(generation) {
                    return false;
                }
                self.connections[id] = None;
                self.session.closed(id, now);
                true
            }
            Input::Token(token) => {
                self.fetching = false;
                match token {
                    Ok(token) => self.session.refresh_token(token),
                    Err(message) => web_sys::console::warn_1(&message.into()),
                }
                false
            }
        }
    }

    /// Fetches a fresh token for the same user and room, unless one is on
    /// its way.
    fn fetch_token(&mut self) {
        if self.fetching {
            return;
        }
        self.fetching = true;
        let current = self.session.token().to_owned();
        let tx = self.inputs.clone();
        spawn_local(async move {
            let _ = tx.unbounded_send(Input::Token(http::fresh_token(&current).await));
        });
    }

    fn current_generation(&self, id: usize) -> Option<u64> {
        self.connections[id].as_ref().map(|(g, _)| *g)
    }

    fn command(&mut self, command: Command) {
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
        self.session.send_to_room(kind);
    }

    /// Carries out the session's transmits and forwards its updates; redraws
    /// the live table when the election acted, or at most every
    /// `SNAPSHOT_EVERY` when only measurements changed.
    fn pump(&mut self, changed: bool) {
        while let Some(transmit) = self.session.poll_transmit() {
            self.transmit(transmit);
        }
        while let Some(update) = self.session.poll_update() {
            let _ = self.outputs.unbounded_send(Output::Session(update));
        }
        let decided = self.session.take_decided();
        let now = clock::now();
        let due = self
            .last_snapshot
            .is_none_or(|at| now.since(at) >= SNAPSHOT_EVERY);
        if decided || (changed && due) {
            self.last_snapshot = Some(now);
            let _ = self
                .outputs
                .unbounded_send(Output::Snapshot(self.session.snapshot()));
        }
    }

    fn transmit(&mut self, transmit: Transmit) {
        match transmit {
            Transmit::Connect(candidate) => {
                let target = self.session.candidate(candidate).clone();
                let hello = Hello {
                    protocol_version: PROTOCOL_VERSION,
                    token: self.session.token().to_owned(),
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
            Transmit::Send(candidate, frame) => {
                if let Some((_, conn)) = &self.connections[candidate] {
                    conn.send(&frame);
                }
            }
            Transmit::Close(candidate) => self.connections[candidate] = None,
            Transmit::FetchToken { .. } => self.fetch_token(),
        }
    }

    /// Hangs up: the room is told at once, every connection is closed.
    fn hang_up(&mut self) {
        if let Some((id, leave)) = self.session.hang_up()
            && let Some((_, conn)) = self.connections[id].take()
        {
            spawn_local(conn.finish(leave));
        }
        self.connections.clear();
    }
}
