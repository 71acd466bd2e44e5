//! Budgets that hold before anyone has authenticated: how many connections the
//! relay holds at once, counted from the moment a socket is accepted or a QUIC
//! handshake starts — not from when a session begins — so a flood of silent
//! sockets or half-finished handshakes cannot exceed `--max-connections`.
//!
//! Every count is an RAII guard: a task that panics or is aborted still gives
//! its slot back, so the counters never leak.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::TransportKind;
use crate::metrics::Stats;

/// The relay-wide connection budget, shared by every listener.
#[derive(Debug, Clone)]
pub struct ConnectionBudget {
    slots: Arc<Semaphore>,
    limit: usize,
}

/// One slot of the budget, held for as long as the socket lives (it travels
/// inside the socket's I/O type, through a WebSocket upgrade).
#[derive(Debug)]
pub struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
}

impl ConnectionBudget {
    pub fn new(limit: usize) -> Self {
        ConnectionBudget {
            slots: Arc::new(Semaphore::new(limit.max(1))),
            limit: limit.max(1),
        }
    }

    /// A slot for a new socket or handshake, or `None` at the limit (the
    /// caller closes the connection at once).
    pub fn try_admit(&self) -> Option<ConnectionSlot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        Some(ConnectionSlot { _permit: permit })
    }

    /// Slots in use (sessions and pending connections).
    pub fn in_use(&self) -> usize {
        self.limit - self.slots.available_permits()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Counts an open session in the relay's stats; closing happens on drop, so
/// a session task that panics is not counted as open forever.
pub struct OpenConnection {
    stats: Arc<Stats>,
    transport: TransportKind,
}

impl OpenConnection {
    pub fn new(stats: Arc<Stats>, transport: TransportKind) -> Self {
        stats.connection_opened(transport);
        OpenConnection { stats, transport }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.stats.connection_closed(self.transport);
    }
}

/// Connections per token subject (`sub`), so one token cannot take every slot
/// of the relay with probe-only connections.
#[derive(Debug, Clone)]
pub struct SubjectConnections {
    limit: usize,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

/// One connection of a subject; released on drop.
#[derive(Debug)]
pub struct SubjectSlot {
    subject: String,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl SubjectConnections {
    pub fn new(limit: usize) -> Self {
        SubjectConnections {
            limit: limit.max(1),
            counts: Arc::default(),
        }
    }

    /// A slot for one more connection of `subject`, or `None` at its limit.
    pub fn try_admit(&self, subject: &str) -> Option<SubjectSlot> {
        let mut counts = self.counts.lock().expect("subject counts lock");
        let count = counts.entry(subject.to_owned()).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(SubjectSlot {
            subject: subject.to_owned(),
            counts: self.counts.clone(),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl Drop for SubjectSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().expect("subject counts lock");
        if let Some(count) = counts.get_mut(&self.subject) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.subject);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_a_hard_cap_and_slots_come_back_on_drop() {
        let budget = ConnectionBudget::new(2);
        let a = budget.try_admit().expect("first");
        let _b = budget.try_admit().expect("second");
        assert!(budget.try_admit().is_none(), "third is over the limit");
        assert_eq!(budget.in_use(), 2);
        drop(a);
        assert_eq!(budget.in_use(), 1);
        assert!(budget.try_admit().is_some());
    }

    #[test]
    fn a_panicking_session_gives_its_count_back() {
        let stats = Arc::new(Stats::default());
        let s = stats.clone();
        let result = std::panic::catch_unwind(move || {
            let _open = OpenConnection::new(s, TransportKind::WebSocket);
            panic!("session task bug");
        });
        assert!(result.is_err());
        assert_eq!(stats.connections_active(), 0);
    }

    #[test]
    fn one_subject_cannot_take_more_than_its_share() {
        let subjects = SubjectConnections::new(2);
        let a = subjects.try_admit("mallory").unwrap();
        let _b = subjects.try_admit("mallory").unwrap();
        assert!(subjects.try_admit("mallory").is_none());
        assert!(subjects.try_admit("alice").is_some());
        drop(a);
        assert!(subjects.try_admit("mallory").is_some());
    }
}
