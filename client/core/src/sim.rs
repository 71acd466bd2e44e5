//! A virtual-time network for the election: candidates behind links with
//! round-trip time, jitter and loss, relays that die, drain or degrade — and
//! the real [`Election`] driven through it. No sleeps: a three-minute call is
//! simulated in milliseconds, deterministically per seed.
//!
//! Network model (per candidate):
//! * RTT samples are `rtt + jitter · N(0,1)`, floored at 30% of `rtt` (a path
//!   cannot beat light), like netem's normal jitter;
//! * a path may be asymmetric: the round trip splits between the way up
//!   (client → relay) and the way down in any proportion (a symmetric path
//!   half and half), and each way loses packets with its own probability. A
//!   WebTransport probe round trip is lost with `1 − (1 − up)(1 − down)`;
//!   the client cannot tell which way lost it. A WebSocket probe is never
//!   lost — TCP retransmits it:
//!   each lost leg arrives a retransmission timeout later (200 ms, doubling
//!   while the retransmission is lost too), and nothing overtakes it on its
//!   connection (head-of-line blocking), as the latency lab's TCP proxy does;
//! * connecting takes `handshake_round_trips` round trips (each lost leg costs a
//!   200 ms retransmission);
//! * a dead relay refuses new connections after one RTT; an open WebSocket
//!   learns of the death at once (TCP reset), an open WebTransport connection
//!   only through its probes (or the 10 s QUIC idle timeout);
//! * an unreachable candidate (UDP blocked) never answers and fails after the
//!   5 s connect timeout;
//! * a relay answers at most the probes a second per connection its Welcome
//!   says ([`SimCandidate::welcome_probes_per_second`]: by default the
//!   relay's default, [`PROBES_ANSWERED_PER_SECOND`]; 0 for a relay from
//!   before it said, which answers 25), in bursts of
//!   [`PROBE_ANSWER_BURST_SECONDS`](rallypoint_protocol::limits::PROBE_ANSWER_BURST_SECONDS)' worth
//!   (charged as a datagram leaves, as a stream's probe arrives — a
//!   stalled WebSocket's come in a bunch), and leaves the rest unanswered
//!   ([`Simulation::probes_withheld`]): to the client, loss.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use rallypoint_protocol::limits::{
    PROBES_ANSWERED_PER_SECOND, probe_answer_burst, probes_answered,
};
use rallypoint_protocol::v1::ClientContext;

use crate::candidate::{Candidate, TransportKind};
use crate::election::{Action, Decision, Election, ElectionConfig, Event, Notice, Role};
use crate::time::Micros;

/// A path's behaviour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    pub rtt: Duration,
    /// Standard deviation of the RTT.
    pub jitter: Duration,
    /// Packet loss probability client → relay.
    pub loss_up: f64,
    /// Packet loss probability relay → client.
    pub loss_down: f64,
    /// The share of the round trip spent client → relay (½ when symmetric).
    pub up_share: f64,
}

impl Link {
    /// A symmetric path: half the round trip and `loss` each way.
    pub fn new(rtt_ms: f64, jitter_ms: f64, loss: f64) -> Self {
        Link {
            rtt: Duration::from_secs_f64(rtt_ms / 1000.0),
            jitter: Duration::from_secs_f64(jitter_ms / 1000.0),
            loss_up: loss,
            loss_down: loss,
            up_share: 0.5,
        }
    }

    /// A path whose ways differ: `up_ms` client → relay, `down_ms` back, each
    /// way with its own loss (an ADSL or mobile line whose downlink is
    /// congested, a route that returns the long way round); `jitter_ms` is
    /// the round trip's.
    pub fn asymmetric(
        up_ms: f64,
        down_ms: f64,
        jitter_ms: f64,
        loss_up: f64,
        loss_down: f64,
    ) -> Self {
        let rtt_ms = up_ms + down_ms;
        Link {
            loss_up,
            loss_down,
            up_share: if rtt_ms > 0.0 { up_ms / rtt_ms } else { 0.5 },
            ..Link::new(rtt_ms, jitter_ms, 0.0)
        }
    }

