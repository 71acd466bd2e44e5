//! The session's connections: at most one per candidate, each known by a
//! [`ConnectionId`] whose generation tells a replaced connection's late
//! events from the current one's, and each walked through its handshake
//! under a deadline.
//!
//! A connection is *opening* (the driver is opening the transport),
//! *greeting* (Hello sent, waiting for Welcome) or *open*. Only an open one
//! carries probes, room traffic and reports.

use std::time::Duration;

use rallypoint_protocol::prost::Message;
use rallypoint_protocol::v1::ClientFrame;

use super::route::{Route, route};
use crate::TransportKind;
use crate::election::CandidateId;
use crate::time::Micros;

/// One connection the session asked a driver to open. Events a driver
/// reports about a connection the session has since closed or replaced
/// are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId {
    pub candidate: CandidateId,
    pub generation: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Opening,
    Greeting,
    Open,
}

#[derive(Debug)]
struct Connection {
    generation: u64,
    phase: Phase,
    /// Until Welcome: when the handshake gives up.
    deadline: Micros,
    max_datagram: usize,
}

pub(super) struct Connections {
    transports: Vec<TransportKind>,
    slots: Vec<Option<Connection>>,
    generations: u64,
}

impl Connections {
    pub(super) fn new(transports: Vec<TransportKind>) -> Self {
        Connections {
            slots: transports.iter().map(|_| None).collect(),
            transports,
            generations: 0,
        }
    }

    /// A new connection to `candidate` whose handshake must end within
    /// `timeout`; the one it replaces, if any, to close.
    pub(super) fn open(
        &mut self,
        candidate: CandidateId,
        now: Micros,
        timeout: Duration,
    ) -> (ConnectionId, Option<ConnectionId>) {
        let replaced = self.close(candidate);
        self.generations += 1;
        self.slots[candidate] = Some(Connection {
            generation: self.generations,
            phase: Phase::Opening,
            deadline: now + timeout,
            max_datagram: 0,
        });
        let id = ConnectionId {
            candidate,
            generation: self.generations,
        };
        (id, replaced)
    }

    pub(super) fn candidates(&self) -> usize {
        self.slots.len()
    }

    /// The phase of `id` if it is the candidate's current connection.
    pub(super) fn phase(&self, id: ConnectionId) -> Option<Phase> {
        self.current(id).map(|c| c.phase)
    }

    /// The transport of `id` is open: the handshake starts. `false` if the
    /// session no longer wants it.
    pub(super) fn opened(&mut self, id: ConnectionId, max_datagram: usize) -> bool {
        match self.current_mut(id) {
            Some(c) if c.phase == Phase::Opening => {
                c.phase = Phase::Greeting;
                c.max_datagram = max_datagram;
                true
            }
            _ => false,
        }
    }

    /// `id` said Welcome.
    pub(super) fn welcomed(&mut self, id: ConnectionId) {
        if let Some(c) = self.current_mut(id) {
            c.phase = Phase::Open;
        }
    }

    /// Forgets the candidate's connection; its id, to close, if it had one.
    pub(super) fn close(&mut self, candidate: CandidateId) -> Option<ConnectionId> {
        let c = self.slots[candidate].take()?;
        Some(ConnectionId {
            candidate,
            generation: c.generation,
        })
    }

    /// The candidate's connection once it said Welcome.
    pub(super) fn open_one(&self, candidate: CandidateId) -> Option<ConnectionId> {
        let c = self.slots[candidate].as_ref()?;
        (c.phase == Phase::Open).then_some(ConnectionId {
            candidate,
            generation: c.generation,
        })
    }

    pub(super) fn is_open(&self, candidate: CandidateId) -> bool {
        self.open_one(candidate).is_some()
    }

    /// How `frame` travels on `id`.
    pub(super) fn route(&self, id: ConnectionId, frame: &ClientFrame) -> Route {
        let max_datagram = self.current(id).map_or(0, |c| c.max_datagram);
        route(
            frame.kind.as_ref(),
            self.transports[id.candidate],
            frame.encoded_len(),
            max_datagram,
        )
    }

    /// The earliest handshake deadline.
    pub(super) fn poll_timeout(&self) -> Option<Micros> {
        self.slots
            .iter()
            .flatten()
            .filter(|c| c.phase != Phase::Open)
            .map(|c| c.deadline)
            .min()
    }

    /// Connections whose handshake is past its deadline.
    pub(super) fn overdue(&self, now: Micros) -> Vec<ConnectionId> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(candidate, c)| {
                let c = c.as_ref()?;
                (c.phase != Phase::Open && c.deadline <= now).then_some(ConnectionId {
                    candidate,
                    generation: c.generation,
                })
            })
            .collect()
    }

    fn current(&self, id: ConnectionId) -> Option<&Connection> {
        self.slots
            .get(id.candidate)?
            .as_ref()
            .filter(|c| c.generation == id.generation)
    }

    fn current_mut(&mut self, id: ConnectionId) -> Option<&mut Connection> {
        self.slots
            .get_mut(id.candidate)?
            .as_mut()
            .filter(|c| c.generation == id.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn a_replaced_connections_events_are_not_the_current_ones() {
        let mut connections = Connections::new(vec![TransportKind::WebSocket]);
        let (first, replaced) = connections.open(0, Micros::ZERO, T);
        assert_eq!(replaced, None);
        let (second, replaced) = connections.open(0, Micros::ZERO, T);
        assert_eq!(replaced, Some(first));
        assert!(!connections.opened(first, 0), "the first is gone");
        assert_eq!(connections.phase(first), None);
        assert!(connections.opened(second, 0));
        assert_eq!(connections.phase(second), Some(Phase::Greeting));
        assert!(!connections.is_open(0), "not before Welcome");
        connections.welcomed(second);
        assert_eq!(connections.open_one(0), Some(second));
    }

    #[test]
    fn handshakes_are_due_at_their_deadline_open_connections_never() {
        let mut connections =
            Connections::new(vec![TransportKind::WebSocket, TransportKind::WebTransport]);
        let (a, _) = connections.open(0, Micros::ZERO, T);
        let (b, _) = connections.open(1, Micros::from_millis(1000), T);
        assert_eq!(connections.poll_timeout(), Some(Micros::ZERO + T));
        assert_eq!(connections.overdue(Micros::ZERO + T), vec![a]);
        connections.opened(a, 0);
        connections.welcomed(a);
        assert_eq!(connections.poll_timeout(), Some(Micros::from_millis(6000)));
        assert_eq!(connections.overdue(Micros::from_millis(60_000)), vec![b]);
    }
}
