//! The decision rules, as pure functions over measurements.
//!
//! ## Robust estimate: Hodges–Lehmann
//! A candidate's RTT is the **Hodges–Lehmann estimate** of its samples (the
//! median of all pairwise means). One probe delayed by a retransmission, a GC
//! pause or a burst of cross traffic moves the mean (the reference design's
//! estimate) but not this; and unlike the plain median it uses nearly all the
//! information in well-behaved samples (95% of the mean's efficiency under
//! normal jitter, against 64% for the median), so the same accuracy needs fewer
//! probes — which is what decides how early a client can decide.
//!
//! ## Loss
//! Users feel lost packets far more than a few milliseconds: a call over a
//! path losing 5% of its packets stutters, one 50 ms further away does not.
//! So loss weighs like RTT: [`LOSS_COST_US`] per unit of loss rate, every
//! percent beyond the first ([`LOSS_FREE`]) like 40 ms of RTT — a path that
//! keeps losing 5% of its round trips weighs like one about 160 ms slower.
//! (The ITU-T G.107 E-model weighs loss heavier still for codecs without
//! concealment; Opus hides isolated losses of a few percent, so this is the
//! milder end.)
//!
//! Loss is judged where the evidence is: by the **switching rule** (below),
//! over everything probed since the last decision. A tournament decides in a
//! fraction of a second, before a lost probe is even known lost (its timeout
//! is 4 × RTT, at least 250 ms); weighing the one or two losses it could see
//! cost 4–5% accuracy on the benchmark grid when every region lost alike, so
//! the tournament ranks by RTT and the serving phase moves a call off a
//! lossy relay once the loss is beyond doubt.
//!
//! What that waits for is the evidence on another path: a path is charged
//! only for loss beyond the most its rival may have (below), and a standby
//! probed once a second needs minutes before its bound says it is clean.
//! So while the serving path is suspected lossy ([`suspected_lossy`] on its
//! recent probes — the last 256 answers, ~13 s of a talking call, ~5 s of
//! a WebTransport one probed for evidence (below), ~51 s of another silent
//! one — so a loss that stopped stops counting):
//! * a standby in another region is probed every 20 ms (50 a second; a
//!   relay answers 100 and says so in its Welcome, and no connection is
//!   probed for evidence beyond 80% of what its relay says, 25 if it does
//!   not), at most `loss_evidence_probes` such probes per decision, and a
//!   serving WebTransport relay as often meanwhile;
//! * a standby in the serving region (its other relay, on the same path:
//!   one relay per transport, as the local stack runs) is no refuge, so the
//!   other regions are re-probed at once, and the first of them to finish
//!   that does not look lossy itself becomes the standby in its place
//!   (not while the client sends through the old one, make-before-break).
//!
//! A queue's drops are not a lossy path. On a line slower than the call,
//! the serving relay's answers wait behind the call's media, and the full
//! buffer drops some (or delays them past `LATE_FOR_MEDIA`, which counts the
//! same): that loss is the queue's, other regions share the client's line,
//! and 50 probes a second — ~46 kbit/s of answers per connection — would
//! take the line from the call they are meant to rescue. So a serving path
//! whose latest answers wait more than [`QUEUED_ABOVE_US`] above its least
//! round trip ([`queued`]) is not suspected lossy; the switching rule still
//! weighs its RTT and loss as always.
//!
//! Where the loss is the client's own access (every region loses alike),
//! this costs a standby in another region — a failover then goes further
//! than it would have — and at most `loss_evidence_probes` probes; the call
//! itself stays (two regions losing alike never trade places, below).
//! When a loss episode ends, the suspicion ends with the recent probes, and
//! the next re-probe brings the standby back to the serving region: 31–32 s
//! after a 6 s loss episode ended talking, 30–34 s silent on WebTransport
//! (its relay probed fast meanwhile; 57–61 s at its own pace, as after an
//! episode that outlasts the evidence budget; 90–150 s when the suspicion
//! counted the whole decision's probes).
//!
//! At 5% loss each way against a clean region 25% slower, a talking call
//! is on the clean region after 6.9 s median, 9.2 s p95 with one relay per
//! region (11.4 / 13.2 s with one per transport), a silent one after
//! 8.4 / 17.5 s (13.6 / 18.8 s); at 20 probes a second, all a relay's 25
//! allowed, 11.3–13.7 s median talking and 12.6–17.1 s silent
//! (`loss_evidence_probes` 0, the rule before: 84–124 s median;
//! `rallypoint bench election`,
//! `tests/election_sim.rs`; through real relays and delay proxies,
//! `lab/tests/latency_lab.rs`). The serving relay is probed faster too
//! when it is WebTransport (its bound was the slower half of a silent
//! call's evidence), never a WebSocket: its stream holds every probe
//! behind a lost segment, so one loss would count several times. Its
//! answers, 50 a second, are steady traffic to the watch meanwhile: a
//! silent call's relay is watched like a talker's, its death noticed from
//! silence, and its losses and the end of the fast probing raise a
//! suspicion or two — 1–2 preparations of the standby in the first two
//! minutes of these calls (20 seeds per lossy world, at 20 probes a
//! second; none before).
//!
//! The comparison is pairwise and one-sided: a path is charged only for the
//! loss it shows beyond doubt (the 99% Wilson lower bound of its rate) in
//! excess of the most its rival may have (the rival's 99% upper bound), so
//! two paths losing alike never trade places on which one happened to lose
//! a probe more, and the serving relay, probed five times as often as a
//! standby, is not charged for being known better. Lost probes cannot be
//! split by direction: a lost probe and a lost answer look the same to the
//! client.
//!
//! **Late is lost.** An answer more than 100 ms past its path's recent
//! median (`slot::LATE_FOR_MEDIA`) counts as lost too: a call's jitter
//! buffer has played past it. Without this a WebSocket looked clean on any
//! lossy path — TCP never loses a probe, it delivers it a retransmission
//! (≥ 200 ms) late — and a call on WebTransport over the same path was moved
//! to it for its datagrams' honest loss, every two minutes in the latency
//! lab at 5% loss.

