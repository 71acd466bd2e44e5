//! Runs the sans-IO client [`Session`] (and the election inside it) on real
//! connections with tokio.
//!
//! One task owns the session and every candidate's sending half; each
//! connection's frames arrive on one channel, tagged with the candidate and
//! stamped when they were read off the socket. The runner carries out the
//! session's transmits (connect, send, close) and hands the application what
//! it needs: decisions, the live table, room traffic of the serving relay.
//! What those frames mean is the session's business, shared with the browser.
//!
//! A call that should outlive its token gets a [`TokenSource`]
//! ([`spawn_refreshing`]): the runner calls it when the session asks, ahead
//! of expiry. Without one, relays end the call when the token expires, and
//! the session reports that as a `TokenExpired` refusal.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use rallypoint_client::election::{CandidateView, ElectionConfig};
use rallypoint_client::session::{FrameUse, REPORT_RETRY, Session, Transmit, Update};
use rallypoint_client::{Candidate, Micros};
use rallypoint_protocol::v1::{KeyframeRequest, Media, client_frame};
use tokio::sync::mpsc;

use crate::connection::{Received, Sender};
use crate::peer::{ClientIdentity, Peer};

/// Where a long call gets a fresh token for the same user and room: the
/// deployment's issuer. Called ahead of the current token's expiry, one
/// fetch at a time; on an error the session asks again a little later.
pub type TokenSource = Box<dyn FnMut() -> BoxFuture<'static, anyhow::Result<String>> + Send>;

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
// Sized by the decision's report; at call rates (tens of room frames per
// second) the bigger channel slot costs nothing worth a box per update.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Output {
    /// What the session said: a decision (the room is joined through the
    /// winner when the runner has a room), a failed or refusing candidate,
    /// no relay reachable, election reports delivered.
    Session(Update),
    /// Live statistics, after every change worth redrawing.
    Snapshot(Vec<CandidateView>),
    /// A frame from the room through the serving relay (media, presence,
    /// keyframe requests), stamped with its arrival.
    Room(Received),
}

enum Input {
    Connected(usize, Peer),
    ConnectFailed(usize, String),
    Frame(usize, u64, Received),
    Closed(usize, u64),
    Token(anyhow::Result<String>),
}

struct Runner {
    config: RunnerConfig,
    session: Session,
    origin: Instant,
    /// Each candidate's sending half, with the generation of its connection
    /// (frames of a replaced connection are ignored).
    senders: Vec<Option<(u64, Sender)>>,
    generation: u64,
    inputs: mpsc::UnboundedSender<Input>,
    outputs: mpsc::UnboundedSender<Output>,
    tokens: Option<TokenSource>,
    /// A token fetch is under way (the session may ask again meanwhile).
    fetching: bool,
}

type Channels = (
    mpsc::UnboundedSender<Command>,
    mpsc::UnboundedReceiver<Output>,
);

/// Starts a runner; it runs until [`Command::Stop`] or until `commands`
/// closes. The call lasts as long as the identity's token.
pub fn spawn(candidates: Vec<Candidate>, config: RunnerConfig) -> Channels {
    start(candidates, config, None)
}

/// Like [`spawn`], for a call that outlives its token: fresh ones come from
/// `tokens` and are sent on every connection before the current one expires.
pub fn spawn_refreshing(
    candidates: Vec<Candidate>,
    config: RunnerConfig,
    tokens: TokenSource,
) -> Channels {
    start(candidates, config, Some(tokens))
}

fn start(
    candidates: Vec<Candidate>,
    config: RunnerConfig,
    tokens: Option<TokenSource>,
) -> Channels {
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    let (output_tx, output_rx) = mpsc::unbounded_channel();
    tokio::spawn(run(candidates, config, tokens, command_rx, output_tx));
    (command_tx, output_rx)
}