    /// The share of probe round trips lost (either way).
    pub fn round_trip_loss(&self) -> f64 {
        1.0 - self.round_trip_survival()
    }

    fn round_trip_survival(&self) -> f64 {
        (1.0 - self.loss_up) * (1.0 - self.loss_down)
    }

    /// Loss in `direction` (0 up, 1 down).
    fn loss(&self, direction: usize) -> f64 {
        if direction == UP {
            self.loss_up
        } else {
            self.loss_down
        }
    }

    /// The way up and the way down of a round trip that took `rtt`.
    fn legs(&self, rtt: Duration) -> (Duration, Duration) {
        if self.up_share == 0.5 {
            // Both halves exactly as before asymmetric paths existed (an odd
            // nanosecond is dropped from both, as it always was).
            return (rtt / 2, rtt / 2);
        }
        let up = rtt.mul_f64(self.up_share);
        (up, rtt.saturating_sub(up))
    }
}

/// Directions, as [`Simulation::stream_leg`] indexes them.
const UP: usize = 0;
const DOWN: usize = 1;

/// One candidate in a simulated world.
#[derive(Debug, Clone)]
pub struct SimCandidate {
    pub candidate: Candidate,
    pub link: Link,
    /// From this time on the link behaves like this (degradation, recovery).
    pub changes: Vec<(Duration, Link)>,
    pub dies_at: Option<Duration>,
    pub drains_at: Option<Duration>,
    pub unreachable: bool,
    /// What its relay's Welcome says of the probes it answers a second.
    pub welcome_probes_per_second: u32,
}

impl SimCandidate {
    pub fn new(region: &str, transport: TransportKind, link: Link) -> Self {
        SimCandidate {
            candidate: Candidate {
                region: region.into(),
                relay_id: format!("{region}-{}", transport.short()),
                transport,
                url: match transport {
                    TransportKind::WebSocket => format!("ws://{region}.invalid/ws"),
                    TransportKind::WebTransport => format!("https://{region}.invalid/"),
                },
                cert_hash: None,
                shadow: false,
            },
            link,
            changes: Vec::new(),
            dies_at: None,
            drains_at: None,
            unreachable: false,
            welcome_probes_per_second: PROBES_ANSWERED_PER_SECOND,
        }
    }

    /// The link in effect at `t`.
    pub fn link_at(&self, t: Duration) -> Link {
        self.changes
            .iter()
            .rfind(|(at, _)| *at <= t)
            .map(|(_, l)| *l)
            .unwrap_or(self.link)
    }

    fn dead_at(&self, t: Duration) -> bool {
        self.dies_at.is_some_and(|d| t >= d)
    }
}

/// Deterministic randomness (SplitMix64 and Box–Muller): no dependency, the
/// same numbers on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Scheduled {
    Deliver(Event),
    /// The relay of this candidate dies now: open connections learn of it.
    Death(usize),
    Drain(usize),
    /// The client sends media now (while [`Simulation::talking`]).
    Talk,
}

/// How often a talking client's media is reported to the election.
const TALK_EVERY: Duration = Duration::from_millis(100);
/// Linux's minimum and maximum TCP retransmission timeouts, and how often it
/// retransmits a segment before giving up.
const TCP_MIN_RTO: Duration = Duration::from_millis(200);
const TCP_MAX_RTO: Duration = Duration::from_secs(120);
const TCP_RETRIES: u32 = 15;

/// A relay's answers to one connection's probes: a token bucket of
/// `per_second` in bursts of
/// [`PROBE_ANSWER_BURST_SECONDS`](rallypoint_protocol::limits::PROBE_ANSWER_BURST_SECONDS)' worth,
/// as the relay keeps it.
#[derive(Debug, Clone, Copy, Default)]
struct AnswerBudget {
    tokens: f64,
    refilled_at: Micros,
    per_second: u32,
}

impl AnswerBudget {
    fn full(now: Micros, per_second: u32) -> Self {
        AnswerBudget {
            tokens: Self::capacity(per_second),
            refilled_at: now,
            per_second,
        }
    }