//! ## Region first, then transport
//! The best-scoring candidate decides the **region**. Inside that region a
//! WebTransport candidate beats a better WebSocket one when it is within
//! `max(wt_margin_abs, wt_margin_rel × RTT)` of it (default max(5 ms, 10%)):
//! datagrams avoid head-of-line blocking, which is worth a little RTT but never
//! a lot — a slow WebTransport server does not beat a fast WebSocket one, and
//! the preference never crosses regions (another region is another path).
//!
//! ## Early decision (stopping rule)
//! Regions differ by geography (tens to hundreds of ms); the transports of one
//! region share a path and differ by protocol overhead. So the tournament stops
//! as soon as the **leading region** is clearly best, then picks the transport
//! inside it by the preference rule on the samples so far.
//!
//! For each candidate, the estimate's confidence bounds are
//! `HL ± t(n−1) · 1.0233 · σ / √n` in microseconds, where σ = 1.4826 × MAD
//! (a robust standard deviation, floored at max(0.5 ms, 2% of the estimate) for
//! timer and scheduling granularity), 1.0233/√n is the standard error of the
//! Hodges–Lehmann estimate relative to σ, and t is Student's one-sided 99%
//! quantile, which widens the bounds sharply for small samples. A candidate
//! needs `min_samples` (3) samples for bounds. Candidates with fewer samples, or still
//! connecting, get only a lower bound:
//! * still connecting after `t`: its handshake needs `handshake_round_trips`
//!   (3) round trips, and one that lost a leg waited a retransmission timeout
//!   (about as long again) on top, so its RTT is at least `t / 6` — this is
//!   what lets a client near one region decide before far regions have even
//!   connected, without a lossy handshake making a near region look far
//!   (`t / 3` did: with 5% loss and fast probing it cost 5% accuracy on the
//!   grid);
//! * connected with 0–2 samples: the larger of its connect-time bound (the
//!   same `t / 6` of its handshake) and 70% of its smallest observation (a
//!   path is not much faster than every measurement of it) — a candidate
//!   that has just connected keeps what its connect time said.
//!
//! Candidates of the leader's own region are not part of the stopping rule, but
//! the tournament waits for them to be measured (at least one sample) unless
//! they have been connecting for longer than twice their handshake would take at
//! the leader's RTT — a WebTransport candidate behind a UDP-blocking firewall
//! must not hold the decision up.
//!
//! The leader (the candidate `pick` chooses) is **clearly best** when, for every
//! candidate of another region that has not failed,
//! `UCB(region) ≤ (1 + tolerance) · LCB(other) + 1 ms` (plus the WebTransport
//! margin when the leader is WebTransport and the other is WebSocket), where
//! `UCB(region)` is the smallest upper bound of the leader's region: either of
//! its transports with enough samples decides the region (they share a path),
//! so a preferred transport that connected late does not hold the decision.
//! If the bounds hold, the leader's true RTT is within `tolerance` (5%) of
//! every other region's: the pick is correct by the accuracy target's own
//! definition.
//!
//! This is an approximate sequential test (normal approximation of the estimate,
//! repeated looks): its error rate is checked by the virtual-time simulations
//! in `tests/election_sim.rs` over thousands of seeded scenarios rather than
//! proven. Otherwise the tournament ends at the deadline (3 s) with the pick on
//! all samples.
//!
//! ## Switching (degradation and improvement)
//! Once serving, the client moves only to a challenger that is better by at
//! least 10 ms **and** at least 33% (the rule Tailscale uses for DERP regions),
//! judged on the bounds of the recent samples (the challenger's upper bound
//! against the serving candidate's lower bound, over `recent_window`),
//! sustained for `switch_sustain` (2 s; four times longer after each recent
//! move, see `damping`). Both thresholds keep jitter on a fast
//! path and small relative changes on a slow path from causing flapping; the
//! bounds keep a standby measured once a second from winning on a lucky few
//! samples. Each side carries the cost of its excess loss (see Loss), so a
//! serving relay that turns lossy is left for a clean standby.

