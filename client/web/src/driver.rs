//! Runs the sans-IO client [`Session`] on browser connections: a byte pipe,
//! the wasm twin of the native client's runner. The session owns the
//! protocol (handshakes, generations, routing, timers); the driver opens the
//! transports it asks for, moves frames and time in and out, and tells the
//! call what the session says.
//!
//! One task owns the session and every connection; each connection's frames
//! arrive on one channel, tagged with its id and already stamped with their
//! arrival time.
//!
//! When the session asks for a fresh token, ahead of expiry, the driver gets
//! one from the same development issuer the lobby used, for the same user,
//! and hands it in: the call outlives its first token.

use std::collections::HashMap;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use rallypoint_client::Candidate;
use rallypoint_client::election::ElectionConfig;
use rallypoint_client::session::{
    ConnectionId, FrameUse, Identity, Session, SessionConfig, Transmit,
};
use rallypoint_protocol::encode;
use wasm_bindgen_futures::spawn_local;

use crate::transport::{self, Connection, Incoming, Received};
use crate::{clock, http};

#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub election: ElectionConfig,
    pub connect_timeout: Duration,
    pub room: String,
    /// Who joins: the first token (the session keeps the newest), the
    /// call's session id, the browser.
    pub identity: Identity,
}

/// What the call asks of the driver: the session's vocabulary.
pub use rallypoint_client::session::Command;

/// What the driver tells the call.
pub type Output = rallypoint_client::session::Output<Received>;

enum Input {
    Opened(ConnectionId, Connection, Incoming),
    OpenFailed(ConnectionId, String),
    Frame(ConnectionId, Received),
    Closed(ConnectionId),
    Token(Result<String, String>),
}

struct Driver {
    session: Session,
    /// Every connection the session holds.
    connections: HashMap<ConnectionId, Connection>,
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
    let started = clock::now();
    let session = Session::new(
        candidates,
        SessionConfig {
            election: config.election,
            identity: config.identity,
            room: Some(config.room),
            connect_timeout: config.connect_timeout,
            report_seed: clock::random_id(),
            wall_at_zero_ms: clock::unix_ms().saturating_sub(started.as_millis()),
        },
    );
    let mut driver = Driver {
        session,
        connections: HashMap::new(),
        inputs: input_tx,
        outputs,
        fetching: false,
    };
    driver.session.start(clock::now());
    driver.pump();
    loop {
        // Nothing to wait for is rare (the election always has a timer);
        // wake once a minute anyway.
        let now = clock::now();
        let wake = driver
            .session
            .poll_timeout()
            .unwrap_or(now + Duration::from_secs(60));
        let sleep = clock::sleep_ms(wake.since(now).as_millis() as u32).fuse();
        futures::pin_mut!(sleep);
        futures::select! {
            input = inputs.next() => {
                let Some(input) = input else { break };
                driver.input(input);
            }
            command = commands.next() => match command {
                None | Some(Command::Stop) => break,
                Some(command) => driver.command(command),
            },
            _ = sleep => driver.session.handle_timeout(clock::now()),
        }
        driver.pump();
    }
    driver.hang_up();
}

impl Driver {
    fn input(&mut self, input: Input) {
        let now = clock::now();
        match input {
            Input::Opened(id, conn, mut incoming) => {
                if !self.session.opened(id, conn.max_datagram(), now) {
                    return;
                }
                self.connections.insert(id, conn);
                let tx = self.inputs.clone();
                spawn_local(async move {
                    while let Some(received) = incoming.next().await {
                        if tx.unbounded_send(Input::Frame(id, received)).is_err() {
                            return;
                        }
                    }
                    let _ = tx.unbounded_send(Input::Closed(id));
                });
            }
            Input::OpenFailed(id, reason) => self.session.open_failed(id, reason, now),
            Input::Frame(id, received) => {
                if self.session.frame(id, &received.frame, received.at, now) == FrameUse::Room {
                    let _ = self.outputs.unbounded_send(Output::Room(received));
                }
            }
            Input::Closed(id) => {
                self.connections.remove(&id);
                self.session.closed(id, now);
            }
            Input::Token(token) => {
                self.fetching = false;
                match token {
                    Ok(token) => self.session.refresh_token(token),
                    Err(message) => web_sys::console::warn_1(&message.into()),
                }
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

    fn command(&mut self, command: Command) {
        self.session.command(command, clock::now());
    }

    /// Carries out the session's transmits and forwards its updates.
    fn pump(&mut self) {
        while let Some(transmit) = self.session.poll_transmit() {
            self.transmit(transmit);
        }
        while let Some(update) = self.session.poll_update() {
            let _ = self.outputs.unbounded_send(Output::Session(update));
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
                spawn_local(async move {
                    let input = match transport::open(&target, timeout).await {
                        Ok((conn, incoming)) => Input::Opened(connection, conn, incoming),
                        Err(reason) => Input::OpenFailed(connection, reason),
                    };
                    let _ = tx.unbounded_send(input);
                });
            }
            Transmit::Send {
                connection,
                frame,
                route,
            } => {
                if let Some(conn) = self.connections.get(&connection) {
                    conn.send(encode(&frame), route);
                }
            }
            Transmit::Close(connection) => {
                self.connections.remove(&connection);
            }
            Transmit::FetchToken { .. } => self.fetch_token(),
        }
    }

    /// Hangs up: the room is told at once, every connection is closed.
    fn hang_up(&mut self) {
        if let Some((id, leave)) = self.session.hang_up()
            && let Some(conn) = self.connections.remove(&id)
        {
            spawn_local(conn.finish(leave));
        }
        self.connections.clear();
    }
}
