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
//! ## Transport preference
//! The best candidate by estimate wins, except that a WebTransport candidate
//! beats a better WebSocket one when it is within
//! `max(wt_margin_abs, wt_margin_rel × RTT)` of it (default max(5 ms, 10%)):
//! datagrams avoid head-of-line blocking, which is worth a little RTT but never
//! a lot — a slow WebTransport server does not beat a fast WebSocket one.
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
//!   (3) round trips, so its RTT is at least `t / 3` — this is what lets a client
//!   near one region decide before far regions have even connected;
//! * connected with 1–2 samples: 70% of its smallest observation (a path is
//!   not much faster than every measurement of it).
//!
//! Candidates of the leader's own region are not part of the stopping rule, but
//! the tournament waits for them to be measured (at least one sample) unless
//! they have been connecting for longer than twice their handshake would take at
//! the leader's RTT — a WebTransport candidate behind a UDP-blocking firewall
//! must not hold the decision up.
//!
//! The leader (the candidate `pick` chooses) is **clearly best** when, for every
//! candidate of another region that has not failed,
//! `UCB(leader) ≤ (1 + tolerance) · LCB(other) + 1 ms` (plus the WebTransport
//! margin when the leader is WebTransport and the other is WebSocket). If the
//! bounds hold, the leader's true RTT is within `tolerance` (5%) of every
//! other region's: the pick is correct by the accuracy target's own definition.
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
//! sustained for `switch_sustain` (2 s). Both thresholds keep jitter on a fast
//! path and small relative changes on a slow path from causing flapping; the
//! bounds keep a standby measured once a second from winning on a lucky few
//! samples.

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
    /// Connected; samples of this window (µs).
    Connected { samples: &'a [u64] },
    /// Not usable in this election.
    Failed,
}

impl Measured<'_> {
    fn samples(&self) -> &[u64] {
        match self.state {
            MeasuredState::Connected { samples } => samples,
            _ => &[],
        }
    }
}

/// The WebTransport preference margin around an RTT (µs).
pub fn wt_margin(rtt_us: f64, config: &ElectionConfig) -> f64 {
    (config.wt_margin_abs.as_micros() as f64).max(config.wt_margin_rel * rtt_us)
}

/// Chooses among candidates with estimates: the lowest, unless a WebTransport
/// candidate is within the margin of a WebSocket best.
pub fn pick(estimates: &[(usize, TransportKind, f64)], config: &ElectionConfig) -> Option<usize> {
    let &(best_id, best_transport, best) = estimates.iter().min_by(|a, b| a.2.total_cmp(&b.2))?;
    if best_transport == TransportKind::WebTransport {
        return Some(best_id);
    }
    let limit = best + wt_margin(best, config);
    let wt = estimates
        .iter()
        .filter(|(_, t, rtt)| *t == TransportKind::WebTransport && *rtt <= limit)
        .min_by(|a, b| a.2.total_cmp(&b.2));
    Some(wt.map(|w| w.0).unwrap_or(best_id))
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
    match &candidate.state {
        MeasuredState::Failed => f64::INFINITY,
        MeasuredState::Connecting { for_us } => {
            *for_us as f64 / config.handshake_round_trips.max(1) as f64
        }
        MeasuredState::Connected { samples } => match bounds(samples, config) {
            Some((lcb, _)) => lcb,
            None => samples.iter().min().map(|&m| m as f64 * 0.7).unwrap_or(0.0),
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
    let estimates: Vec<(usize, TransportKind, f64)> = candidates
        .iter()
        .filter_map(|c| Some((c.id, c.transport, estimate(c.samples(), config)?)))
        .collect();
    pick(&estimates, config)
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
    let Some((_, ucb)) = bounds(leader.samples(), config) else {
        return false;
    };
    let leader_rtt = estimate(leader.samples(), config).unwrap_or(0.0);
    let same_region_settled = candidates
        .iter()
        .filter(|c| c.region == leader.region && c.id != leader.id)
        .all(|c| match &c.state {
            MeasuredState::Failed => true,
            MeasuredState::Connected { samples } => !samples.is_empty(),
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

/// The switching rule on bounds: is the challenger clearly better than the
/// serving candidate (its upper bound against the current lower bound)? Each
/// is `(recent samples, longer history)`.
pub fn clearly_better(
    current: (&[u64], &[u64]),
    challenger: (&[u64], &[u64]),
    config: &ElectionConfig,
) -> Option<(f64, f64)> {
    let (current_lcb, _) = bounds_with_scale(current.0, current.1, config)?;
    let (_, challenger_ucb) = bounds_with_scale(challenger.0, challenger.1, config)?;
    better_enough(current_lcb, challenger_ucb, config).then_some((current_lcb, challenger_ucb))
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

    #[test]
    fn webtransport_wins_only_within_the_margin() {
        // 40 ms WS vs 43 ms WT: within max(5 ms, 4 ms) -> WT.
        assert_eq!(
            pick(&[(0, Ws, 40_000.0), (1, Wt, 43_000.0)], &cfg()),
            Some(1)
        );
        // 40 ms WS vs 60 ms WT: a slow WT server does not beat a fast WS one.
        assert_eq!(
            pick(&[(0, Ws, 40_000.0), (1, Wt, 60_000.0)], &cfg()),
            Some(0)
        );
        // 200 ms WS vs 218 ms WT: 10% of 200 ms = 20 ms margin -> WT.
        assert_eq!(
            pick(&[(0, Ws, 200_000.0), (1, Wt, 218_000.0)], &cfg()),
            Some(1)
        );
        assert_eq!(pick(&[], &cfg()), None);
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
            Measured {
                id: 0,
                region: "sg",
                transport: Ws,
                state: MeasuredState::Connected { samples: &near },
            },
            Measured {
                id: 1,
                region: "us",
                transport: Ws,
                state: MeasuredState::Connecting { for_us: 600_000 },
            },
        ];
        assert_eq!(leader(&candidates, &cfg()), Some(0));
        assert!(clearly_best(&candidates, 0, &cfg()));
        // Had the far region only been connecting for 90 ms, nothing is known yet.
        let candidates = [
            candidates[0].clone(),
            Measured {
                id: 1,
                region: "us",
                transport: Ws,
                state: MeasuredState::Connecting { for_us: 90_000 },
            },
        ];
        assert!(!clearly_best(&candidates, 0, &cfg()));
    }

    #[test]
    fn close_regions_with_jitter_are_not_clearly_separated() {
        let a = [40_000, 52_000, 35_000];
        let b = [44_000, 38_000, 50_000];
        let candidates = [
            Measured {
                id: 0,
                region: "a",
                transport: Ws,
                state: MeasuredState::Connected { samples: &a },
            },
            Measured {
                id: 1,
                region: "b",
                transport: Ws,
                state: MeasuredState::Connected { samples: &b },
            },
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