use super::config::ElectionConfig;
use super::stats::{hodges_lehmann, mad};
use crate::candidate::TransportKind;

/// What the rules know about one candidate.
#[derive(Debug, Clone)]
pub struct Measured<'a> {
    pub id: usize,
    pub region: &'a str,
    pub transport: TransportKind,
    pub state: MeasuredState<'a>,
}

#[derive(Debug, Clone)]
pub enum MeasuredState<'a> {
    /// Not connected yet; connecting for this long (µs).
    Connecting { for_us: u64 },
    /// Connected after a handshake of `connect_us`; this window's samples
    /// (µs).
    Connected { samples: &'a [u64], connect_us: u64 },
    /// Not usable in this election.
    Failed,
}

impl Measured<'_> {
    fn samples(&self) -> &[u64] {
        match self.state {
            MeasuredState::Connected { samples, .. } => samples,
            _ => &[],
        }
    }
}

/// Whether the rule weighs loss: rallypoint's does, the baselines (like the
/// reference design) do not.
fn loss_aware(config: &ElectionConfig) -> bool {
    config.stopping == super::config::StoppingRule::Sequential
}

/// RTT (µs) a unit of loss rate beyond [`LOSS_FREE`] weighs: 1% = 40 ms
/// (module doc).
pub const LOSS_COST_US: f64 = 4_000_000.0;

/// Loss any path may show at no cost: the odd lost probe.
pub const LOSS_FREE: f64 = 0.01;

/// z of the one-sided 99% bounds on a loss rate.
const LOSS_Z: f64 = 2.326;

/// The observed loss rate of a path with `answered` answers and `lost` lost
/// probes (for people).
pub fn loss_rate(answered: usize, lost: u32) -> f64 {
    let total = answered as f64 + lost as f64;
    if total == 0.0 {
        0.0
    } else {
        lost as f64 / total
    }
}

/// Whether a path's probes suggest it loses more than [`LOSS_FREE`]: at
/// least two lost and a rate above it. A suspicion, not a judgement — it
/// only makes the client gather evidence on the path's rivals sooner (see
/// `ElectionConfig::loss_evidence_probe_interval`); the switching rule
/// judges on bounds.
pub fn suspected_lossy(answered: usize, lost: u32) -> bool {
    lost >= 2 && loss_rate(answered, lost) > LOSS_FREE
}

/// Recent answers a path's queue is judged on ([`queued`]): about a second
/// of a talking call's probes.
pub const QUEUE_SAMPLES: usize = 16;