    fn capacity(per_second: u32) -> f64 {
        f64::from(probe_answer_burst(per_second))
    }

    fn take(&mut self, now: Micros) -> bool {
        let rate = f64::from(self.per_second);
        // Datagrams are charged as they leave, in send order; a stream's
        // probes as they arrive, in arrival order: never back in time.
        let elapsed = now.since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(Self::capacity(self.per_second));
        self.refilled_at = self.refilled_at.max(now);
        let answered = self.tokens >= 1.0;
        if answered {
            self.tokens -= 1.0;
        }
        answered
    }
}

/// Joins the client made (or, in [`Simulation::prepares`], moves it
/// prepared), with when.
#[derive(Debug, Clone)]
pub struct Join {
    pub at: Duration,
    pub candidate: usize,
}

pub struct Simulation {
    pub election: Election,
    pub world: Vec<SimCandidate>,
    rng: Rng,
    now: Micros,
    queue: BinaryHeap<(Reverse<Micros>, Reverse<u64>, usize)>,
    scheduled: Vec<Option<Scheduled>>,
    order: u64,
    open: Vec<bool>,
    connecting: Vec<bool>,
    /// Every decision, with when it was made.
    pub decisions: Vec<(Duration, Decision)>,
    pub joins: Vec<Join>,
    /// Standbys the client sent media through as well while its relay was
    /// suspect (make-before-break).
    pub prepares: Vec<Join>,
    pub unreachable_notices: u32,
    pub reports: u32,
    /// Probes the client sent to warm standbys.
    pub standby_probes: u64,
    /// Probes the client sent, to every candidate.
    pub probes: u64,
    /// Probes a relay left unanswered: over its per-connection budget.
    pub probes_withheld: u64,
    /// Per candidate, its relay's budget of probe answers on the open
    /// connection.
    answer_budgets: Vec<AnswerBudget>,
    /// Whether the client sends media (a talking client probes its relay
    /// faster): off unless [`Simulation::talk`] turned it on.
    talking: bool,
    /// A [`Scheduled::Talk`] is in the queue (talking again soon after a
    /// [`Simulation::hush`] must not start a second stream of media).
    talk_pending: bool,
    /// Per candidate, when its stream connection last delivered a segment
    /// up and down: a later segment never arrives before it.
    stream_released: Vec<[Micros; 2]>,
    /// Set by [`Simulation::queue_behind_the_call`].
    call_queue: Option<CallQueue>,
}

/// A downlink slower than the call's media: the serving relay's answers wait
/// behind that media.
#[derive(Debug, Clone, Copy)]
struct CallQueue {
    /// The wait once the queue has filled.
    full: Duration,
    /// How long the queue takes to fill after a relay starts serving.
    fill: Duration,
    /// The share of answers a full queue drops.
    drops: f64,
}

/// Connect attempts give up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// QUIC notices a silent peer after this long.
const QUIC_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

impl Simulation {
    pub fn new(world: Vec<SimCandidate>, config: ElectionConfig, seed: u64) -> Self {
        let candidates = world.iter().map(|c| c.candidate.clone()).collect();
        let election = Election::new(
            candidates,
            config,
            bytes::Bytes::from_static(&[0; 16]),
            ClientContext {
                platform: "simulation".into(),
                ..Default::default()
            },
        );
        let mut sim = Simulation {
            open: vec![false; world.len()],
            connecting: vec![false; world.len()],
            election,
            world,
            rng: Rng::new(seed),
            now: Micros::ZERO,
            queue: BinaryHeap::new(),
            scheduled: Vec::new(),
            order: 0,
            decisions: Vec::new(),
            joins: Vec::new(),
            prepares: Vec::new(),
            unreachable_notices: 0,
            reports: 0,
            standby_probes: 0,
            probes: 0,
            probes_withheld: 0,
            answer_budgets: Vec::new(),
            talking: false,
            talk_pending: false,
            stream_released: Vec::new(),
            call_queue: None,
        };
        sim.stream_released = vec![[Micros::ZERO; 2]; sim.world.len()];
        sim.answer_budgets = vec![AnswerBudget::default(); sim.world.len()];
        for id in 0..sim.world.len() {
            if let Some(at) = sim.world[id].dies_at {
                sim.schedule(Micros::ZERO + at, Scheduled::Death(id));
            }
            if let Some(at) = sim.world[id].drains_at {
                sim.schedule(Micros::ZERO + at, Scheduled::Drain(id));
            }
        }
        sim.election.start(Micros::ZERO);
        sim.drain_outputs();
        sim
    }

