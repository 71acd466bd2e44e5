//! Runs the sans-IO client [`Session`] on browser connections: a byte pipe.
//! The session owns the protocol (handshakes, generations, routing,
//! timers); client core's [`Driver`] does what every driver does alike (the
//! native runner runs the same one on tokio); this module is only the
//! browser's I/O ([`Io`]) and the loop that feeds it events, commands and
//! time.
//!
//! One task owns the driver and every connection; each connection's frames
//! arrive on one channel, tagged with its id and already stamped with their
//! arrival time.
//!
//! When the session asks for a fresh token, ahead of expiry, the driver gets
//! one from the same development issuer the lobby used, for the same user,
//! and hands it in: the call outlives its first token.

use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use rallypoint_client::Candidate;
use rallypoint_client::election::ElectionConfig;
use rallypoint_client::session::driver::{Arrived, Driver, Event, Io};
use rallypoint_client::session::{ConnectionId, Identity, Route, Session, SessionConfig};
use rallypoint_protocol::v1::{ClientFrame, ServerFrame};
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

type BrowserEvent = Event<(Connection, Incoming), Received>;

impl Arrived for Received {
    fn frame(&self) -> &ServerFrame {
        &self.frame
    }
}

/// The browser's I/O: local tasks opening and reading WebTransport and
/// WebSocket connections and fetching tokens, all reporting on one channel.
struct BrowserIo {
    events: mpsc::UnboundedSender<BrowserEvent>,
    outputs: mpsc::UnboundedSender<Output>,
}

impl Io for BrowserIo {
    type Opened = (Connection, Incoming);
    type Connection = Connection;
    type Received = Received;

    fn open(&mut self, connection: ConnectionId, target: &Candidate, timeout: Duration) {
        let (target, tx) = (target.clone(), self.events.clone());
        spawn_local(async move {
            let event = match transport::open(&target, timeout).await {
                Ok(opened) => Event::Opened {
                    connection,
                    max_datagram: opened.0.max_datagram(),
                    opened,
                },
                Err(reason) => Event::OpenFailed(connection, reason),
            };
            let _ = tx.unbounded_send(event);
        });
    }

    fn start_reading(
        &mut self,
        connection: ConnectionId,
        (open, mut incoming): (Connection, Incoming),
    ) -> Connection {
        let tx = self.events.clone();
        spawn_local(async move {
            while let Some(received) = incoming.next().await {
                let at = received.at;
                let frame = Event::Frame {
                    connection,
                    received,
                    at,
                };
                if tx.unbounded_send(frame).is_err() {
                    return;
                }
            }
            let _ = tx.unbounded_send(Event::Closed(connection));
        });
        open
    }

    fn send(&mut self, connection: &Connection, frame: Bytes, route: Route) {
        connection.send(frame, route);
    }

    /// From the same development issuer the lobby used, for the same user.
    fn fetch_token(&mut self, current: &str) -> bool {
        let (current, tx) = (current.to_owned(), self.events.clone());
        spawn_local(async move {
            let token = http::fresh_token(&current).await;
            if let Err(reason) = &token {
                web_sys::console::warn_1(&format!("no fresh token: {reason}").into());
            }
            let _ = tx.unbounded_send(Event::Token(token));
        });
        true
    }

    fn output(&mut self, output: Output) {
        let _ = self.outputs.unbounded_send(output);
    }

    fn hang_up(&mut self, connection: Connection, leave: ClientFrame) {
        spawn_local(connection.finish(leave));
    }
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
    let (event_tx, mut events) = mpsc::unbounded();
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
    let io = BrowserIo {
        events: event_tx,
        outputs,
    };
    let mut driver = Driver::new(session, io);
    driver.start(clock::now());
    loop {
        // Nothing to wait for is rare (the election always has a timer);
        // wake once a minute anyway.
        let now = clock::now();
        let wake = driver
            .poll_timeout()
            .unwrap_or(now + Duration::from_secs(60));
        let sleep = clock::sleep_ms(wake.since(now).as_millis() as u32).fuse();
        futures::pin_mut!(sleep);
        futures::select! {
            event = events.next() => {
                let Some(event) = event else { break };
                driver.event(event, clock::now());
            }
            command = commands.next() => match command {
                None | Some(Command::Stop) => break,
                Some(command) => driver.command(command, clock::now()),
            },
            _ = sleep => driver.timeout(clock::now()),
        }
    }
    driver.hang_up();
}
