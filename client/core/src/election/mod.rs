//! The relay election, sans-IO.
//!
//! [`Election`] holds no clock and no socket. Its driver (the native runner,
//! the browser app, a virtual-time simulation) feeds it [`Event`]s and the
//! current time, calls [`Election::handle_timeout`] when
//! [`Election::poll_timeout`] says so, and carries out the [`Action`]s it
//! emits: open a probe-only connection, send a probe, join the room through a
//! candidate, demote or close a connection. [`Notice`]s tell the UI and
//! telemetry what was decided and why, each with an `ElectionReport`.
//!
//! Life of a client:
//! 1. **Tournament** — every candidate is opened at once and probed every
//!    `probe_interval`; the tournament stops when the leader is clearly best
//!    (see [`rule`]) or at the deadline.
//! 2. **Serving** — the winner is joined; `standbys` runners-up (on other
//!    relays) stay connected probe-only and are probed slower; everyone else is
//!    closed and re-probed lightly every `reprobe_interval`. While the serving
//!    path is suspected lossy, the standby is sought in another region and
//!    probed faster (see [`rule`], Loss).
//! 3. **Failover** — the serving relay is lost, drains, falls silent (see
//!    [`watch`]) or misses probes in a row (`failover_lost_probes`, more on a
//!    path whose loss makes that many likely by chance; on a WebSocket, for
//!    at least `stream_stall_limit`, since TCP stalls rather than loses):
//!    a burst of probes makes sure, then the call switches to the best
//!    standby at once and re-elects in the background. Neither a lossy path
//!    nor a retransmission stall moves a call: ten-minute talking calls at
//!    5% loss and 30 ms jitter never do (`tests/election_sim.rs`).
//! 4. **Switching** — a measured alternative better by 10 ms and 33% for
//!    `switch_sustain` takes over, longer after recent moves (see
//!    [`damping`]: a degradation that follows the call is not chased); a
//!    failed re-election never drops a working connection.

pub mod config;
mod damping;
mod events;
mod report;
pub mod rule;
mod slot;
pub mod stats;
mod watch;
mod wording;

use std::collections::VecDeque;
use std::time::Duration;

use rallypoint_protocol::v1::{
    CandidateOutcome, ClientContext, DecisionRule, ElectionReport, ElectionTrigger,
};

pub use config::{ElectionConfig, StoppingRule};
use damping::SwitchDamping;
pub use events::{Action, CandidateId, CandidateView, Decision, Event, Notice, Role};
pub use report::finish_report;
use rule::{Measured, MeasuredState};
pub use slot::MAX_RELAY_HOLD;
use slot::{Conn, Slot};
pub use stats::{RttStats, Summary};
use watch::{Alarm, TrafficWatch};

use crate::candidate::Candidate;
use crate::time::Micros;

/// After losing the relay with no standby, how long to wait for more answers
/// once the first one is in.
const URGENT_WAIT: Duration = Duration::from_millis(300);

/// Media sent keeps the client "talking" this long.
const TALKING_FOR: Duration = Duration::from_secs(1);

/// How many times the usual samples a light re-probe takes while the serving
/// path is lossy (30 instead of 5: six seconds of probing every 30 s).
const LOSSY_REPROBE_FACTOR: u32 = 6;

#[derive(Debug, Clone)]
struct Tournament {
    started: Micros,
    trigger: ElectionTrigger,
    /// After a failover without standby: the call is down, decide on the first
    /// usable answers and re-elect properly afterwards.
    urgent: bool,
    members: Vec<CandidateId>,
    /// The deadline passed with nothing measured yet: waiting for connects.
    overtime: bool,
}

#[derive(Debug, Clone, Copy)]
struct Challenge {
    challenger: CandidateId,
    since: Micros,
}

pub struct Election {
    config: ElectionConfig,
    slots: Vec<Slot>,
    actions: VecDeque<Action>,
    notices: VecDeque<Notice>,
    serving: Option<CandidateId>,
    /// The serving connection's traffic (see [`watch`]).
    watch: TrafficWatch,
    /// The standby media also goes through while the serving relay is
    /// suspect ([`Action::Prepare`]); the failover's first choice.
    prepared: Option<CandidateId>,
    /// The client sends media until then (a second after its last frame).
    talking_until: Option<Micros>,
    tournament: Option<Tournament>,
    challenge: Option<Challenge>,
    /// Recent moves for degradation, which make the next wait longer (see
    /// [`damping`]).
    damping: SwitchDamping,
    retry_at: Option<(Micros, ElectionTrigger)>,
    attempts: u32,
    next_reprobe: Option<Micros>,
    /// Since the last decision, an early re-probe went looking for a
    /// standby off the serving path, which was suspected lossy (see
    /// [`Election::seek_a_clean_path`]).
    sought_clean_path: bool,
    /// Standby probes sent at `loss_evidence_probe_interval` since the last
    /// decision: at most `loss_evidence_probes`, whichever standbys took
    /// them (the serving relay's, probed as fast meanwhile, are not counted).
    loss_evidence_sent: u32,
    next_seq: u64,
    last_join_seq: Option<u64>,
    report_seq: u32,
    client_session_id: bytes::Bytes,
    client: ClientContext,
}

