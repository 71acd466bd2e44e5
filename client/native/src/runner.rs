//! Runs the sans-IO client [`Session`] on real connections with tokio: a
//! byte pipe. The session owns the protocol (handshakes, generations,
//! routing, timers); the runner opens the transports it asks for, moves
//! frames and time in and out, and hands the application what the session
//! says.
//!
//! One task owns the session and every connection's sending half; each
//! connection's frames arrive on one channel, tagged with its id and
//! stamped when they were read off the socket.
//!
//! A call that should outlive its token gets a [`TokenSource`]
//! ([`spawn_refreshing`]): the runner calls it when the session asks, ahead
//! of expiry. Without one, relays end the call when the token expires, and
//! the session reports that as a `TokenExpired` refusal.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use rallypoint_client::election::ElectionConfig;
use rallypoint_client::session::{ConnectionId, FrameUse, Session, SessionConfig, Transmit};
use rallypoint_client::{Candidate, Micros};
use rallypoint_protocol::encode;
use tokio::sync::mpsc;

use crate::connection::{Connection, Received, Sender};
use crate::peer::ClientIdentity;

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

/// What the application asks of the runner: the session's vocabulary.
pub use rallypoint_client::session::Command;

/// What the runner tells the application.
pub type Output = rallypoint_client::session::Output<Received>;

enum Input {
    Opened(ConnectionId, Connection),
    OpenFailed(ConnectionId, String),
    Frame(ConnectionId, Received),
    Closed(ConnectionId),
    Token(anyhow::Result<String>),
}

struct Runner {
    session: Session,
    origin: Instant,
    /// The sending half of every connection the session holds.
    senders: HashMap<ConnectionId, Sender>,
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
    let origin = Instant::now();
    let session = Session::new(
        candidates,
        SessionConfig {
            election: config.election,
            identity: config.identity,
            room: config.room,
            connect_timeout: config.connect_timeout,
            report_seed: rand::random(),
            wall_at_zero_ms: crate::participant::unix_micros() / 1000,
        },
    );
    let mut runner = Runner {
        session,
        origin,
        senders: HashMap::new(),
        inputs: input_tx,
        outputs,
        tokens,
        fetching: false,
    };
    runner.session.start(Micros::ZERO);
    runner.pump();
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
            Input::Opened(id, conn) => {
                if !self.session.opened(id, conn.max_datagram(), now) {
                    return;
                }
                let (sender, mut receiver) = conn.into_split();
                self.senders.insert(id, sender);
                let tx = self.inputs.clone();
                tokio::spawn(async move {
                    while let Some(received) = receiver.recv().await {
                        if tx.send(Input::Frame(id, received)).is_err() {
                            return;
                        }
                    }
                    let _ = tx.send(Input::Closed(id));
                });
            }
            Input::OpenFailed(id, reason) => self.session.open_failed(id, reason, now),
            Input::Frame(id, received) => {
                let at = self.at(received.at);
                if self.session.frame(id, &received.frame, at, now) == FrameUse::Room {
                    let _ = self.outputs.send(Output::Room(received));
                }
            }
            Input::Closed(id) => {
                self.senders.remove(&id);
                self.session.closed(id, now);
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

    fn command(&mut self, command: Command) {
        let now = self.now();
        self.session.command(command, now);
    }

    /// Carries out the session's transmits and forwards its updates.
    fn pump(&mut self) {
        while let Some(transmit) = self.session.poll_transmit() {
            self.transmit(transmit);
        }
        while let Some(update) = self.session.poll_update() {
            let _ = self.outputs.send(Output::Session(update));
        }
    }

    fn transmit(&mut self, transmit: Transmit) {
        match transmit {
            Transmit::Open {
                connection,
                timeout,
            } => {
                let target = self.session.candidate(connection.candidate).clone();
                let tx = self.inputs.clone();
                tokio::spawn(async move {
                    let input = match Connection::connect(&target, timeout).await {
                        Ok(conn) => Input::Opened(connection, conn),
                        Err(e) => Input::OpenFailed(connection, e.to_string()),
                    };
                    let _ = tx.send(input);
                });
            }
            Transmit::Send {
                connection,
                frame,
                route,
            } => {
                if let Some(sender) = self.senders.get(&connection) {
                    sender.send_raw(encode(&frame), route);
                }
            }
            Transmit::Close(connection) => {
                self.senders.remove(&connection);
            }
            Transmit::FetchToken { expires_unix } => {
                tracing::debug!(expires_unix, "fresh token needed");
                self.fetch_token();
            }
        }
    }

    fn hang_up(&mut self) {
        if let Some((id, leave)) = self.session.hang_up()
            && let Some(sender) = self.senders.get(&id)
        {
            sender.send(&leave);
            sender.close();
        }
    }
}
