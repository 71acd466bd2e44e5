//! Every tunable of the election, with the defaults the product ships.

use std::time::Duration;

/// How the tournament decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoppingRule {
    /// rallypoint's rule: stop as soon as the leader is clearly best (see
    /// [`super::rule`]), else at the deadline; robust estimate = Hodges–Lehmann.
    Sequential,
    /// Baseline (the reference design): always run to the deadline, pick the
    /// lowest *mean* RTT.
    FixedDeadline,
    /// Baseline: decide on each candidate's first RTT sample.
    FirstProbe,
}

#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// Probe interval for tournament contenders and the serving candidate.
    pub probe_interval: Duration,
    /// A contender's first `min_samples` probes go this far apart: its
    /// connection is fresh and a probe is a few dozen bytes, so the
    /// tournament gets its evidence in one round trip plus a few of these
    /// rather than a few probe intervals.
    pub burst_probe_interval: Duration,
    /// Probe interval for the serving candidate while the client sends
    /// media: its answers are the traffic a dead relay falls silent on
    /// (probes are a few dozen bytes; 20 a second is a fraction of one
    /// audio stream).
    pub talking_probe_interval: Duration,
    /// Probe interval for warm standbys.
    pub standby_probe_interval: Duration,
    /// Probe interval for a warm standby in another region, and for a
    /// serving WebTransport candidate, while the serving path loses probes:
    /// a move off a lossy relay waits until the switching rule's bounds show
    /// the standby cleaner and the serving path lossier, and at their own
    /// paces (a standby once a second, a silent call's relay five times)
    /// that took minutes. 50 a second, and never faster than 80% of what
    /// the connection's relay says it answers (by default 100,
    /// `limits::PROBES_ANSWERED_PER_SECOND`; 25 from a relay that does not
    /// say): past it, the relay's silence reads as loss. Faster still (100
    /// a second) left a lossy region sooner (talking, one relay per region:
    /// 5.7 s median against 6.9) but moved 14 in 100 calls through a 6 s
    /// loss episode just after it had ended, and back (1 in 100 at 50, none
    /// at 20 a second): the serving path's loss is judged on its last 256
    /// answers, which the faster probing makes recent enough to mature a
    /// move within the episode's last seconds.
    pub loss_evidence_probe_interval: Duration,
    /// … until the standby has answered or lost this many probes since the
    /// last decision (enough to bound its loss below `rule::LOSS_FREE` when
    /// it is clean: ≈ 0.9% at 600), and at most this many such probes per
    /// decision, whichever standbys take them: the budget when it loses
    /// alike. 0 gathers no such evidence: no faster probing, and no early
    /// search for a standby in another region (the rule before either, kept
    /// as the benchmark's baseline).
    pub loss_evidence_probes: u32,
    /// The tournament decides at the latest this long after it started.
    pub deadline: Duration,
    pub stopping: StoppingRule,
    /// Samples a candidate needs before its RTT gets a confidence bound.
    pub min_samples: u32,
    /// Indifference zone: a pick within this fraction of the best is correct.
    pub tolerance: f64,
    /// WebTransport beats WebSocket only within max(abs, rel × RTT) of it.
    pub wt_margin_abs: Duration,
    pub wt_margin_rel: f64,
    /// Warm standbys kept connected (probe-only) after the decision.
    pub standbys: usize,
    /// Light re-probe of every other candidate this often.
    pub reprobe_interval: Duration,
    /// Samples taken per candidate in a light re-probe.
    pub reprobe_samples: u32,
    /// Consecutive lost probes that count as the serving relay being gone.
    pub failover_lost_probes: u32,
    /// … and on a WebSocket, for at least this long: a TCP stream stalls
    /// for retransmissions (three of one segment take 1.4 s) rather than
    /// lose anything.
    pub stream_stall_limit: Duration,
    /// Switch to a challenger only when it is better by at least this much …
    pub switch_min_abs: Duration,
    /// … and by at least this fraction of the serving RTT …
    pub switch_min_rel: f64,
    /// … continuously for this long.
    pub switch_sustain: Duration,
    /// Samples this recent make the estimates used for switching.
    pub recent_window: Duration,
    /// Round trips a connection needs before Welcome (TCP or QUIC handshake,
    /// HTTP upgrade or CONNECT, Hello/Welcome): a candidate still connecting
    /// after `t` has an RTT of at least `t / handshake_round_trips`.
    pub handshake_round_trips: u32,
    /// Probes unanswered this long are lost (clamped multiple of the RTT).
    pub probe_timeout_min: Duration,
    pub probe_timeout_max: Duration,
    /// Backoff between elections when no candidate could be reached.
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        ElectionConfig {
            probe_interval: Duration::from_millis(200),
            burst_probe_interval: Duration::from_millis(25),
            talking_probe_interval: Duration::from_millis(50),
            standby_probe_interval: Duration::from_secs(1),
            loss_evidence_probe_interval: Duration::from_millis(20),
            loss_evidence_probes: 600,
            deadline: Duration::from_secs(3),
            stopping: StoppingRule::Sequential,
            min_samples: 3,
            tolerance: 0.05,
            wt_margin_abs: Duration::from_millis(5),
            wt_margin_rel: 0.10,
            standbys: 1,
            reprobe_interval: Duration::from_secs(30),
            reprobe_samples: 5,
            failover_lost_probes: 3,
            stream_stall_limit: Duration::from_secs(2),
            switch_min_abs: Duration::from_millis(10),
            switch_min_rel: 0.33,
            switch_sustain: Duration::from_secs(2),
            recent_window: Duration::from_secs(5),
            handshake_round_trips: 3,
            probe_timeout_min: Duration::from_millis(250),
            probe_timeout_max: Duration::from_secs(2),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
        }
    }
}

impl ElectionConfig {
    /// The reference design's tournament: fixed 3 s, lowest mean.
    pub fn fixed_tournament() -> Self {
        ElectionConfig {
            stopping: StoppingRule::FixedDeadline,
            burst_probe_interval: Duration::from_millis(200),
            ..Default::default()
        }
    }

    /// Decide on the first sample of each candidate.
    pub fn first_probe() -> Self {
        ElectionConfig {
            stopping: StoppingRule::FirstProbe,
            burst_probe_interval: Duration::from_millis(200),
            ..Default::default()
        }
    }
}