impl Election {
    /// An election over `candidates`. Nothing happens until [`Election::start`].
    pub fn new(
        candidates: Vec<Candidate>,
        config: ElectionConfig,
        client_session_id: bytes::Bytes,
        client: ClientContext,
    ) -> Self {
        let slots = candidates.into_iter().map(Slot::new).collect();
        Election {
            config,
            slots,
            actions: VecDeque::new(),
            notices: VecDeque::new(),
            serving: None,
            watch: TrafficWatch::default(),
            prepared: None,
            talking_until: None,
            tournament: None,
            challenge: None,
            damping: SwitchDamping::default(),
            retry_at: None,
            attempts: 0,
            next_reprobe: None,
            sought_clean_path: false,
            loss_evidence_sent: 0,
            next_seq: 0,
            last_join_seq: None,
            report_seq: 0,
            client_session_id,
            client,
        }
    }

    /// Starts the initial tournament.
    pub fn start(&mut self, now: Micros) {
        self.begin_tournament(now, ElectionTrigger::Initial, false, None);
    }

    pub fn config(&self) -> &ElectionConfig {
        &self.config
    }

    pub fn serving(&self) -> Option<CandidateId> {
        self.serving
    }

    pub fn candidate(&self, id: CandidateId) -> &Candidate {
        &self.slots[id].candidate
    }

    /// True while a tournament runs (initial, re-election, or after a failover).
    pub fn electing(&self) -> bool {
        self.tournament.is_some()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn poll_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }

    /// What `id` is to the election now.
    pub fn role(&self, id: CandidateId) -> Role {
        self.slots[id].role
    }

    /// Every candidate's state and statistics, for live tables.
    pub fn snapshot(&self) -> Vec<CandidateView> {
        self.slots
            .iter()
            .enumerate()
            .map(|(id, s)| CandidateView {
                id,
                candidate: s.candidate.clone(),
                role: s.role,
                connecting: matches!(s.conn, Conn::Connecting { .. }),
                connected: s.conn == Conn::Connected,
                summary: s.stats.summary(),
                connect_time: s.connect_time,
                error: s.error.clone(),
                probes_answered: s.probes_answered,
            })
            .collect()
    }

