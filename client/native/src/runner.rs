//! Runs the sans-IO client [`Session`] on real connections with tokio: a
//! byte pipe. The session owns the protocol (handshakes, generations,
//! routing, timers); client core's [`Driver`] does what every driver does
//! alike (the browser runs the same one); this module is only tokio's I/O
//! ([`Io`]) and the loop that feeds it events, commands and time.
//!
//! One task owns the driver and every connection's sending half; each
//! connection's frames arrive on one channel, tagged with its id and
//! stamped when they were read off the socket.
//!
//! A call that should outlive its token gets a [`TokenSource`]
//! ([`spawn_refreshing`]): the runner calls it when the session asks, ahead
//! of expiry. Without one, relays end the call when the token expires, and
//! the session reports that as a `TokenExpired` refusal.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use rallypoint_client::election::ElectionConfig;
use rallypoint_client::session::driver::{Arrived, Driver, Event, Io};
use rallypoint_client::session::{ConnectionId, Route, Session, SessionConfig};
use rallypoint_client::{Candidate, Micros};
use rallypoint_protocol::v1::{ClientFrame, ServerFrame};
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

type RunnerEvent = Event<Connection, Received>;

impl Arrived for Received {
    fn frame(&self) -> &ServerFrame {
        &self.frame
    }
}

/// The runner's I/O: tokio tasks for opening and reading connections and
/// fetching tokens, all reporting on one channel.
struct TokioIo {
    origin: Instant,
    events: mpsc::UnboundedSender<RunnerEvent>,
    outputs: mpsc::UnboundedSender<Output>,
    tokens: Option<TokenSource>,
}

impl Io for TokioIo {
    type Opened = Connection;
    type Connection = Sender;
    type Received = Received;

    fn open(&mut self, connection: ConnectionId, target: &Candidate, timeout: Duration) {
        let (target, tx) = (target.clone(), self.events.clone());
        tokio::spawn(async move {
            let event = match Connection::connect(&target, timeout).await {
                Ok(opened) => Event::Opened {
                    connection,
                    max_datagram: opened.max_datagram(),
                    opened,
                },
                Err(e) => Event::OpenFailed(connection, e.to_string()),
            };
            let _ = tx.send(event);
        });
    }

    fn start_reading(&mut self, connection: ConnectionId, opened: Connection) -> Sender {
        let (sender, mut receiver) = opened.into_split();
        let (tx, origin) = (self.events.clone(), self.origin);
        tokio::spawn(async move {
            while let Some(received) = receiver.recv().await {
                let at = micros_since(origin, received.at);
                let frame = Event::Frame {
                    connection,
                    received,
                    at,
                };
                if tx.send(frame).is_err() {
                    return;
                }
            }
            let _ = tx.send(Event::Closed(connection));
        });
        sender
    }

    fn send(&mut self, connection: &Sender, frame: Bytes, route: Route) {
        connection.send_raw(frame, route);
    }

    fn fetch_token(&mut self, _current: &str) -> bool {
        let Some(source) = self.tokens.as_mut() else {
            return false;
        };
        let (fetch, tx) = (source(), self.events.clone());
        tokio::spawn(async move {
            let token = fetch.await.map_err(|e| {
                tracing::warn!("no fresh token: {e:#}");
                format!("{e:#}")
            });
            let _ = tx.send(Event::Token(token));
        });
        true
    }

    fn output(&mut self, output: Output) {
        let _ = self.outputs.send(output);
    }

    fn hang_up(&mut self, connection: Sender, leave: ClientFrame) {
        connection.send(&leave);
        connection.close();
    }
}

fn micros_since(origin: Instant, instant: Instant) -> Micros {
    Micros(instant.saturating_duration_since(origin).as_micros() as u64)
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
    let (event_tx, mut events) = mpsc::unbounded_channel();
    let origin = Instant::now();
    let now = move || micros_since(origin, Instant::now());
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
    let io = TokioIo {
        origin,
        events: event_tx,
        outputs,
        tokens,
    };
    let mut driver = Driver::new(session, io);
    driver.start(Micros::ZERO);
    loop {
        let deadline = driver
            .poll_timeout()
            .map(|t| tokio::time::Instant::from_std(origin + Duration::from_micros(t.0)));
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                driver.event(event, now());
            }
            command = commands.recv() => match command {
                None | Some(Command::Stop) => break,
                Some(command) => driver.command(command, now()),
            },
            _ = sleep_until(deadline) => driver.timeout(now()),
        }
    }
    driver.hang_up();
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