/// How far above its least round trip a path's recent answers must wait to
/// be queued ([`queued`]): more than jitter, less than a home router's
/// buffer (100 ms at its line rate). 30 ms of jitter, the rough path's, puts
/// the median about 42 ms above the least of a few hundred answers (whose
/// legs are near zero) and the median of 16 above 60 ms in under 2% of
/// windows (simulated): a suspicion paused then is harmless there, where
/// every region loses alike. A path that is queued shows it in its RTT too,
/// which the switching rule weighs as always: congestion in the middle of
/// the serving path is left for its delay, not its drops.
pub const QUEUED_ABOVE_US: f64 = 60_000.0;

/// Whether a path's latest answers (`latest`, µs: its newest
/// [`QUEUE_SAMPLES`]) wait far above its least round trip (`floor`, µs): a
/// queue holds them — on a serving path, most likely the call's own media
/// on a line slower than it. Its lost probes are then that queue's drops,
/// which another region shares if the line is the client's own, and which
/// probing harder for evidence would only feed (a probe answer is ~115 B on
/// the wire: 50 a second are ~46 kbit/s). Their median, so one late answer
/// is not a queue.
pub fn queued(floor: Option<u64>, latest: &[u64]) -> bool {
    let Some(floor) = floor else {
        return false;
    };
    super::stats::median(latest).is_some_and(|median| median > floor as f64 + QUEUED_ABOVE_US)
}

/// The one-sided 99% Wilson score bounds on a path's loss rate: what it
/// shows at least and what it may have at most.
pub fn loss_rate_bounds(answered: usize, lost: u32) -> (f64, f64) {
    let n = answered as f64 + lost as f64;
    if n == 0.0 {
        return (0.0, 1.0);
    }
    let p = lost as f64 / n;
    let z2 = LOSS_Z * LOSS_Z;
    let centre = p + z2 / (2.0 * n);
    let spread = LOSS_Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let scale = 1.0 + z2 / n;
    (
        ((centre - spread) / scale).max(0.0),
        ((centre + spread) / scale).min(1.0),
    )
}

/// What `this` path's loss costs against `other`'s, as RTT (µs): only the
/// loss `this` shows beyond doubt in excess of the most `other` may have
/// (and of [`LOSS_FREE`]). Each is `(answered, lost)`. Two paths losing
/// alike cost each other nothing, however differently the dice fell, and a
/// path measured more often is not charged for being known better.
pub fn loss_excess_cost(this: (usize, u32), other: (usize, u32)) -> f64 {
    let (this_at_least, _) = loss_rate_bounds(this.0, this.1);
    let (_, other_at_most) = loss_rate_bounds(other.0, other.1);
    LOSS_COST_US * (this_at_least - other_at_most.max(LOSS_FREE)).max(0.0)
}

pub fn wt_margin(rtt_us: f64, config: &ElectionConfig) -> f64 {
    (config.wt_margin_abs.as_micros() as f64).max(config.wt_margin_rel * rtt_us)
}

/// A candidate with an RTT estimate, for [`pick`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimated<'a> {
    pub id: usize,
    pub region: &'a str,
    pub transport: TransportKind,
    /// RTT estimate (µs).
    pub rtt: f64,
}