    pub fn now(&self) -> Duration {
        self.now.since(Micros::ZERO)
    }

    /// From now on the client talks: media leaves every [`TALK_EVERY`], so
    /// the serving relay is probed at the talking interval.
    pub fn talk(&mut self) {
        self.talking = true;
        if !self.talk_pending {
            self.talk_pending = true;
            self.schedule(self.now, Scheduled::Talk);
        }
    }

    /// From now on the client sends no media (muted): a second later the
    /// serving relay is probed at its silent pace again.
    pub fn hush(&mut self) {
        self.talking = false;
    }

    /// From now on the client's downlink is slower than its call (a
    /// listener on a thin line): the serving relay's probe answers wait
    /// behind the call's media, a queue that fills to `full` over `fill`
    /// after a relay starts serving, whichever relay it is, while a standby,
    /// carrying no media, answers as its path allows. The queue is the
    /// serving path's alone: as the serving relay's own media queue and
    /// unsent bytes are, where the latency lab's `bench failover
    /// --slow-downlink-kbit` also puts every standby's answers behind the
    /// line's queue (one line for every region).
    pub fn queue_behind_the_call(&mut self, full: Duration, fill: Duration) {
        self.queue_and_drop_behind_the_call(full, fill, 0.0);
    }

    /// As [`Simulation::queue_behind_the_call`], and a full queue drops
    /// `drops` of the serving relay's answers (a drop-tail line buffer that
    /// the call's media keeps full).
    pub fn queue_and_drop_behind_the_call(&mut self, full: Duration, fill: Duration, drops: f64) {
        self.call_queue = Some(CallQueue { full, fill, drops });
    }

    /// Whether the queue behind the call drops this answer from `candidate`.
    fn dropped_behind_the_call(&mut self, candidate: usize) -> bool {
        let Some(queue) = self.call_queue else {
            return false;
        };
        queue.drops > 0.0
            && self.queued_behind_the_call(candidate) >= queue.full
            && self.rng.unit() < queue.drops
    }

    /// How long a probe answer from `candidate` waits behind the call's
    /// media now.
    fn queued_behind_the_call(&self, candidate: usize) -> Duration {
        let Some(CallQueue { full, fill, .. }) = self.call_queue else {
            return Duration::ZERO;
        };
        match self.joins.last() {
            Some(join) if join.candidate == candidate => {
                let serving_for = self.now().saturating_sub(join.at);
                if serving_for >= fill {
                    full
                } else {
                    full.mul_f64(serving_for.as_secs_f64() / fill.as_secs_f64())
                }
            }
            _ => Duration::ZERO,
        }
    }

