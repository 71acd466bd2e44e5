//! What goes in and out of the election: the vocabulary its driver speaks.
//!
//! The driver reports [`Event`]s, carries out [`Action`]s, and passes
//! [`Notice`]s (with their [`Decision`]) and [`CandidateView`]s on to the UI
//! and telemetry.

use std::time::Duration;

use rallypoint_protocol::v1::{DecisionRule, ElectionReport, ElectionTrigger};

use super::stats::Summary;
use crate::candidate::Candidate;
use crate::time::Micros;

/// Index of a candidate in the list the election was created with.
pub type CandidateId = usize;

/// What happened, as the driver observed it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The connection is open and authenticated (Welcome received), and
    /// its relay answers this many probes a second
    /// (`rallypoint_protocol::limits::probes_answered` of what it said).
    Connected {
        candidate: CandidateId,
        probes_answered: u32,
    },
    ConnectFailed {
        candidate: CandidateId,
        reason: String,
    },
    /// A probe answer. `received_at` is the time the frame was read off the
    /// socket — not when the driver got round to handling it — and
    /// `relay_hold` how long the relay says it held the probe. The RTT is
    /// measured from the election's own record of when probe `seq` left,
    /// never from a time echoed by the relay (which a relay, or anyone on a
    /// `ws://` path, could fake); the hold is subtracted only up to
    /// [`super::MAX_RELAY_HOLD`], so a lying relay gains at most that much.
    ProbeAck {
        candidate: CandidateId,
        seq: u64,
        relay_hold: Duration,
        received_at: Micros,
    },
    ConnectionLost {
        candidate: CandidateId,
        reason: String,
    },
    /// The relay announced it is going away.
    Drain { candidate: CandidateId },
    /// A frame (media, presence, a probe answer) arrived on the candidate's
    /// connection at `at`: the path is alive. The election watches the
    /// serving connection's traffic; a dead relay shows first as silence.
    Heard { candidate: CandidateId, at: Micros },
    /// The client sent media through the serving relay at `at`. While it
    /// talks, the serving relay is probed often, so its answers are steady
    /// traffic to watch even when nobody else talks.
    MediaSent { at: Micros },
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a probe-only connection (connect, Hello, wait for Welcome).
    Open { candidate: CandidateId },
    /// Send `Probe{seq, client_send_us: now}`.
    SendProbe { candidate: CandidateId, seq: u64 },
    /// Join the room through this (already open) connection. The driver sends
    /// media through it from now on and re-requests keyframes.
    Join {
        candidate: CandidateId,
        join_seq: u64,
    },
    /// Stop being in the room on this connection but keep it open probe-only
    /// as a standby (`Leave{moving: true}`).
    Demote { candidate: CandidateId },
    /// Close the connection.
    Close { candidate: CandidateId },
    /// The serving relay went silent: send media through this standby as
    /// well (`Join{prepare}`), so a move there finds the room already
    /// receiving it (make-before-break).
    Prepare { candidate: CandidateId },
    /// The suspicion cleared: stop sending media through the standby
    /// prepared (`Leave`); it stays a probe-only standby.
    Unprepare { candidate: CandidateId },
}

/// A decision: the client now serves through `winner`.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub winner: CandidateId,
    pub previous: Option<CandidateId>,
    pub trigger: ElectionTrigger,
    pub rule: DecisionRule,
    pub took: Duration,
    pub reason: String,
}

/// What the UI and telemetry are told. Reports lack `report_id` and
/// `client_time_ms`: the session fills them ([`super::finish_report`]) from
/// data its driver handed in, since the core has neither randomness nor a
/// wall clock.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    Decided {
        decision: Decision,
        report: ElectionReport,
    },
    CandidateFailed {
        candidate: CandidateId,
        reason: String,
    },
    /// No candidate could be reached; the next attempt starts after `retry_in`.
    NoRelayReachable {
        retry_in: Duration,
        attempt: u32,
        report: ElectionReport,
    },
}

/// A candidate's situation, for live tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not connected and not needed.
    Idle,
    /// Measured by the running tournament.
    Contender,
    /// The room is joined through it.
    Serving,
    /// Connected probe-only, ready for failover.
    Standby,
    /// Being measured by a light re-probe.
    Reprobe,
}

/// A candidate as the UI sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateView {
    pub id: CandidateId,
    pub candidate: Candidate,
    pub role: Role,
    pub connecting: bool,
    pub connected: bool,
    pub summary: Summary,
    pub connect_time: Option<Duration>,
    pub error: Option<String>,
    /// Probes its relay answers a second: what its Welcome said, 25 until
    /// then or if it said nothing (`limits::probes_answered`).
    pub probes_answered: u32,
}