/// Chooses among estimated candidates: the best estimate decides the region;
/// inside it, a WebTransport candidate within the margin of a WebSocket best
/// wins.
pub fn pick(estimated: &[Estimated<'_>], config: &ElectionConfig) -> Option<usize> {
    let best = estimated.iter().min_by(|a, b| a.rtt.total_cmp(&b.rtt))?;
    if best.transport == TransportKind::WebTransport {
        return Some(best.id);
    }
    let limit = best.rtt + wt_margin(best.rtt, config);
    let wt = estimated
        .iter()
        .filter(|c| c.region == best.region)
        .filter(|c| c.transport == TransportKind::WebTransport && c.rtt <= limit)
        .min_by(|a, b| a.rtt.total_cmp(&b.rtt));
    Some(wt.map(|w| w.id).unwrap_or(best.id))
}

/// One-sided 99% quantiles of Student's t by degrees of freedom.
#[allow(clippy::approx_constant)] // t(11) = 2.718 is a table value, not e
fn t_quantile(df: usize) -> f64 {
    const TABLE: [f64; 11] = [
        31.821, 6.965, 4.541, 3.747, 3.365, 3.143, 2.998, 2.896, 2.821, 2.764, 2.718,
    ];
    match df {
        0 => f64::INFINITY,
        1..=11 => TABLE[df - 1],
        12..=14 => 2.681,
        15..=19 => 2.602,
        20..=29 => 2.528,
        30..=59 => 2.457,
        _ => 2.326,
    }
}

/// Lower and upper confidence bounds on a candidate's RTT (µs), if it has
/// enough samples.
pub fn bounds(samples: &[u64], config: &ElectionConfig) -> Option<(f64, f64)> {
    bounds_with_scale(samples, samples, config)
}

/// Bounds on `samples`, with the spread estimated from `spread_from` (a longer
/// history of the same path when there is one: five samples can agree by
/// chance — or by a coarse clock — and a spread of zero would make any
/// difference look certain).
pub fn bounds_with_scale(
    samples: &[u64],
    spread_from: &[u64],
    config: &ElectionConfig,
) -> Option<(f64, f64)> {
    // The estimate is of the newest samples: so are its bounds.
    let samples = super::stats::estimation_samples(samples);
    let n = samples.len();
    if n < config.min_samples.max(2) as usize {
        return None;
    }
    let m = hodges_lehmann(samples)?;
    let spread = mad(samples)?.max(mad(spread_from).unwrap_or(0.0));
    let sigma = (1.4826 * spread).max(500.0_f64.max(0.02 * m));
    let half = t_quantile(n - 1) * 1.0233 * sigma / (n as f64).sqrt();
    Some(((m - half).max(0.0), m + half))
}

/// A lower bound on a candidate's RTT (µs), however little is known.
fn lower_bound(candidate: &Measured<'_>, config: &ElectionConfig) -> f64 {
    // A handshake that lost a leg waited a retransmission timeout longer;
    // counting twice its round trips keeps the bound under the RTT even then.
    let per_round_trip = |us: u64| us as f64 / (2 * config.handshake_round_trips.max(1)) as f64;
    match &candidate.state {
        MeasuredState::Failed => f64::INFINITY,
        MeasuredState::Connecting { for_us } => per_round_trip(*for_us),
        MeasuredState::Connected {
            samples,
            connect_us,
        } => match bounds(samples, config) {
            Some((lcb, _)) => lcb,
            None => {
                let observed = samples.iter().min().map_or(0.0, |&m| m as f64 * 0.7);
                observed.max(per_round_trip(*connect_us))
            }
        },
    }
}

/// The estimate a candidate ranks by, under the configured rule.
pub fn estimate(samples: &[u64], config: &ElectionConfig) -> Option<f64> {
    match config.stopping {
        super::config::StoppingRule::FixedDeadline => {
            if samples.is_empty() {
                None
            } else {
                Some(samples.iter().sum::<u64>() as f64 / samples.len() as f64)
            }
        }
        super::config::StoppingRule::FirstProbe => samples.first().map(|&s| s as f64),
        super::config::StoppingRule::Sequential => hodges_lehmann(samples),
    }
}

/// The current pick among connected candidates with samples.
pub fn leader(candidates: &[Measured<'_>], config: &ElectionConfig) -> Option<usize> {
    let estimated: Vec<Estimated<'_>> = candidates
        .iter()
        .filter_map(|c| {
            Some(Estimated {
                id: c.id,
                region: c.region,
                transport: c.transport,
                rtt: estimate(c.samples(), config)?,
            })
        })
        .collect();
    pick(&estimated, config)
}

/// True when the leader is clearly best: see the module documentation.
pub fn clearly_best(
    candidates: &[Measured<'_>],
    leader_id: usize,
    config: &ElectionConfig,
) -> bool {
    let Some(leader) = candidates.iter().find(|c| c.id == leader_id) else {
        return false;
    };
    // Either transport of the leader's region decides it: they share a path.
    let Some(ucb) = candidates
        .iter()
        .filter(|c| c.region == leader.region)
        .filter_map(|c| bounds(c.samples(), config).map(|(_, ucb)| ucb))
        .min_by(f64::total_cmp)
    else {
        return false;
    };
    let leader_rtt = estimate(leader.samples(), config).unwrap_or(0.0);
    let same_region_settled = candidates
        .iter()
        .filter(|c| c.region == leader.region && c.id != leader.id)
        .all(|c| match &c.state {
            MeasuredState::Failed => true,
            MeasuredState::Connected { samples, .. } => !samples.is_empty(),
            MeasuredState::Connecting { for_us } => {
                let allowance = 2.0 * config.handshake_round_trips as f64 * leader_rtt;
                *for_us as f64 > allowance + 100_000.0
            }
        });
    same_region_settled
        && candidates
            .iter()
            .filter(|c| c.region != leader.region)
            .all(|other| {
                let lcb = lower_bound(other, config);
                if lcb.is_infinite() {
                    return true;
                }
                let mut allowed = (1.0 + config.tolerance) * lcb + 1000.0;
                if leader.transport == TransportKind::WebTransport
                    && other.transport == TransportKind::WebSocket
                {
                    allowed += wt_margin(lcb, config);
                }
                ucb <= allowed
            })
}

/// What the switching rule knows of one candidate.
#[derive(Debug, Clone, Copy)]
pub struct Recent<'a> {
    /// Samples of the recent window (µs).
    pub samples: &'a [u64],
    /// A longer history of the same path, for the spread.
    pub history: &'a [u64],
    /// Answered and lost probes since the last decision.
    pub answered: usize,
    pub lost: u32,
}

/// What a switch compared (µs): the serving candidate's lower bound and the
/// challenger's upper bound on RTT, and what each was charged for its loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    pub current_lcb: f64,
    pub current_loss_cost: f64,
    pub challenger_ucb: f64,
    pub challenger_loss_cost: f64,
}

impl Comparison {
    pub fn current_score(&self) -> f64 {
        self.current_lcb + self.current_loss_cost
    }

    pub fn challenger_score(&self) -> f64 {
        self.challenger_ucb + self.challenger_loss_cost
    }
}

/// The switching rule on bounds: is the challenger clearly better than the
/// serving candidate — its upper bound against the current lower bound, each
/// side charged the loss it shows beyond doubt in excess of the other's (see
/// [`loss_excess_cost`])? What was compared, if so.
pub fn clearly_better(
    current: Recent<'_>,
    challenger: Recent<'_>,
    config: &ElectionConfig,
) -> Option<Comparison> {
    let (current_lcb, _) = bounds_with_scale(current.samples, current.history, config)?;
    let (_, challenger_ucb) = bounds_with_scale(challenger.samples, challenger.history, config)?;
    let current_loss = (current.answered, current.lost);
    let challenger_loss = (challenger.answered, challenger.lost);
    let (current_loss_cost, challenger_loss_cost) = if loss_aware(config) {
        (
            loss_excess_cost(current_loss, challenger_loss),
            loss_excess_cost(challenger_loss, current_loss),
        )
    } else {
        (0.0, 0.0)
    };
    let comparison = Comparison {
        current_lcb,
        current_loss_cost,
        challenger_ucb,
        challenger_loss_cost,
    };
    better_enough(
        comparison.current_score(),
        comparison.challenger_score(),
        config,
    )
    .then_some(comparison)
}

/// Is `challenger` (µs) better than `current` (µs) by at least
/// `switch_min_abs` and at least `switch_min_rel`?
pub fn better_enough(current: f64, challenger: f64, config: &ElectionConfig) -> bool {
    let gain = current - challenger;
    gain >= config.switch_min_abs.as_micros() as f64 && gain >= config.switch_min_rel * current
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransportKind::{WebSocket as Ws, WebTransport as Wt};

    fn cfg() -> ElectionConfig {
        ElectionConfig::default()
    }

    fn measured<'a>(
        id: usize,
        region: &'a str,
        transport: TransportKind,
        state: MeasuredState<'a>,
    ) -> Measured<'a> {
        Measured {
            id,
            region,
            transport,
            state,
        }
    }

    fn connected(samples: &[u64]) -> MeasuredState<'_> {
        MeasuredState::Connected {
            samples,
            connect_us: 0,
        }
    }

    fn scored(id: usize, region: &str, transport: TransportKind, ms: f64) -> Estimated<'_> {
        Estimated {
            id,
            region,
            transport,
            rtt: ms * 1000.0,
        }
    }

    #[test]
    fn webtransport_wins_only_within_the_margin() {
        // 40 ms WS vs 43 ms WT: within max(5 ms, 4 ms) -> WT.
        assert_eq!(
            pick(
                &[scored(0, "a", Ws, 40.0), scored(1, "a", Wt, 43.0)],
                &cfg()
            ),
            Some(1)
        );
        // 40 ms WS vs 60 ms WT: a slow WT server does not beat a fast WS one.
        assert_eq!(
            pick(
                &[scored(0, "a", Ws, 40.0), scored(1, "a", Wt, 60.0)],
                &cfg()
            ),
            Some(0)
        );
        // 200 ms WS vs 218 ms WT: 10% of 200 ms = 20 ms margin -> WT.
        assert_eq!(
            pick(
                &[scored(0, "a", Ws, 200.0), scored(1, "a", Wt, 218.0)],
                &cfg()
            ),
            Some(1)
        );
        assert_eq!(pick(&[], &cfg()), None);
    }

    #[test]
    fn the_webtransport_preference_stays_inside_the_leading_region() {
        // Region a is best (40 ms, its WebTransport blocked); region b's
        // WebTransport at 43 ms is within the margin of a's WebSocket but on
        // another path: a wins.
        let candidates = [
            scored(0, "a", Ws, 40.0),
            scored(1, "b", Ws, 44.0),
            scored(2, "b", Wt, 43.0),
        ];
        assert_eq!(pick(&candidates, &cfg()), Some(0));
    }

    #[test]
    fn a_path_is_suspected_lossy_on_two_losses_above_the_free_rate() {
        assert!(!suspected_lossy(1000, 0));
        // One lost probe is the odd one, however few were sent.
        assert!(!suspected_lossy(10, 1));
        assert!(suspected_lossy(20, 2));
        // Two in a thousand is within what any path may lose.
        assert!(!suspected_lossy(998, 2));
        assert!(suspected_lossy(980, 20));
    }

    #[test]
    fn a_path_is_queued_when_its_latest_answers_wait_far_above_its_least() {
        let ms = |values: &[u64]| values.iter().map(|v| v * 1000).collect::<Vec<u64>>();
        // Nothing measured yet: no floor, no queue.
        assert!(!queued(None, &ms(&[400; 16])));
        // Jitter around the floor, and one late answer, are not a queue.
        assert!(!queued(Some(40_000), &ms(&[45, 70, 52, 41, 88, 60, 47])));
        assert!(!queued(Some(40_000), &ms(&[42, 41, 400, 43, 44])));
        // Half the latest answers 300 ms behind the call's media are.
        let mut filling = ms(&[42; 8]);
        filling.extend(ms(&[340; 9]));
        assert!(queued(Some(40_000), &filling));
    }

    #[test]
    fn loss_weighs_like_rtt_only_where_it_is_beyond_doubt() {
        assert_eq!(LOSS_COST_US * 0.01, 40_000.0, "1% beyond the first = 40 ms");
        assert_eq!(loss_rate(90, 10), 0.1);
        let clean_long = (3000, 0);
        // One probe of twenty lost costs nothing; ten of a hundred cost
        // about 160 ms against a clean, well-measured path.
        assert_eq!(loss_excess_cost((19, 1), clean_long), 0.0);
        let ms = (loss_excess_cost((90, 10), clean_long) / 1000.0).round();
        assert!((150.0..170.0).contains(&ms), "{ms} ms");
        // Two paths losing alike cost each other nothing, whoever lost more
        // probes by chance or was probed more.
        assert_eq!(loss_excess_cost((940, 60), (95, 5)), 0.0);
        assert_eq!(loss_excess_cost((95, 5), (940, 60)), 0.0);
    }

    #[test]
    fn a_lossy_serving_path_is_left_for_a_clean_one_not_clearly_slower() {
        let current = [80_000u64; 25];
        let challenger = [100_000u64; 25];
        let recent = |samples, answered, lost| Recent {
            samples,
            history: samples,
            answered,
            lost,
        };
        // 80 ms losing 10% of 600 probes against 100 ms clean over 200.
        let lossy = recent(&current[..], 540, 60);
        let clean = recent(&challenger[..], 200, 0);
        assert!(clearly_better(lossy, clean, &cfg()).is_some());
        // The same loss on both: RTT alone decides, and 100 ms does not
        // beat 80 ms.
        let also_lossy = recent(&challenger[..], 180, 20);
        assert!(clearly_better(lossy, also_lossy, &cfg()).is_none());
        // The reference design's rule ignores loss.
        assert!(clearly_better(lossy, clean, &ElectionConfig::fixed_tournament()).is_none());
    }

    #[test]
    fn a_just_connected_candidate_keeps_its_connect_time_bound() {
        // The far region connected after 600 ms (its bound: 600 / 6 =
        // 100 ms) and has no sample yet: the near one is still clearly best.
        let near = [40_000, 41_000, 40_500];
        let candidates = [
            measured(0, "sg", Ws, connected(&near)),
            measured(
                1,
                "us",
                Ws,
                MeasuredState::Connected {
                    samples: &[],
                    connect_us: 600_000,
                },
            ),
        ];
        assert!(clearly_best(&candidates, 0, &cfg()));
    }

    #[test]
    fn either_transport_of_the_leading_region_decides_it() {
        // sg/ws has its samples; the preferred sg/wt connected late and has
        // one (it leads by the transport preference); us is far. The region
        // is decided without waiting for sg/wt's own three samples.
        let ws = [20_000, 20_400, 19_800, 20_100, 20_200];
        let wt = [21_000];
        let candidates = [
            measured(0, "sg", Ws, connected(&ws)),
            measured(1, "sg", Wt, connected(&wt)),
            measured(2, "us", Ws, MeasuredState::Connecting { for_us: 600_000 }),
        ];
        assert_eq!(leader(&candidates, &cfg()), Some(1));
        assert!(clearly_best(&candidates, 1, &cfg()));
    }

    #[test]
    fn bounds_need_samples_and_shrink_with_them() {
        assert!(bounds(&[40_000, 41_000], &cfg()).is_none());
        let three = bounds(&[40_000, 45_000, 38_000], &cfg()).unwrap();
        let ten = bounds(
            &[
                40_000, 45_000, 38_000, 41_000, 39_000, 44_000, 40_500, 42_000, 37_000, 43_000,
            ],
            &cfg(),
        )
        .unwrap();
        assert!(three.0 < ten.0 && three.1 > ten.1, "{three:?} vs {ten:?}");
        assert!(ten.0 < 41_000.0 && ten.1 > 41_000.0);
    }

    #[test]
    fn a_near_region_is_clearly_best_while_far_ones_still_connect() {
        let near = [40_000, 41_000, 40_500];
        let candidates = [
            measured(0, "sg", Ws, connected(&near)),
            measured(1, "us", Ws, MeasuredState::Connecting { for_us: 600_000 }),
        ];
        assert_eq!(leader(&candidates, &cfg()), Some(0));
        assert!(clearly_best(&candidates, 0, &cfg()));
        // Had the far region only been connecting for 90 ms, nothing is known yet.
        let candidates = [
            candidates[0].clone(),
            measured(1, "us", Ws, MeasuredState::Connecting { for_us: 90_000 }),
        ];
        assert!(!clearly_best(&candidates, 0, &cfg()));
    }

    #[test]
    fn close_regions_with_jitter_are_not_clearly_separated() {
        let a = [40_000, 52_000, 35_000];
        let b = [44_000, 38_000, 50_000];
        let candidates = [
            measured(0, "a", Ws, connected(&a)),
            measured(1, "b", Ws, connected(&b)),
        ];
        let l = leader(&candidates, &cfg()).unwrap();
        assert!(!clearly_best(&candidates, l, &cfg()));
    }

    #[test]
    fn switching_needs_both_ten_ms_and_a_third() {
        assert!(better_enough(100_000.0, 60_000.0, &cfg()));
        assert!(
            !better_enough(100_000.0, 80_000.0, &cfg()),
            "20% is not enough"
        );
        assert!(
            !better_enough(20_000.0, 12_000.0, &cfg()),
            "8 ms is not enough"
        );
        assert!(better_enough(250_000.0, 40_000.0, &cfg()));
    }
}