    /// Runs the world until virtual time `until`.
    pub fn run_until(&mut self, until: Duration) {
        let end = Micros::ZERO + until;
        let mut stalled = 0;
        loop {
            let next_event = self.queue.peek().map(|(Reverse(t), _, _)| *t);
            let next_timer = self.election.poll_timeout();
            let next = match (next_event, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            if next > end {
                break;
            }
            stalled = if next <= self.now { stalled + 1 } else { 0 };
            assert!(
                stalled < 100_000,
                "the election keeps asking for a timeout at {:?} without progress",
                self.now()
            );
            self.now = next.max(self.now);
            if next_event == Some(next) {
                let (_, _, index) = self.queue.pop().expect("peeked");
                let item = self.scheduled[index].take().expect("scheduled once");
                self.apply(item);
            } else {
                self.election.handle_timeout(self.now);
            }
            self.drain_outputs();
        }
        self.now = end;
    }

    fn schedule(&mut self, at: Micros, item: Scheduled) {
        self.scheduled.push(Some(item));
        self.order += 1;
        self.queue
            .push((Reverse(at), Reverse(self.order), self.scheduled.len() - 1));
    }

    fn rtt_sample(&mut self, id: usize) -> Duration {
        let link = self.world[id].link_at(self.now());
        let rtt = link.rtt.as_secs_f64();
        let sample = rtt + link.jitter.as_secs_f64() * self.rng.normal();
        Duration::from_secs_f64(sample.max(0.3 * rtt).max(0.000_05))
    }

    /// Whether `candidate`'s relay answers a probe reaching it at `at`
    /// (within its budget); one it withholds is counted.
    fn relay_answers(&mut self, candidate: usize, at: Micros) -> bool {
        let answers = self.answer_budgets[candidate].take(at);
        if !answers {
            self.probes_withheld += 1;
        }
        answers
    }

    /// When a segment that reaches the far end of candidate `id`'s stream
    /// connection at `arrival` (had it not been lost) is delivered in
    /// `direction` (0 up, 1 down): later by a retransmission timeout for
    /// each loss of it, and never before the segment ahead of it.
    fn stream_leg(&mut self, id: usize, direction: usize, arrival: Micros) -> Micros {
        let loss = self.world[id].link_at(self.now()).loss(direction);
        let mut at = arrival;
        let mut rto = TCP_MIN_RTO;
        // TCP gives up on a segment after its retransmissions run out
        // (Linux: 15); so does the model, and a link losing everything
        // still ends.
        for _ in 0..TCP_RETRIES {
            if self.rng.unit() >= loss {
                break;
            }
            at = at + rto;
            rto = (rto * 2).min(TCP_MAX_RTO);
        }
        let at = at.max(self.stream_released[id][direction]);
        self.stream_released[id][direction] = at;
        at
    }

    fn round_trip_lost(&mut self, id: usize) -> bool {
        let survive = self.world[id].link_at(self.now()).round_trip_survival();
        self.rng.unit() >= survive
    }

    /// How long the relay's word (a reset, a Drain) takes to reach the
    /// client on candidate `id`'s path.
    fn way_down(&self, id: usize) -> Duration {
        let link = self.world[id].link_at(self.now());
        link.legs(link.rtt).1
    }

    fn apply(&mut self, item: Scheduled) {
        match item {
            Scheduled::Deliver(event) => {
                let candidate = match &event {
                    Event::Connected { candidate, .. }
                    | Event::ProbeAck { candidate, .. }
                    | Event::ConnectionLost { candidate, .. }
                    | Event::Drain { candidate }
                    | Event::Heard { candidate, .. }
                    | Event::ConnectFailed { candidate, .. } => *candidate,
                    // The simulation carries no media.
                    Event::MediaSent { .. } => return,
                };
                match event {
                    Event::Connected { .. } | Event::ConnectFailed { .. }
                        if !self.connecting[candidate] =>
                    {
                        return; // the client gave up on this attempt
                    }
                    Event::Connected { .. } => {
                        self.connecting[candidate] = false;
                        self.open[candidate] = true;
                        let said = self.world[candidate].welcome_probes_per_second;
                        self.answer_budgets[candidate] =
                            AnswerBudget::full(self.now, probes_answered(said));
                    }
                    Event::ConnectFailed { .. } => self.connecting[candidate] = false,
                    Event::ConnectionLost { .. } => {
                        if !self.open[candidate] {
                            return; // the client already closed it
                        }
                        self.open[candidate] = false;
                    }
                    Event::ProbeAck { .. } | Event::Drain { .. } if !self.open[candidate] => return,
                    _ => {}
                }
                self.election.handle(event, self.now);
            }
            Scheduled::Death(id) => {
                if self.open[id] {
                    let notice = match self.world[id].candidate.transport {
                        TransportKind::WebSocket => self.way_down(id),
                        TransportKind::WebTransport => QUIC_IDLE_TIMEOUT,
                    };
                    self.schedule(
                        self.now + notice,
                        Scheduled::Deliver(Event::ConnectionLost {
                            candidate: id,
                            reason: "relay died".into(),
                        }),
                    );
                }
            }
            Scheduled::Talk => {
                self.talk_pending = false;
                if !self.talking {
                    return; // hushed
                }
                self.election
                    .handle(Event::MediaSent { at: self.now }, self.now);
                self.talk_pending = true;
                self.schedule(self.now + TALK_EVERY, Scheduled::Talk);
            }
            Scheduled::Drain(id) => {
                if self.open[id] {
                    let down = self.way_down(id);
                    self.schedule(
                        self.now + down,
                        Scheduled::Deliver(Event::Drain { candidate: id }),
                    );
                }
            }
        }
    }

    fn drain_outputs(&mut self) {
        while let Some(action) = self.election.poll_action() {
            self.act(action);
        }
        while let Some(notice) = self.election.poll_notice() {
            match notice {
                Notice::Decided { decision, .. } => {
                    self.reports += 1;
                    self.decisions.push((self.now(), decision));
                }
                Notice::NoRelayReachable { .. } => {
                    self.reports += 1;
                    self.unreachable_notices += 1;
                }
                Notice::CandidateFailed { .. } => {}
            }
        }
    }

    fn act(&mut self, action: Action) {
        let now = self.now;
        match action {
            Action::Open { candidate } => {
                self.connecting[candidate] = true;
                self.stream_released[candidate] = [Micros::ZERO; 2];
                let c = &self.world[candidate];
                if c.unreachable {
                    self.schedule(
                        now + CONNECT_TIMEOUT,
                        Scheduled::Deliver(Event::ConnectFailed {
                            candidate,
                            reason: "connect timed out".into(),
                        }),
                    );
                } else if c.dead_at(self.now()) || c.drains_at.is_some_and(|d| self.now() >= d) {
                    let rtt = self.rtt_sample(candidate);
                    self.schedule(
                        now + rtt,
                        Scheduled::Deliver(Event::ConnectFailed {
                            candidate,
                            reason: "connection refused".into(),
                        }),
                    );
                } else {
                    let mut took = Duration::ZERO;
                    for _ in 0..self.election.config().handshake_round_trips {
                        took += self.rtt_sample(candidate);
                        if self.round_trip_lost(candidate) {
                            took += Duration::from_millis(200);
                        }
                    }
                    let said = self.world[candidate].welcome_probes_per_second;
                    self.schedule(
                        now + took,
                        Scheduled::Deliver(Event::Connected {
                            candidate,
                            probes_answered: probes_answered(said),
                        }),
                    );
                }
            }
            Action::SendProbe { candidate, seq } => {
                self.probes += 1;
                if self.election.role(candidate) == Role::Standby {
                    self.standby_probes += 1;
                }
                if !self.open[candidate] || self.world[candidate].dead_at(self.now()) {
                    return;
                }
                let rtt = self.rtt_sample(candidate) + self.queued_behind_the_call(candidate);
                let transport = self.world[candidate].candidate.transport;
                let answered_at = match transport {
                    TransportKind::WebTransport => {
                        // A datagram's budget is taken as it leaves (the
                        // same pace, give or take the path's jitter), also
                        // when lost on the way up (safe: a real relay never
                        // sees it).
                        if !self.relay_answers(candidate, now)
                            || self.round_trip_lost(candidate)
                            || self.dropped_behind_the_call(candidate)
                        {
                            return;
                        }
                        now + rtt
                    }
                    TransportKind::WebSocket => {
                        let (up, down) = self.world[candidate].link_at(self.now()).legs(rtt);
                        let there = self.stream_leg(candidate, UP, now + up);
                        // As it arrives: a stream stalled by a lost segment
                        // delivers everything sent meanwhile at once.
                        if !self.relay_answers(candidate, there) {
                            return;
                        }
                        self.stream_leg(candidate, DOWN, there + down)
                    }
                };
                self.schedule(
                    answered_at,
                    Scheduled::Deliver(Event::ProbeAck {
                        candidate,
                        seq,
                        relay_hold: Duration::ZERO,
                        received_at: answered_at,
                    }),
                );
            }
            Action::Join { candidate, .. } => self.joins.push(Join {
                at: self.now(),
                candidate,
            }),
            Action::Demote { .. } => {}
            Action::Prepare { candidate } => self.prepares.push(Join {
                at: self.now(),
                candidate,
            }),
            Action::Unprepare { .. } => {}
            Action::Close { candidate } => {
                self.open[candidate] = false;
                self.connecting[candidate] = false;
            }
        }
    }

    /// The first decision of the initial election, if any.
    pub fn initial(&self) -> Option<&(Duration, Decision)> {
        self.decisions.first()
    }

    /// Switches after the initial decision.
    pub fn switches(&self) -> usize {
        self.joins.len().saturating_sub(1)
    }

    /// When the client first served through a candidate `wanted` accepts.
    pub fn first_served(&self, wanted: impl Fn(usize) -> bool) -> Option<Duration> {
        self.joins
            .iter()
            .find(|j| wanted(j.candidate))
            .map(|j| j.at)
    }

    /// The candidate the client served through at `t`.
    pub fn serving_at(&self, t: Duration) -> Option<usize> {
        self.joins.iter().rfind(|j| j.at <= t).map(|j| j.candidate)
    }

    /// The true median RTT of a candidate at time `t`.
    pub fn true_rtt(&self, id: usize, t: Duration) -> Duration {
        self.world[id].link_at(t).rtt
    }

    /// The share of round trips candidate `id`'s path loses at `t`.
    pub fn true_round_trip_loss(&self, id: usize, t: Duration) -> f64 {
        self.world[id].link_at(t).round_trip_loss()
    }

    /// The candidates a client could elect at `t`.
    fn electable(&self, t: Duration) -> impl Iterator<Item = usize> + '_ {
        (0..self.world.len()).filter(move |&id| {
            let c = &self.world[id];
            !c.unreachable && !c.dead_at(t) && !c.candidate.shadow
        })
    }