    /// When [`Election::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Micros> {
        let mut next: Option<Micros> = None;
        let mut consider = |t: Option<Micros>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for slot in &self.slots {
            consider(slot.poll_timeout());
        }
        if let Some(t) = &self.tournament {
            if !t.overtime {
                consider(Some(t.started + self.config.deadline));
            }
            let answered = t
                .members
                .iter()
                .any(|&id| self.slots[id].stats.samples() > 0);
            if t.urgent && answered {
                consider(Some(t.started + URGENT_WAIT));
            }
        }
        consider(self.retry_at.map(|(at, _)| at));
        if self.tournament.is_none() {
            consider(self.next_reprobe);
        }
        if let Some(c) = self.challenge {
            consider(Some(
                self.damping.due_at(self.config.switch_sustain, c.since),
            ));
        }
        if self.watched().is_some() {
            consider(self.watch.poll_timeout());
        }
        next
    }

    pub fn handle(&mut self, event: Event, now: Micros) {
        match event {
            Event::Connected {
                candidate,
                probes_answered,
            } => self.on_connected(candidate, probes_answered, now),
            Event::ConnectFailed { candidate, reason }
            | Event::ConnectionLost { candidate, reason } => {
                self.on_unusable(candidate, now, reason)
            }
            Event::ProbeAck {
                candidate,
                seq,
                relay_hold,
                received_at,
            } => self.on_probe_ack(candidate, seq, relay_hold, received_at, now),
            Event::Drain { candidate } => self.on_drain(candidate, now),
            Event::Heard { candidate, at } => {
                if self.serving == Some(candidate) {
                    self.watch.heard(at);
                    self.unprepare_if_cleared();
                }
            }
            Event::MediaSent { at } => {
                self.talking_until = Some(at + TALKING_FOR);
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Micros) {
        self.check_traffic(now);
        if let Some((at, trigger)) = self.retry_at
            && now >= at
        {
            self.retry_at = None;
            self.begin_tournament(now, trigger, false, None);
        }
        for id in 0..self.slots.len() {
            self.expire_probes(id, now);
            self.send_due_probe(id, now);
        }
        self.seek_a_clean_path(now);
        if self.tournament.is_some() {
            self.evaluate_tournament(now);
        } else if let Some(at) = self.next_reprobe
            && now >= at
        {
            self.begin_reprobe(now);
        }
        self.evaluate_switch(now);
    }

    // ------------------------------------------------------------ events

    fn on_connected(&mut self, id: CandidateId, probes_answered: u32, now: Micros) {
        let slot = &mut self.slots[id];
        let Conn::Connecting { since } = slot.conn else {
            return;
        };
        slot.conn = Conn::Connected;
        slot.connect_time = Some(now.since(since));
        slot.probes_answered = probes_answered;
        if slot.role == Role::Idle {
            // Connected too late: the tournament it was opened for is over.
            slot.conn = Conn::Closed;
            self.actions.push_back(Action::Close { candidate: id });
            return;
        }
        slot.next_probe = Some(now);
        self.send_due_probe(id, now);
    }

    fn on_unusable(&mut self, id: CandidateId, now: Micros, reason: String) {
        let slot = &mut self.slots[id];
        if slot.conn == Conn::Closed {
            return; // we closed it ourselves; nothing to learn
        }
        slot.conn = Conn::Closed;
        slot.forget_probes();
        slot.error = Some(reason.clone());
        let role = std::mem::replace(&mut slot.role, Role::Idle);
        // A lost connection is in no room: it is prepared no longer (the
        // session forgets it too), and a relay still suspect gets the next
        // standby prepared below, once the standbys are refilled.
        let was_prepared = self.prepared == Some(id);
        if was_prepared {
            self.prepared = None;
        }
        self.notices.push_back(Notice::CandidateFailed {
            candidate: id,
            reason: reason.clone(),
        });
        if self.challenge.is_some_and(|c| c.challenger == id) {
            self.challenge = None;
        }
        match role {
            Role::Serving => self.failover(id, now, ElectionTrigger::Failover, reason),
            Role::Standby => self.refill_standbys(),
            _ => {}
        }
        if was_prepared && self.watch.is_suspect() {
            self.prepare_standby();
        }
        if self.tournament.is_some() {
            self.evaluate_tournament(now);
        }
    }

    fn on_drain(&mut self, id: CandidateId, now: Micros) {
        let slot = &mut self.slots[id];
        slot.draining = true;
        slot.error = Some("relay is draining".into());
        match slot.role {
            Role::Serving => {
                self.failover(id, now, ElectionTrigger::Drain, "relay is draining".into())
            }
            Role::Standby | Role::Reprobe | Role::Contender => {
                self.close(id);
                self.refill_standbys();
                if self.tournament.is_some() {
                    self.evaluate_tournament(now);
                }
            }
            Role::Idle => {}
        }
    }

    fn on_probe_ack(
        &mut self,
        id: CandidateId,
        seq: u64,
        relay_hold: Duration,
        received_at: Micros,
        now: Micros,
    ) {
        let slot = &mut self.slots[id];
        if !slot.answered(seq, relay_hold, received_at, now) {
            return; // not ours (a closed connection's probe)
        }
        if self.serving == Some(id) {
            self.watch.heard(received_at);
            self.unprepare_if_cleared();
        }
        if self.slots[id].role == Role::Reprobe {
            self.maybe_finish_reprobe(id);
        }
        if self.tournament.is_some() {
            self.evaluate_tournament(now);
        }
        self.evaluate_switch(now);
    }

    // ------------------------------------------------------------ probing

    /// How long until `slot`'s next probe, at its role's own pace.
    fn probe_interval(&self, slot: &Slot, now: Micros) -> Duration {
        match slot.role {
            Role::Standby => self.config.standby_probe_interval,
            Role::Serving if self.talking_until.is_some_and(|until| now < until) => {
                self.config.talking_probe_interval
            }
            // A fresh contender gets its first samples in a burst (counting
            // the probe about to leave).
            Role::Contender
                if slot.stats.window().len() + slot.in_flight() + 1
                    < self.config.min_samples as usize =>
            {
                self.config.burst_probe_interval
            }
            _ => self.config.probe_interval,
        }
    }

    /// Whether `slot` is probed at `loss_evidence_probe_interval`, for the
    /// switching rule's bounds on both sides: a standby off the serving path
    /// that still wants evidence ([`Election::wants_loss_evidence`]), and
    /// the serving candidate while any does — if it is WebTransport. A
    /// WebSocket's stream holds every probe behind a lost segment, so
    /// probing it faster turns one loss into several late answers, counted
    /// as lost, and a WebSocket on a jittery path was moved for it.
    fn gathers_loss_evidence(&self, slot: &Slot) -> bool {
        match slot.role {
            Role::Standby => self.wants_loss_evidence(slot),
            Role::Serving => {
                slot.candidate.transport == crate::TransportKind::WebTransport
                    && self
                        .slots
                        .iter()
                        .any(|s| s.role == Role::Standby && self.wants_loss_evidence(s))
            }
            _ => false,
        }
    }

    /// Whether `standby` is probed faster because the serving path may be
    /// lossy: the switching rule charges the serving path only the loss it
    /// shows beyond the most the standby may have, and a standby probed
    /// once a second needs minutes before that bound says anything (see
    /// `rule`, Loss). Stops once the standby has `loss_evidence_probes`.
    fn wants_loss_evidence(&self, standby: &Slot) -> bool {
        let probed = standby.stats.samples() + standby.stats.lost();
        let budget = self.config.loss_evidence_probes;
        self.serving_suspected_lossy()
            && self.off_the_serving_path(&standby.candidate)
            && probed < budget
            && self.loss_evidence_sent < budget
    }

    /// While the serving path is suspected lossy, a standby on the same
    /// path (the serving region's other relay) is no refuge: look for one
    /// in another region at once — an early re-probe, once per decision,
    /// whose candidates become the standby in its place (see
    /// [`Election::maybe_finish_reprobe`]) — rather than at the next
    /// re-probe, up to `reprobe_interval` later.
    fn seek_a_clean_path(&mut self, now: Micros) {
        if self.config.loss_evidence_probes == 0
            || self.sought_clean_path
            || self.tournament.is_some()
            || !self.serving_suspected_lossy()
        {
            return;
        }
        let standby_elsewhere = self
            .slots
            .iter()
            .any(|s| s.role == Role::Standby && self.off_the_serving_path(&s.candidate));
        let idle_elsewhere = self.slots.iter().any(|s| {
            s.role == Role::Idle
                && !s.draining
                && !s.candidate.shadow
                && self.off_the_serving_path(&s.candidate)
        });
        if standby_elsewhere || !idle_elsewhere {
            return;
        }
        self.sought_clean_path = true;
        self.next_reprobe = Some(self.next_reprobe.map_or(now, |at| at.min(now)));
    }

    fn send_due_probe(&mut self, id: CandidateId, now: Micros) {
        let slot = &self.slots[id];
        if !slot.probe_due(now) {
            return;
        }
        let timeout = slot.probe_timeout(&self.config);
        let paced = self.probe_interval(slot, now);
        let evidence = self.config.loss_evidence_probe_interval;
        let gathers = self.gathers_loss_evidence(slot);
        // The budget is the standbys': the serving relay is probed this fast
        // only while one of them is, and charging it too left a silent
        // call's standby half the evidence.
        if gathers && slot.role == Role::Standby {
            self.loss_evidence_sent += 1;
        }
        let interval = if gathers {
            paced.min(evidence.max(slot.fastest_sustained_probing()))
        } else {
            paced
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.slots[id].sent(seq, now, timeout, interval);
        self.actions
            .push_back(Action::SendProbe { candidate: id, seq });
    }

    fn expire_probes(&mut self, id: CandidateId, now: Micros) {
        let keep_late = self.config.probe_timeout_max * 2;
        if self.slots[id].expire(now, keep_late) == 0 {
            return;
        }
        let slot = &self.slots[id];
        if slot.role == Role::Serving && slot.relay_gone(now, &self.config) {
            // Losses in a row happen by chance on a lossy path (three in a
            // row once in ~4 600 probes at 6% round-trip loss): ask once
            // more, with a burst, before leaving a relay that may be alive.
            let Some(until) = slot.confirming_until else {
                let worst = slot
                    .recent_worst_rtt()
                    .unwrap_or(self.config.probe_timeout_min);
                let until = now + watch::confirm_deadline(worst);
                self.slots[id].confirming_until = Some(until);
                self.send_suspect_probes(id, now, until);
                return;
            };
            if now < until {
                return;
            }
            let reason = format!(
                "{} probes in a row went unanswered for {} ms, the last {} sent at once to \
                 make sure",
                slot.consecutive_lost,
                slot.unanswered_for(now).as_millis(),
                watch::SUSPECT_PROBES
            );
            self.slots[id].error = Some(reason.clone());
            self.close(id);
            self.failover(id, now, ElectionTrigger::Failover, reason);
        } else if slot.role == Role::Reprobe {
            self.maybe_finish_reprobe(id);
        }
    }

    // ------------------------------------------------------------ traffic

    /// The serving candidate, if its traffic is watched: a connected
    /// WebTransport connection (see [`watch`] for why not WebSocket).
    fn watched(&self) -> Option<CandidateId> {
        let id = self.serving?;
        let slot = &self.slots[id];
        (slot.candidate.transport == crate::TransportKind::WebTransport
            && slot.conn == Conn::Connected)
            .then_some(id)
    }

    /// Probes sent at once to a serving relay that looks gone, their
    /// answers due by `deadline`: any answer clears the suspicion.
    fn send_suspect_probes(&mut self, id: CandidateId, now: Micros, deadline: Micros) {
        for _ in 0..watch::SUSPECT_PROBES {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.slots[id].sent_extra(seq, now, deadline.since(now));
            self.actions
                .push_back(Action::SendProbe { candidate: id, seq });
        }
    }

    /// Silence where traffic flowed: probe at once, and fail over when
    /// nothing answers in time.
    fn check_traffic(&mut self, now: Micros) {
        let Some(id) = self.watched() else { return };
        let round_trip = self.slots[id]
            .recent_worst_rtt()
            .unwrap_or(self.config.probe_timeout_min);
        match self.watch.check(now, round_trip) {
            Some(Alarm::Suspect { deadline }) => {
                self.send_suspect_probes(id, now, deadline);
                self.prepare_standby();
            }
            Some(Alarm::Dead { silent_for }) => {
                let reason = format!(
                    "silent for {} ms, and {} probes sent then went unanswered",
                    silent_for.as_millis(),
                    watch::SUSPECT_PROBES
                );
                self.slots[id].error = Some(reason.clone());
                self.close(id);
                self.failover(id, now, ElectionTrigger::Failover, reason);
            }
            None => {}
        }
    }

    /// Make-before-break: while the serving relay is suspect, the media goes
    /// through the standby the failover would pick as well, so that a move
    /// finds the room already receiving it there. A dead relay's media gap
    /// is then the silence that raised the suspicion plus one path, not the
    /// suspicion's whole deadline plus a join; a false alarm costs a few
    /// hundred ms of media sent twice (relays drop the copies).
    fn prepare_standby(&mut self) {
        if self.prepared.is_some() {
            return;
        }
        if let Some(standby) = self.best_standby() {
            self.prepared = Some(standby);
            self.actions
                .push_back(Action::Prepare { candidate: standby });
        }
    }

    /// The serving relay was heard: the standby prepared goes back to
    /// probing only.
    fn unprepare_if_cleared(&mut self) {
        if self.watch.is_suspect() {
            return;
        }
        if let Some(standby) = self.prepared.take() {
            self.actions
                .push_back(Action::Unprepare { candidate: standby });
        }
    }

    // ------------------------------------------------------------ tournaments

    fn begin_tournament(
        &mut self,
        now: Micros,
        trigger: ElectionTrigger,
        urgent: bool,
        exclude: Option<CandidateId>,
    ) {
        self.challenge = None;
        let mut members = Vec::new();
        for id in 0..self.slots.len() {
            let slot = &mut self.slots[id];
            slot.stats.reset_window();
            if Some(id) == exclude || slot.draining {
                continue;
            }
            slot.error = None;
            members.push(id);
            if slot.role == Role::Idle || slot.role == Role::Reprobe {
                slot.role = Role::Contender;
            }
            match slot.conn {
                Conn::Closed => {
                    slot.conn = Conn::Connecting { since: now };
                    slot.connect_time = None;
                    self.actions.push_back(Action::Open { candidate: id });
                }
                Conn::Connected => {
                    // Standbys and the serving candidate are probed at the
                    // tournament's pace from now on.
                    slot.next_probe = Some(now);
                }
                Conn::Connecting { .. } => {}
            }
        }
        self.tournament = Some(Tournament {
            started: now,
            trigger,
            urgent,
            members,
            overtime: false,
        });
        for id in 0..self.slots.len() {
            self.send_due_probe(id, now);
        }
        self.evaluate_tournament(now);
    }

    fn measured(&self, ids: &[CandidateId], now: Micros) -> Vec<Measured<'_>> {
        ids.iter()
            .filter(|&&id| !self.slots[id].candidate.shadow)
            .map(|&id| {
                let slot = &self.slots[id];
                let state = if slot.error.is_some() || slot.draining {
                    MeasuredState::Failed
                } else {
                    match slot.conn {
                        Conn::Closed => MeasuredState::Failed,
                        Conn::Connecting { since } => MeasuredState::Connecting {
                            for_us: now.since(since).as_micros() as u64,
                        },
                        Conn::Connected => MeasuredState::Connected {
                            samples: slot.stats.window(),
                            connect_us: slot.connect_time.unwrap_or_default().as_micros() as u64,
                        },
                    }
                };
                Measured {
                    id,
                    region: &slot.candidate.region,
                    transport: slot.candidate.transport,
                    state,
                }
            })
            .collect()
    }

    fn evaluate_tournament(&mut self, now: Micros) {
        let Some(t) = self.tournament.clone() else {
            return;
        };
        let measured = self.measured(&t.members, now);
        let usable = measured
            .iter()
            .filter(|m| !matches!(m.state, MeasuredState::Failed))
            .count();
        let with_samples: Vec<&Measured<'_>> = measured
            .iter()
            .filter(
                |m| matches!(m.state, MeasuredState::Connected { samples, .. } if !samples.is_empty()),
            )
            .collect();
        let leader = rule::leader(&measured, &self.config);
        let elapsed = now.since(t.started);
        let deadline = elapsed >= self.config.deadline;

        let decision = if usable == 0 {
            None
        } else if t.urgent && !with_samples.is_empty() {
            let all_answered = with_samples.len() == usable;
            (all_answered || elapsed >= URGENT_WAIT)
                .then_some((leader, DecisionRule::FirstAnswer))
                .and_then(|(l, r)| l.map(|l| (l, r)))
        } else if usable == 1 && with_samples.len() == 1 {
            leader.map(|l| (l, DecisionRule::SoleCandidate))
        } else {
            let early = match self.config.stopping {
                StoppingRule::Sequential => {
                    leader.is_some_and(|l| rule::clearly_best(&measured, l, &self.config))
                }
                StoppingRule::FirstProbe => with_samples.len() == usable && usable > 0,
                StoppingRule::FixedDeadline => false,
            };
            if early {
                leader.map(|l| (l, DecisionRule::Early))
            } else if deadline {
                leader.map(|l| (l, DecisionRule::Deadline))
            } else {
                return;
            }
        };

        let connecting = measured
            .iter()
            .any(|m| matches!(m.state, MeasuredState::Connecting { .. }));
        match decision {
            Some((winner, rule)) => self.finish_tournament(now, t, winner, rule),
            // Past the deadline with nothing measured: wait for the pending
            // connections to succeed or fail (the driver's connect timeout),
            // so a slow network still gets a relay.
            None if usable == 0 || (deadline && !connecting) => self.tournament_failed(now, t),
            None if deadline => {
                if let Some(t) = &mut self.tournament {
                    t.overtime = true;
                }
            }
            None => {}
        }
    }

    fn finish_tournament(
        &mut self,
        now: Micros,
        t: Tournament,
        pick: CandidateId,
        rule: DecisionRule,
    ) {
        self.tournament = None;
        self.attempts = 0;
        let mut winner = pick;
        let mut reason = self.describe_pick(pick, &t, now, rule);
        // A background re-election moves a working call only for a clear gain.
        if let Some(current) = self.serving
            && current != pick
            && self.slots[current].conn == Conn::Connected
            && !self.slots[current].draining
        {
            let current_rtt = self.estimate(current);
            let pick_rtt = self.estimate(pick);
            if let (Some(c), Some(p)) = (current_rtt, pick_rtt)
                && !rule::better_enough(c, p, &self.config)
            {
                reason = wording::kept(
                    (&self.slots[current].candidate.label(), c),
                    (&self.slots[pick].candidate.label(), p),
                    &self.config,
                );
                winner = current;
            }
        }
        self.serve(now, winner, t.trigger, rule, now.since(t.started), reason);
    }

    fn tournament_failed(&mut self, now: Micros, t: Tournament) {
        self.tournament = None;
        for &id in &t.members {
            if self.slots[id].role == Role::Contender {
                self.close(id);
            }
        }
        if let Some(current) = self.serving {
            // Re-election found nothing usable: keep the working connection.
            let reason = "no other candidate could be reached; kept the serving relay".to_owned();
            self.serve(
                now,
                current,
                t.trigger,
                DecisionRule::SoleCandidate,
                now.since(t.started),
                reason,
            );
            return;
        }
        self.attempts += 1;
        let backoff = self
            .config
            .retry_initial
            .saturating_mul(1 << (self.attempts - 1).min(16))
            .min(self.config.retry_max);
        self.retry_at = Some((now + backoff, t.trigger));
        let reason = format!(
            "no relay reachable (attempt {}); retrying in {:.1} s",
            self.attempts,
            backoff.as_secs_f64()
        );
        let report = self.report(
            t.trigger,
            DecisionRule::Deadline,
            now.since(t.started),
            None,
            None,
            reason,
        );
        self.notices.push_back(Notice::NoRelayReachable {
            retry_in: backoff,
            attempt: self.attempts,
            report,
        });
    }

    /// Serve through `winner`: join it if needed, choose standbys, close the rest.
    fn serve(
        &mut self,
        now: Micros,
        winner: CandidateId,
        trigger: ElectionTrigger,
        rule: DecisionRule,
        took: Duration,
        reason: String,
    ) {
        let previous = self.serving.filter(|&p| p != winner);
        if let Some(prepared) = self.prepared.take()
            && prepared != winner
            && self.slots[prepared].conn == Conn::Connected
        {
            self.actions.push_back(Action::Unprepare {
                candidate: prepared,
            });
        }
        if self.serving != Some(winner) {
            let join_seq = self.last_join_seq.map_or(0, |s| s + 1);
            self.last_join_seq = Some(join_seq);
            self.actions.push_back(Action::Join {
                candidate: winner,
                join_seq,
            });
        }
        self.serving = Some(winner);
        self.watch = TrafficWatch::default();
        self.slots[winner].role = Role::Serving;
        self.slots[winner].start_counting_losses_anew();
        if let Some(previous) = previous {
            self.slots[previous].role = Role::Idle;
        }
        let standbys = self.choose_standbys(winner);
        for id in 0..self.slots.len() {
            if id == winner {
                continue;
            }
            let slot = &mut self.slots[id];
            if standbys.contains(&id) {
                slot.role = Role::Standby;
                if Some(id) == previous {
                    self.actions.push_back(Action::Demote { candidate: id });
                }
            } else if slot.role != Role::Reprobe || Some(id) == previous {
                slot.role = Role::Idle;
                if slot.conn != Conn::Closed {
                    self.close(id);
                }
            }
        }
        self.next_reprobe = Some(now + self.config.reprobe_interval);
        self.sought_clean_path = false;
        self.loss_evidence_sent = 0;
        self.challenge = None;
        let report = self.report(trigger, rule, took, Some(winner), previous, reason.clone());
        for slot in &mut self.slots {
            slot.stats.reset_window();
        }
        self.notices.push_back(Notice::Decided {
            decision: Decision {
                winner,
                previous,
                trigger,
                rule,
                took,
                reason,
            },
            report,
        });
    }

    /// Standbys: the best connected candidates, preferring relays other than
    /// the winner's (a different failure domain) over its other transport.
    fn choose_standbys(&self, winner: CandidateId) -> Vec<CandidateId> {
        let winner_relay = &self.slots[winner].candidate.relay_id;
        let mut ranked: Vec<(bool, f64, CandidateId)> = (0..self.slots.len())
            .filter(|&id| id != winner)
            .filter(|&id| {
                let s = &self.slots[id];
                s.conn == Conn::Connected && !s.draining && !s.candidate.shadow && s.error.is_none()
            })
            .filter_map(|id| {
                let same_relay = &self.slots[id].candidate.relay_id == winner_relay;
                Some((same_relay, self.estimate(id)?, id))
            })
            .collect();
        ranked.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        ranked
            .into_iter()
            .take(self.config.standbys)
            .map(|r| r.2)
            .collect()
    }

    fn refill_standbys(&mut self) {
        let Some(winner) = self.serving else { return };
        let current: Vec<CandidateId> = (0..self.slots.len())
            .filter(|&id| self.slots[id].role == Role::Standby)
            .collect();
        if current.len() >= self.config.standbys {
            return;
        }
        for id in self.choose_standbys(winner) {
            if self.slots[id].role != Role::Standby {
                self.slots[id].role = Role::Standby;
            }
        }
    }

    // ------------------------------------------------------------ failover

    fn failover(
        &mut self,
        failed: CandidateId,
        now: Micros,
        trigger: ElectionTrigger,
        reason: String,
    ) {
        let standby = self.best_standby();
        let label = self.slots[failed].candidate.label();
        if let Some(standby) = standby {
            if trigger == ElectionTrigger::Drain {
                self.close(failed);
            }
            let why = format!(
                "{label}: {reason}; switched at once to standby {}",
                self.slots[standby].candidate.label()
            );
            self.serve(
                now,
                standby,
                trigger,
                DecisionRule::Standby,
                Duration::ZERO,
                why,
            );
            self.begin_tournament(now, ElectionTrigger::Reelection, false, Some(failed));
            return;
        }
        if trigger == ElectionTrigger::Failover {
            // The call is down: elect on the first usable answers.
            self.serving = None;
            self.slots[failed].role = Role::Idle;
        }
        // Drain without a standby: keep using the draining relay until the
        // urgent tournament picks its successor.
        self.begin_tournament(now, trigger, true, Some(failed));
    }

    /// The standby a failover moves to: the one prepared if it is still
    /// usable (the room already receives media through it), else the
    /// fastest connected standby that is not draining.
    fn best_standby(&self) -> Option<CandidateId> {
        let usable = |id: CandidateId| {
            let s = &self.slots[id];
            s.role == Role::Standby && s.conn == Conn::Connected && !s.draining
        };
        if let Some(prepared) = self.prepared.filter(|&id| usable(id)) {
            return Some(prepared);
        }
        (0..self.slots.len())
            .filter(|&id| usable(id))
            .min_by(|&a, &b| {
                let ea = self.estimate(a).unwrap_or(f64::INFINITY);
                let eb = self.estimate(b).unwrap_or(f64::INFINITY);
                ea.total_cmp(&eb)
            })
    }

    // ------------------------------------------------------------ switching

    fn recent_samples(&self, id: CandidateId, now: Micros) -> Vec<u64> {
        self.slots[id]
            .stats
            .recent_since(now - self.config.recent_window)
    }

    /// What the switching rule needs of `id`, over samples taken from it.
    fn recent<'a>(
        &self,
        id: CandidateId,
        samples: &'a [u64],
        history: &'a [u64],
    ) -> rule::Recent<'a> {
        let stats = &self.slots[id].stats;
        rule::Recent {
            samples,
            history,
            answered: stats.answered_in_time(),
            lost: stats.lost_to_media(),
        }
    }

    fn evaluate_switch(&mut self, now: Micros) {
        if self.tournament.is_some() {
            self.challenge = None;
            return;
        }
        let Some(current) = self.serving else {
            self.challenge = None;
            return;
        };
        let current_samples = self.recent_samples(current, now);
        let current_history = self.slots[current].stats.recent_since(Micros::ZERO);
        let current_recent = self.recent(current, &current_samples, &current_history);
        let best = (0..self.slots.len())
            .filter(|&id| {
                let s = &self.slots[id];
                id != current
                    && matches!(s.role, Role::Standby | Role::Reprobe)
                    && s.conn == Conn::Connected
                    && !s.draining
                    && !s.candidate.shadow
            })
            .filter_map(|id| {
                let samples = self.recent_samples(id, now);
                let history = self.slots[id].stats.recent_since(Micros::ZERO);
                let gap = rule::clearly_better(
                    current_recent,
                    self.recent(id, &samples, &history),
                    &self.config,
                )?;
                Some((id, gap))
            })
            .min_by(|a, b| a.1.challenger_score().total_cmp(&b.1.challenger_score()));
        let Some((challenger, comparison)) = best else {
            self.challenge = None;
            return;
        };
        match self.challenge {
            Some(c) if c.challenger == challenger => {
                let asked = self.damping.sustain_at(self.config.switch_sustain, now);
                if now.since(c.since) >= asked {
                    let reason = wording::switched(
                        &self.slots[challenger].candidate.label(),
                        &self.slots[current].candidate.label(),
                        comparison,
                        &self.config,
                        now.since(c.since),
                        self.damping.level_at(now),
                    );
                    self.damping.moved(now);
                    self.serve(
                        now,
                        challenger,
                        ElectionTrigger::Degradation,
                        DecisionRule::SustainedImprovement,
                        now.since(c.since),
                        reason,
                    );
                }
            }
            _ => {
                self.challenge = Some(Challenge {
                    challenger,
                    since: now,
                })
            }
        }
    }

    // ------------------------------------------------------------ re-probing

    fn begin_reprobe(&mut self, now: Micros) {
        self.next_reprobe = Some(now + self.config.reprobe_interval);
        // While the serving path loses probes beyond doubt, the others are
        // measured longer: the switching rule can only charge that loss
        // against a rival whose own loss is known well enough.
        let samples = if self.serving_is_lossy() {
            self.config.reprobe_samples * LOSSY_REPROBE_FACTOR
        } else {
            self.config.reprobe_samples
        };
        for id in 0..self.slots.len() {
            let slot = &mut self.slots[id];
            if slot.role != Role::Idle || slot.draining {
                continue;
            }
            slot.role = Role::Reprobe;
            slot.reprobe_left = samples;
            slot.error = None;
            if slot.conn == Conn::Closed {
                slot.conn = Conn::Connecting { since: now };
                slot.connect_time = None;
                self.actions.push_back(Action::Open { candidate: id });
            } else {
                slot.next_probe = Some(now);
            }
        }
    }

    /// A re-probed candidate that took its samples either becomes a standby
    /// (none yet, or clearly better than the current one), stays while it
    /// challenges the serving relay, or is closed.
    fn maybe_finish_reprobe(&mut self, id: CandidateId) {
        let slot = &self.slots[id];
        if slot.reprobe_left > 0 || slot.awaiting_answers() {
            return;
        }
        if self.challenge.is_some_and(|c| c.challenger == id) {
            // Keep measuring a challenger until the switch rule has decided.
            self.slots[id].reprobe_left = 1;
            return;
        }
        let standby = (0..self.slots.len()).find(|&s| self.slots[s].role == Role::Standby);
        let mine = self.estimate(id);
        let seeking = self.config.loss_evidence_probes > 0 && self.serving_suspected_lossy();
        let off_path = |s: CandidateId| self.off_the_serving_path(&self.slots[s].candidate);
        // While the serving path is suspected lossy, a standby sharing it is
        // no refuge: one off it that does not look lossy itself takes its
        // place — unless the client is sending through that standby already
        // (make-before-break). And one off it is not given up for a faster
        // one on the path.
        let a_refuge = |s: CandidateId| {
            seeking
                && !off_path(s)
                && off_path(id)
                && !looks_lossy(&slot.stats)
                && self.prepared != Some(s)
        };
        let keeps_refuge = |s: CandidateId| seeking && off_path(s) && !off_path(id);
        let promote = !slot.candidate.shadow
            && mine.is_some()
            && match standby {
                None => self.config.standbys > 0,
                Some(s) if a_refuge(s) => true,
                Some(s) if keeps_refuge(s) => false,
                Some(s) => match (self.estimate(s), mine) {
                    (Some(theirs), Some(mine)) => rule::better_enough(theirs, mine, &self.config),
                    _ => false,
                },
            };
        if promote {
            if let Some(old) = standby {
                self.slots[old].role = Role::Idle;
                self.close(old);
            }
            self.slots[id].role = Role::Standby;
        } else {
            self.slots[id].role = Role::Idle;
            self.close(id);
        }
    }

    // ------------------------------------------------------------ helpers

    fn close(&mut self, id: CandidateId) {
        if self.prepared == Some(id) {
            self.prepared = None;
        }
        let slot = &mut self.slots[id];
        slot.forget_probes();
        if slot.conn != Conn::Closed {
            slot.conn = Conn::Closed;
            self.actions.push_back(Action::Close { candidate: id });
        }
        if slot.role != Role::Serving {
            slot.role = Role::Idle;
        }
    }

    /// A candidate's estimate (µs) under the configured rule: this window's
    /// samples, else its recent ones.
    fn estimate(&self, id: CandidateId) -> Option<f64> {
        let stats = &self.slots[id].stats;
        rule::estimate(stats.window(), &self.config)
            .or_else(|| stats::median(&stats.recent_since(Micros::ZERO)))
    }

    /// Whether the serving path is suspected lossy on its recent probes
    /// ([`RttStats::recent_loss`]), not the whole decision's: a loss that
    /// stopped ends the suspicion — and with it the faster probing and the
    /// refuge in another region — once the path has been clean for a while,
    /// so the next re-probe can bring the standby back to the serving region.
    /// A path whose answers wait far above its least round trip is not
    /// suspected: it loses to a queue, most likely the call's own media on
    /// a slow line, which probing harder would feed, and its RTT already
    /// tells the switching rule what the queue costs ([`rule::queued`]).
    fn serving_suspected_lossy(&self) -> bool {
        self.serving.is_some_and(|id| {
            let stats = &self.slots[id].stats;
            let (answered, lost) = stats.recent_loss();
            rule::suspected_lossy(answered, lost) && {
                let latest: Vec<u64> = stats.latest(rule::QUEUE_SAMPLES).collect();
                !rule::queued(stats.floor(), &latest)
            }
        })
    }

    /// Whether `candidate` is in another region than the serving one: on
    /// another path (the transports and relays of a region share one).
    fn off_the_serving_path(&self, candidate: &Candidate) -> bool {
        self.serving
            .is_some_and(|id| self.slots[id].candidate.region != candidate.region)
    }

    /// The serving path loses more probes than [`rule::LOSS_FREE`], beyond
    /// doubt.
    fn serving_is_lossy(&self) -> bool {
        self.serving.is_some_and(|id| {
            let stats = &self.slots[id].stats;
            rule::loss_rate_bounds(stats.answered_in_time(), stats.lost_to_media()).0
                > rule::LOSS_FREE
        })
    }

    /// A candidate's RTT estimate (µs) and loss rate, for people.
    fn rtt_and_loss(&self, id: CandidateId) -> (Option<f64>, f64) {
        let stats = &self.slots[id].stats;
        (
            self.estimate(id),
            rule::loss_rate(stats.window().len(), stats.lost()),
        )
    }

    fn describe_pick(
        &self,
        pick: CandidateId,
        t: &Tournament,
        now: Micros,
        rule: DecisionRule,
    ) -> String {
        let next_region = (0..self.slots.len())
            .filter(|&id| {
                id != pick && self.slots[id].candidate.region != self.slots[pick].candidate.region
            })
            .filter_map(|id| Some((id, self.estimate(id)?)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(id, _)| (self.slots[id].candidate.label(), self.rtt_and_loss(id)));
        let region = &self.slots[pick].candidate.region;
        let preference = (0..self.slots.len())
            .filter(|&id| id != pick && self.slots[id].candidate.region == *region)
            .filter_map(|id| Some((id, self.estimate(id)?)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .filter(|&(_, rtt)| self.estimate(pick).is_some_and(|own| rtt < own))
            .map(|(id, rtt)| wording::TransportPreference {
                faster: (self.slots[id].candidate.label(), self.rtt_and_loss(id)),
                margin_us: rule::wt_margin(rtt, &self.config),
            });
        wording::picked(
            (
                &self.slots[pick].candidate.label(),
                region,
                self.rtt_and_loss(pick),
            ),
            rule,
            now.since(t.started),
            preference,
            next_region,
        )
    }

    fn report(
        &mut self,
        trigger: ElectionTrigger,
        rule: DecisionRule,
        took: Duration,
        winner: Option<CandidateId>,
        previous: Option<CandidateId>,
        reason: String,
    ) -> ElectionReport {
        let outcomes: Vec<CandidateOutcome> = (0..self.slots.len())
            .map(|id| {
                let s = &self.slots[id];
                if Some(id) == winner {
                    CandidateOutcome::Winner
                } else if s.role == Role::Standby {
                    CandidateOutcome::Standby
                } else if s.error.is_some() {
                    CandidateOutcome::Failed
                } else {
                    CandidateOutcome::Loser
                }
            })
            .collect();
        let seq = self.report_seq;
        self.report_seq += 1;
        report::build(report::Inputs {
            slots: self.slots.iter().map(|s| report::SlotView {
                candidate: &s.candidate,
                summary: s.stats.summary(),
                connect_time: s.connect_time,
                error: s.error.as_deref(),
            }),
            outcomes,
            trigger,
            rule,
            took,
            winner,
            previous,
            reason,
            session_seq: seq,
            client_session_id: self.client_session_id.clone(),
            client: self.client.clone(),
        })
    }
}

/// Whether the path `stats` measured in this window (a re-probe's samples)
/// is suspected lossy ([`rule::suspected_lossy`], on what a call's media
/// would lose).
fn looks_lossy(stats: &RttStats) -> bool {
    rule::suspected_lossy(stats.answered_in_time(), stats.lost_to_media())
}
