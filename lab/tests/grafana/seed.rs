//! The seeded dataset: a few client profiles (ISP, country, RTT to each region)
//! whose sessions run over two weeks, the INSERT statements that store them,
//! and the helpers (grouping, unambiguous quantiles) that the expected
//! numbers are computed with.
//!
//! RTTs are chosen so every quantile checked is unambiguous: each ISP sees
//! its usual RTT to a region in eleven elections out of twelve and a slower
//! one in the twelfth, so p50 and p90 are the usual RTT and p95 the slow one
//! (where there are enough measurements) under any quantile definition
//! (`quantile` below refuses anything else). The busy day of `Singtel` is
//! shaped the same way for the hourly peak and p95.

use std::collections::{BTreeMap, BTreeSet};

pub const HOUR: u32 = 3_600;
pub const DAY: u32 = 86_400;
/// Monday 2026-11-09 00:00:00 UTC: the start of the seeded fortnight.
pub const BASE: u32 = 1_794_182_400;

struct Profile {
    isp: &'static str,
    country: &'static str,
    asn: u32,
    synthetic: bool,
    /// WebTransport never connects (UDP blocked): WebSocket wins.
    udp_blocked: bool,
    /// Regions best first, with their usual RTT in ms.
    regions: [(&'static str, u32); 3],
    /// Added to every RTT in every twelfth election.
    slow_ms: u32,
    /// A shadow relay (a region not launched yet), probed over WebTransport.
    shadow: Option<(&'static str, u32)>,
    /// Sessions starting at (day, hour, how many); each session's elections
    /// stay within its hour.
    schedule: &'static [(u32, u32, u32)],
    /// The elections after the initial one of session `i`.
    follow_up: fn(u32) -> &'static [Step],
}

/// One election of a session: when (seconds after its start), why, and the
/// regions (indexes into `Profile::regions`, 0 the best) it moves from and to
/// (none: every candidate failed, a report without a winner).
struct Step {
    after_s: u32,
    trigger: &'static str,
    rule: &'static str,
    decision_ms: u32,
    from: Option<usize>,
    to: Option<usize>,
    /// The `from` region's relays are gone (their candidates failed).
    from_lost: bool,
}

const NOTHING: &[Step] = &[];
/// The relay is lost: switch to the standby region.
const FAILOVER: &[Step] = &[Step {
    after_s: 600,
    trigger: "failover",
    rule: "standby",
    decision_ms: 4,
    from: Some(0),
    to: Some(1),
    from_lost: true,
}];
/// The relay drains: switch to the standby region.
const DRAIN: &[Step] = &[Step {
    after_s: 600,
    trigger: "drain",
    rule: "standby",
    decision_ms: 6,
    from: Some(0),
    to: Some(1),
    from_lost: false,
}];
/// The network drops during a re-election: no relay answers.
const OFFLINE: &[Step] = &[Step {
    after_s: 900,
    trigger: "reelection",
    rule: "deadline",
    decision_ms: 3000,
    from: Some(0),
    to: None,
    from_lost: false,
}];
/// The best region degrades: switch to the second one, then back.
const DEGRADATION_AND_BACK: &[Step] = &[
    Step {
        after_s: 600,
        trigger: "degradation",
        rule: "sustained_improvement",
        decision_ms: 2100,
        from: Some(0),
        to: Some(1),
        from_lost: false,
    },
    Step {
        after_s: 1200,
        trigger: "reelection",
        rule: "early",
        decision_ms: 900,
        from: Some(1),
        to: Some(0),
        from_lost: false,
    },
];

/// Singtel's sessions. Day 9 is busy: a session in each of hours 0..22, two
/// in hours 5 and 12, three in hour 18, so its sorted hourly counts end
/// 1, 2, 2, 3 (p95 2, peak 3).
#[rustfmt::skip]
const SINGTEL: &[(u32, u32, u32)] = &[
    (1, 9, 2),
    (3, 14, 2),
    (7, 9, 3),
    (9, 0, 1),
    (9, 1, 1),
    (9, 2, 1),
    (9, 3, 1),
    (9, 4, 1),
    (9, 5, 2),
    (9, 6, 1),
    (9, 7, 1),
    (9, 8, 1),
    (9, 9, 1),
    (9, 10, 1),
    (9, 11, 1),
    (9, 12, 2),
    (9, 13, 1),
    (9, 14, 1),
    (9, 15, 1),
    (9, 16, 1),
    (9, 17, 1),
    (9, 18, 3),
    (9, 19, 1),
    (9, 20, 1),
    (9, 21, 1),
    (12, 20, 3),
];

const PROFILES: &[Profile] = &[
    Profile {
        isp: "Singtel",
        country: "SG",
        asn: 7473,
        synthetic: false,
        udp_blocked: false,
        regions: [("singapore", 40), ("frankfurt", 170), ("us-east", 250)],
        slow_ms: 8,
        shadow: Some(("mumbai", 60)),
        schedule: SINGTEL,
        follow_up: |i| if i % 3 == 2 { FAILOVER } else { NOTHING },
    },
    Profile {
        isp: "Comcast",
        country: "US",
        asn: 7922,
        synthetic: false,
        udp_blocked: true,
        regions: [("us-east", 20), ("frankfurt", 95), ("singapore", 230)],
        slow_ms: 6,
        shadow: None,
        schedule: &[(2, 16, 3), (5, 17, 2), (8, 15, 4), (10, 16, 5)],
        follow_up: |i| match i {
            4 => OFFLINE,
            _ if i % 2 == 1 => DRAIN,
            _ => NOTHING,
        },
    },
    Profile {
        isp: "Deutsche Telekom",
        country: "DE",
        asn: 3320,
        synthetic: false,
        udp_blocked: false,
        regions: [("frankfurt", 15), ("us-east", 90), ("singapore", 160)],
        slow_ms: 4,
        shadow: None,
        schedule: &[(4, 8, 3), (6, 19, 4), (11, 10, 4), (13, 7, 3)],
        follow_up: |i| {
            if i % 3 == 0 {
                DEGRADATION_AND_BACK
            } else {
                NOTHING
            }
        },
    },
    // Synthetic probes: present on the same days, excluded by default.
    Profile {
        isp: "LabNet",
        country: "ZZ",
        asn: 64512,
        synthetic: true,
        udp_blocked: false,
        regions: [("us-east", 1), ("frankfurt", 1), ("singapore", 1)],
        slow_ms: 1,
        shadow: None,
        schedule: &[(2, 16, 4), (9, 5, 4), (11, 10, 4)],
        follow_up: |_| FAILOVER,
    },
];

pub struct Candidate {
    pub region: &'static str,
    pub transport: &'static str,
    pub shadow: bool,
    pub rtt_us: u32,
    pub samples: u32,
    pub lost: u32,
    pub error: &'static str,
    pub outcome: &'static str,
}

pub struct Election {
    pub report: u32,
    pub session: u32,
    pub at: u32,
    pub trigger: &'static str,
    pub rule: &'static str,
    pub decision_ms: u32,
    pub winner: Option<usize>,
    pub previous_region: &'static str,
    pub country: &'static str,
    pub asn: u32,
    pub isp: &'static str,
    pub synthetic: bool,
    pub candidates: Vec<Candidate>,
}

impl Election {
    pub fn winner_region(&self) -> &'static str {
        self.winner.map_or("", |w| self.candidates[w].region)
    }
    pub fn winner_transport(&self) -> &'static str {
        self.winner.map_or("", |w| self.candidates[w].transport)
    }
}

/// Every seeded election, in time order per session.
pub fn elections() -> Vec<Election> {
    let mut out = Vec::new();
    let mut session = 0;
    for profile in PROFILES {
        let (mut i, mut e) = (0, 0); // the profile's session and election numbers
        for &(day, hour, count) in profile.schedule {
            for k in 0..count {
                session += 1;
                let start = BASE + day * DAY + hour * HOUR + k * 120;
                let (rule, decision_ms) = if i % 10 == 9 {
                    ("deadline", 3000)
                } else {
                    ("early", 450 + 137 * (i % 7))
                };
                let initial = Step {
                    after_s: 0,
                    trigger: "initial",
                    rule,
                    decision_ms,
                    from: None,
                    to: Some(0),
                    from_lost: false,
                };
                for step in std::iter::once(&initial).chain((profile.follow_up)(i)) {
                    out.push(profile.election(out.len() as u32 + 1, session, e, start, step));
                    e += 1;
                }
                i += 1;
            }
        }
    }
    out
}

impl Profile {
    /// Election number `e` of this profile (every twelfth is slow), won by
    /// the step's region over WebTransport unless UDP is blocked.
    fn election(&self, report: u32, session: u32, e: u32, start: u32, step: &Step) -> Election {
        let slow = if e % 12 == 11 { self.slow_ms } else { 0 };
        let region = |i: usize| self.regions[i].0;
        let winner_region = step.to.map(region);
        let lost_region = step.from.filter(|_| step.from_lost).map(region);
        let mut candidates = Vec::new();
        for &(region, rtt_ms) in &self.regions {
            for transport in ["webtransport", "websocket"] {
                let error = if winner_region.is_none() {
                    "unreachable"
                } else if Some(region) == lost_region {
                    "connection lost"
                } else if transport == "webtransport" && self.udp_blocked {
                    "webtransport: handshake timed out"
                } else {
                    ""
                };
                let (rtt_us, samples, lost, outcome) = if error.is_empty() {
                    (
                        (rtt_ms + slow) * 1000,
                        15,
                        u32::from(e.is_multiple_of(5)),
                        "loser",
                    )
                } else {
                    (0, 0, 0, "failed")
                };
                candidates.push(Candidate {
                    region,
                    transport,
                    shadow: false,
                    rtt_us,
                    samples,
                    lost,
                    error,
                    outcome,
                });
            }
        }
        if let Some((region, rtt_ms)) = self.shadow {
            candidates.push(Candidate {
                region,
                transport: "webtransport",
                shadow: true,
                rtt_us: (rtt_ms + slow) * 1000,
                samples: 15,
                lost: 0,
                error: "",
                outcome: "loser",
            });
        }
        let preferred = if self.udp_blocked {
            "websocket"
        } else {
            "webtransport"
        };
        let find = |region: &str| {
            candidates
                .iter()
                .position(|c| c.region == region && c.transport == preferred && !c.shadow)
        };
        let winner = winner_region.map(|r| find(r).expect("the winner is a candidate"));
        // The standby: the best candidate on another relay, still reachable.
        let standby = self
            .regions
            .iter()
            .map(|r| r.0)
            .find(|&r| winner_region.is_some_and(|w| w != r) && Some(r) != lost_region)
            .and_then(find);
        if let Some(standby) = standby {
            candidates[standby].outcome = "standby";
        }
        if let Some(winner) = winner {
            candidates[winner].outcome = "winner";
        }
        Election {
            report,
            session,
            at: start + step.after_s,
            trigger: step.trigger,
            rule: step.rule,
            decision_ms: step.decision_ms,
            winner,
            previous_region: step.from.map_or("", region),
            country: self.country,
            asn: self.asn,
            isp: self.isp,
            synthetic: self.synthetic,
            candidates,
        }
    }
}

fn id(prefix: char, n: u32) -> String {
    format!("{prefix}{n:015}")
}

fn text(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The INSERT statements for `elections` (the rollups fill themselves).
pub fn inserts(elections: &[Election]) -> Vec<String> {
    let mut rows = Vec::new();
    let mut candidate_rows = Vec::new();
    for e in elections {
        let winner = e.winner.map(|w| &e.candidates[w]);
        rows.push(format!(
            "({report}, toDateTime({at}), {ms}, {session}, {trigger}, {rule}, {decision}, {has_winner}, {region}, \
             {transport}, {rtt}, {previous}, {n}, {failed}, {country}, {asn}, {isp}, {synthetic})",
            report = text(&id('r', e.report)),
            at = e.at,
            ms = u64::from(e.at) * 1000,
            session = text(&id('s', e.session)),
            trigger = text(e.trigger),
            rule = text(e.rule),
            decision = e.decision_ms,
            has_winner = u8::from(winner.is_some()),
            region = text(e.winner_region()),
            transport = text(e.winner_transport()),
            rtt = winner.map_or(0, |c| c.rtt_us),
            previous = text(e.previous_region),
            n = e.candidates.len(),
            failed = e.candidates.iter().filter(|c| !c.error.is_empty()).count(),
            country = text(e.country),
            asn = e.asn,
            isp = text(e.isp),
            synthetic = u8::from(e.synthetic),
        ));
        for (idx, c) in e.candidates.iter().enumerate() {
            candidate_rows.push(format!(
                "({report}, toDateTime({at}), {idx}, {session}, {trigger}, {region}, {transport}, {shadow}, {error}, \
                 {samples}, {lost}, {rtt}, {outcome}, {country}, {asn}, {isp}, {synthetic})",
                report = text(&id('r', e.report)),
                at = e.at,
                session = text(&id('s', e.session)),
                trigger = text(e.trigger),
                region = text(c.region),
                transport = text(c.transport),
                shadow = u8::from(c.shadow),
                error = text(c.error),
                samples = c.samples,
                lost = c.lost,
                rtt = c.rtt_us,
                outcome = text(c.outcome),
                country = text(e.country),
                asn = e.asn,
                isp = text(e.isp),
                synthetic = u8::from(e.synthetic),
            ));
        }
    }
    vec![
        format!(
            "INSERT INTO rp_elections (report_id, received_at, received_ms, session_id, trigger, rule, decision_ms, \
             has_winner, winner_region, winner_transport, winner_rtt_us, previous_region, candidates, failed, \
             country, asn, isp, synthetic) VALUES {}",
            rows.join(", ")
        ),
        format!(
            "INSERT INTO rp_candidates (report_id, received_at, idx, session_id, trigger, region, transport, shadow, \
             error, samples, lost, rtt_median_us, outcome, country, asn, isp, synthetic) VALUES {}",
            candidate_rows.join(", ")
        ),
    ]
}

/// The `q` quantile of `values`, when the seed makes it unambiguous: the
/// nearest-rank value and both neighbours of the interpolation point agree.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    assert!(n > 0, "quantile of nothing");
    let position = q * (n - 1) as f64;
    let nearest_rank = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
    let candidates = [
        sorted[position.floor() as usize],
        sorted[position.ceil() as usize],
        sorted[nearest_rank],
    ];
    assert!(
        candidates.iter().all(|&v| v == candidates[0]),
        "the seed makes the {q} quantile of {sorted:?} ambiguous"
    );
    candidates[0]
}

/// Values grouped by key, keys in order.
pub fn group<T, K: Ord, V>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> K,
    value: impl Fn(&T) -> V,
) -> BTreeMap<K, Vec<V>> {
    let mut groups: BTreeMap<K, Vec<V>> = BTreeMap::new();
    for item in items {
        groups.entry(key(&item)).or_default().push(value(&item));
    }
    groups
}

pub fn distinct<T: Ord + Clone>(values: &[T]) -> usize {
    values.iter().cloned().collect::<BTreeSet<_>>().len()
}