    /// The lowest true RTT of any usable, electable candidate at `t`.
    pub fn best_true_rtt(&self, t: Duration) -> Duration {
        self.electable(t)
            .map(|id| self.true_rtt(id, t))
            .min()
            .unwrap_or(Duration::MAX)
    }

    /// The lowest round-trip loss of any usable, electable candidate at `t`.
    pub fn best_round_trip_loss(&self, t: Duration) -> f64 {
        self.electable(t)
            .map(|id| self.true_round_trip_loss(id, t))
            .fold(f64::INFINITY, f64::min)
    }
}

/// Both transports of two regions, with one link per region.
pub fn two_regions(a: (&str, Link), b: (&str, Link)) -> Vec<SimCandidate> {
    vec![
        SimCandidate::new(a.0, TransportKind::WebSocket, a.1),
        SimCandidate::new(a.0, TransportKind::WebTransport, a.1),
        SimCandidate::new(b.0, TransportKind::WebSocket, b.1),
        SimCandidate::new(b.0, TransportKind::WebTransport, b.1),
    ]
}

/// `world` with one relay per region serving both its transports, as
/// deployed relays do (`SimCandidate::new` gives each transport a relay of
/// its own, so one transport can fail alone): a standby is then chosen in
/// another region, whose path is another path.
pub fn one_relay_per_region(mut world: Vec<SimCandidate>) -> Vec<SimCandidate> {
    for c in &mut world {
        c.candidate.relay_id = c.candidate.region.clone();
    }
    world
}

