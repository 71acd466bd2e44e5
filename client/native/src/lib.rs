//! The native rallypoint client: real sockets around the sans-IO core.
//!
//! * [`connection`] — one connection to one relay over WebSocket or
//!   WebTransport, speaking framed `ClientFrame`s / `ServerFrame`s.

pub mod connection;
pub mod participant;
pub mod peer;
pub mod runner;
pub mod tls;

pub use connection::{ConnectError, Connection, Received, Route};
pub use peer::{ClientIdentity, Peer, PeerError, identity, media};
