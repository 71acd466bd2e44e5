//! What every driver of a [`Session`] does the same way, whatever its
//! runtime: keep the open connections by id, carry out the session's
//! transmits on them, feed it what the connections report, fetch one fresh
//! token at a time, and hand the application what the session says. The
//! runtime supplies only the I/O ([`Io`]) and the clock — the way `quinn`
//! drives `quinn-proto`: the native runner (tokio) and the browser driver
//! (wasm) are each a loop around a [`Driver`].
//!
//! Sans-IO like the session: nothing here spawns, sleeps or reads a clock.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use rallypoint_protocol::encode;
use rallypoint_protocol::v1::{ClientFrame, ServerFrame};

use super::{Command, ConnectionId, FrameUse, Output, Route, Session, Transmit};
use crate::{Candidate, Micros};

/// The I/O a runtime gives the session.
pub trait Io {
    /// A connection as it opened, before anything is read from it.
    type Opened;
    /// The sending side of an open connection, kept by the driver.
    type Connection;
    /// A frame as it arrived (the application gets room traffic as is).
    type Received: Arrived;

    /// Starts opening `connection` to `target`, giving up after `timeout`;
    /// the outcome comes back as [`Event::Opened`] or [`Event::OpenFailed`].
    fn open(&mut self, connection: ConnectionId, target: &Candidate, timeout: Duration);
    /// Starts reading an opened connection (its frames come back as
    /// [`Event::Frame`], its end as [`Event::Closed`]); the sending side.
    fn start_reading(&mut self, connection: ConnectionId, opened: Self::Opened)
    -> Self::Connection;
    fn send(&mut self, connection: &Self::Connection, frame: Bytes, route: Route);
    /// Starts fetching a fresh token like `current` (for the same user and
    /// room); its outcome comes back as [`Event::Token`]. False when this
    /// driver has no way to get one.
    fn fetch_token(&mut self, current: &str) -> bool;
    /// Hands the application what the session said, or room traffic.
    fn output(&mut self, output: Output<Self::Received>);
    /// The call is over: say `leave` on `connection`, then close it.
    fn hang_up(&mut self, connection: Self::Connection, leave: ClientFrame);
}

/// A received frame, as the runtime stamped it.
pub trait Arrived {
    fn frame(&self) -> &ServerFrame;
}

/// What the runtime reports back.
pub enum Event<O, R> {
    Opened {
        connection: ConnectionId,
        opened: O,
        max_datagram: usize,
    },
    OpenFailed(ConnectionId, String),
    /// A frame read at `at` (the driver's clock, when it came off the wire).
    Frame {
        connection: ConnectionId,
        received: R,
        at: Micros,
    },
    Closed(ConnectionId),
    /// A fresh token, or why there is none (the runtime logs it).
    Token(Result<String, String>),
}

/// A session and the connections it holds, on some runtime's I/O.
pub struct Driver<I: Io> {
    session: Session,
    io: I,
    connections: HashMap<ConnectionId, I::Connection>,
    /// A token fetch is under way (the session may ask again meanwhile).
    fetching: bool,
}

impl<I: Io> Driver<I> {
    pub fn new(session: Session, io: I) -> Self {
        Driver {
            session,
            io,
            connections: HashMap::new(),
            fetching: false,
        }
    }

    /// Starts the election: every candidate is connected at once.
    pub fn start(&mut self, now: Micros) {
        self.session.start(now);
        self.pump();
    }

    /// When [`Driver::timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Micros> {
        self.session.poll_timeout()
    }

    pub fn timeout(&mut self, now: Micros) {
        self.session.handle_timeout(now);
        self.pump();
    }

    /// Carries out what the application asks ([`Command::Stop`] is the
    /// runtime's: it ends its loop and calls [`Driver::hang_up`]).
    pub fn command(&mut self, command: Command, now: Micros) {
        self.session.command(command, now);
        self.pump();
    }

    pub fn event(&mut self, event: Event<I::Opened, I::Received>, now: Micros) {
        match event {
            Event::Opened {
                connection,
                opened,
                max_datagram,
            } => {
                if self.session.opened(connection, max_datagram, now) {
                    let sending = self.io.start_reading(connection, opened);
                    self.connections.insert(connection, sending);
                }
            }
            Event::OpenFailed(connection, reason) => {
                self.session.open_failed(connection, reason, now)
            }
            Event::Frame {
                connection,
                received,
                at,
            } => {
                if self.session.frame(connection, received.frame(), at, now) == FrameUse::Room {
                    self.io.output(Output::Room(received));
                }
            }
            Event::Closed(connection) => {
                self.connections.remove(&connection);
                self.session.closed(connection, now);
            }
            Event::Token(token) => {
                self.fetching = false;
                // On an error (the runtime logged it) the session asks
                // again a little later.
                if let Ok(token) = token {
                    self.session.refresh_token(token);
                }
            }
        }
        self.pump();
    }

    /// Hangs up: the room is told at once, every connection is closed.
    pub fn hang_up(&mut self) {
        if let Some((id, leave)) = self.session.hang_up()
            && let Some(connection) = self.connections.remove(&id)
        {
            self.io.hang_up(connection, leave);
        }
        self.connections.clear();
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn io(&self) -> &I {
        &self.io
    }

    /// Carries out the session's transmits and hands on its updates.
    fn pump(&mut self) {
        while let Some(transmit) = self.session.poll_transmit() {
            match transmit {
                Transmit::Open {
                    connection,
                    timeout,
                } => {
                    let target = self.session.candidate(connection.candidate);
                    self.io.open(connection, target, timeout);
                }
                Transmit::Send {
                    connection,
                    frame,
                    route,
                } => {
                    if let Some(open) = self.connections.get(&connection) {
                        self.io.send(open, encode(&frame), route);
                    }
                }
                Transmit::Close(connection) => {
                    self.connections.remove(&connection);
                }
                Transmit::FetchToken { .. } => {
                    if !self.fetching {
                        self.fetching = self.io.fetch_token(self.session.token());
                    }
                }
            }
        }
        while let Some(update) = self.session.poll_update() {
            self.io.output(Output::Session(update));
        }
    }
}