/// Issue #15's lossy near regions, each against a clean region 25% slower
/// (candidates 2 and 3): losing 5% each way, and 10% on the downlink only.
pub fn lossy_near_regions() -> [(&'static str, Vec<SimCandidate>); 2] {
    [
        (
            "80 ms 5% loss each way vs 100 ms clean",
            two_regions(
                ("near", Link::new(80.0, 3.0, 0.05)),
                ("far", Link::new(100.0, 3.0, 0.0)),
            ),
        ),
        (
            "80 ms, 10% loss down vs 100 ms clean",
            two_regions(
                ("near", Link::asymmetric(40.0, 40.0, 3.0, 0.0, 0.10)),
                ("far", Link::new(100.0, 3.0, 0.0)),
            ),
        ),
    ]
}

/// Client locations the product is built for (RTTs from public inter-region
/// measurements, jitter and loss typical of fixed and mobile access).
pub fn realistic_scenarios() -> Vec<(&'static str, Vec<SimCandidate>)> {
    vec![
        (
            "client in Singapore",
            two_regions(
                ("singapore", Link::new(40.0, 5.0, 0.005)),
                ("us-east", Link::new(250.0, 5.0, 0.005)),
            ),
        ),
        (
            "client in New York",
            two_regions(
                ("us-east", Link::new(15.0, 3.0, 0.0)),
                ("singapore", Link::new(240.0, 5.0, 0.0)),
            ),
        ),
        (
            "client in Frankfurt",
            two_regions(
                ("us-east", Link::new(85.0, 5.0, 0.01)),
                ("singapore", Link::new(165.0, 8.0, 0.01)),
            ),
        ),
        (
            "mobile client in Jakarta",
            two_regions(
                ("singapore", Link::new(60.0, 15.0, 0.02)),
                ("us-east", Link::new(270.0, 15.0, 0.02)),
            ),
        ),
    ]
}

/// How initial elections went over many seeds.
#[derive(Debug, Clone)]
pub struct InitialElections {
    pub runs: usize,
    /// Picks whose true RTT is within 5% of the best true RTT.
    pub accurate: usize,
    /// Picks whose true round-trip loss is at most the least lossy
    /// candidate's plus 1%.
    pub loss_accurate: usize,
    /// Decision times, sorted.
    pub decision_ms: Vec<u64>,
    /// The physical limit of a decision: 4 × the best true RTT (three round
    /// trips to connect, one for the first probe) plus one probe interval.
    pub limit_ms: u64,
}

impl InitialElections {
    pub fn accuracy(&self) -> f64 {
        self.accurate as f64 / self.runs.max(1) as f64
    }

    pub fn loss_accuracy(&self) -> f64 {
        self.loss_accurate as f64 / self.runs.max(1) as f64
    }

    /// A decision-time quantile as a multiple of the physical limit.
    pub fn decision_to_limit(&self, q: f64) -> f64 {
        self.decision_quantile_ms(q) as f64 / self.limit_ms.max(1) as f64
    }

    /// A quantile of the decision time in milliseconds.
    pub fn decision_quantile_ms(&self, q: f64) -> u64 {
        if self.decision_ms.is_empty() {
            return 0;
        }
        let index = ((self.decision_ms.len() - 1) as f64 * q).round() as usize;
        self.decision_ms[index]
    }
}

/// Runs the initial election of `world` for seeds `0..seeds`.
///
/// # Panics
/// If some run makes no initial decision within six virtual seconds.
pub fn initial_elections(
    world: &[SimCandidate],
    config: &ElectionConfig,
    seeds: u64,
) -> InitialElections {
    let mut outcome = InitialElections {
        runs: 0,
        accurate: 0,
        loss_accurate: 0,
        decision_ms: Vec::new(),
        limit_ms: 0,
    };
    for seed in 0..seeds {
        let mut sim = Simulation::new(world.to_vec(), config.clone(), seed);
        sim.run_until(Duration::from_secs(6));
        let (at, decision) = sim.initial().expect("an initial decision").clone();
        let picked = sim.true_rtt(decision.winner, at).as_secs_f64();
        let best = sim.best_true_rtt(at).as_secs_f64();
        outcome.runs += 1;
        if picked <= best * 1.05 {
            outcome.accurate += 1;
        }
        let loss = sim.true_round_trip_loss(decision.winner, at);
        if loss <= sim.best_round_trip_loss(at) + 0.01 {
            outcome.loss_accurate += 1;
        }
        outcome.limit_ms =
            (4.0 * best * 1000.0).round() as u64 + config.probe_interval.as_millis() as u64;
        outcome.decision_ms.push(at.as_millis() as u64);
    }
    outcome.decision_ms.sort_unstable();
    outcome
}