async fn run(
    candidates: Vec<Candidate>,
    config: RunnerConfig,
    tokens: Option<TokenSource>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    outputs: mpsc::UnboundedSender<Output>,
) {
    let (input_tx, mut inputs) = mpsc::unbounded_channel();
    let info = &config.identity.info;
    let client = rallypoint_protocol::v1::ClientContext {
        platform: info.platform.clone(),
        client_version: info.client_version.clone(),
        browser_family: info.browser_family.clone(),
        effective_connection_type: info.effective_connection_type.clone(),
        ..Default::default()
    };
    let session = Session::new(
        candidates.clone(),
        config.election.clone(),
        config.identity.session_id.clone(),
        client,
        config.room.clone(),
        config.identity.token.clone(),
        Box::new(|| (rand::random(), unix_ms())),
    );
    let mut runner = Runner {
        senders: (0..candidates.len()).map(|_| None).collect(),
        config,
        session,
        origin: Instant::now(),
        generation: 0,
        inputs: input_tx,
        outputs,
        tokens,
        fetching: false,
    };
    runner.session.start(Micros::ZERO);
    runner.pump();
    // Reports refused for a passing reason are offered again now and then.
    let mut report_retry = tokio::time::interval(REPORT_RETRY);
    loop {
        let deadline = runner
            .session
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
            _ = report_retry.tick() => runner.session.flush_reports(),
            _ = sleep_until(deadline) => {
                let now = runner.now();
                runner.session.handle_timeout(now);
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

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Runner {
    fn now(&self) -> Micros {
        self.at(Instant::now())
    }

    fn at(&self, instant: Instant) -> Micros {
        Micros(instant.saturating_duration_since(self.origin).as_micros() as u64)
    }

    fn input(&mut self, input: Input) {
        let now = self.now();
        match input {
            Input::Connected(id, Peer { conn, welcome, .. }) => {
                let (sender, mut receiver) = conn.into_split();
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
                self.session.connected(id, &welcome, now);
            }
            Input::ConnectFailed(id, reason) => self.session.connect_failed(id, reason, now),
            Input::Frame(id, generation, received) => {
                if self.current_generation(id) != Some(generation) {
                    return;
                }
                let at = self.at(received.at);
                if self.session.frame(id, &received.frame, at, now) == FrameUse::Room {
                    let _ = self.outputs.send(Output::Room(received));
                }
            }
            Input::Closed(id, generation) => {
                if self.current_generation(id) == Some(generation) {
                    self.senders[id] = None;
                    self.session.closed(id, now);
                }
            }
            Input::Token(token) => {
                self.fetching = false;
                match token {
                    Ok(token) => self.session.refresh_token(token),
                    Err(e) => tracing::warn!("no fresh token: {e:#}"),
                }
            }
        }
    }

    /// Asks the token source for a fresh token, unless one is on its way.
    fn fetch_token(&mut self) {
        let Some(source) = self.tokens.as_mut().filter(|_| !self.fetching) else {
            return;
        };
        self.fetching = true;
        let fetch = source();
        let tx = self.inputs.clone();
        tokio::spawn(async move {
            let _ = tx.send(Input::Token(fetch.await));
        });
    }

    fn current_generation(&self, id: usize) -> Option<u64> {
        self.senders[id].as_ref().map(|(g, _)| *g)
    }

    fn command(&mut self, command: Command) {
        let kind = match command {
            Command::SendMedia(media) => client_frame::Kind::Media(media),
            Command::RequestKeyframe { peer_id, kind } => {
                client_frame::Kind::KeyframeRequest(KeyframeRequest { peer_id, kind })
            }
            Command::Stop => return,
        };
        self.session.send_to_room(kind);
    }

    /// Carries out the session's transmits and forwards its updates.
    fn pump(&mut self) {
        while let Some(transmit) = self.session.poll_transmit() {
            self.transmit(transmit);
        }
        while let Some(update) = self.session.poll_update() {
            let _ = self.outputs.send(Output::Session(update));
        }
        if self.session.take_decided() {
            let _ = self.outputs.send(Output::Snapshot(self.session.snapshot()));
        }
    }

    fn transmit(&mut self, transmit: Transmit) {
        match transmit {
            Transmit::Connect(candidate) => {
                let target = self.session.candidate(candidate).clone();
                let identity = ClientIdentity {
                    token: self.session.token().to_owned(),
                    ..self.config.identity.clone()
                };
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
            Transmit::Send(candidate, frame) => {
                if let Some((_, sender)) = &self.senders[candidate] {
                    sender.send(&frame);
                }
            }
            Transmit::Close(candidate) => self.senders[candidate] = None,
            Transmit::FetchToken { expires_unix } => {
                tracing::debug!(expires_unix, "fresh token needed");
                self.fetch_token();
            }
        }
    }

    fn hang_up(&mut self) {
        if let Some((id, leave)) = self.session.hang_up()
            && let Some((_, sender)) = &self.senders[id]
        {
            sender.send(&leave);
            sender.close();
        }
    }
}
