//! The election in virtual time: thousands of seeded scenarios, checking
//! accuracy, decision time, flapping, failover, drain and degradation.

use std::time::Duration;

use rallypoint_client::TransportKind::{WebSocket as Ws, WebTransport as Wt};
use rallypoint_client::election::{ElectionConfig, Role, finish_report};
use rallypoint_client::sim::{
    Link, SimCandidate, Simulation, initial_elections, lossy_near_regions, one_relay_per_region,
    realistic_scenarios, two_regions,
};
use rallypoint_protocol::v1::{DecisionRule, ElectionTrigger};

const SEEDS: u64 = 400;

#[test]
fn realistic_scenarios_decide_fast_and_right() {
    for (name, world) in realistic_scenarios() {
        let ours = initial_elections(&world, &ElectionConfig::default(), SEEDS);
        eprintln!(
            "{name}: accuracy {:.2}%, median decision {} ms",
            ours.accuracy() * 100.0,
            ours.decision_quantile_ms(0.5)
        );
        assert!(
            ours.accuracy() >= 0.99,
            "{name}: accuracy {}",
            ours.accuracy()
        );
        let median = ours.decision_quantile_ms(0.5);
        assert!(median <= 1000, "{name}: median decision {median} ms");
    }
}

#[test]
fn the_grid_is_never_less_accurate_than_the_fixed_tournament_by_much() {
    for gap in [0.02, 0.10, 0.50] {
        for jitter in [0.0, 10.0, 30.0] {
            for loss in [0.0, 0.05] {
                let base = 80.0;
                let world = two_regions(
                    ("a", Link::new(base, jitter, loss)),
                    ("b", Link::new(base * (1.0 + gap), jitter, loss)),
                );
                let ours = initial_elections(&world, &ElectionConfig::default(), SEEDS);
                let fixed = initial_elections(&world, &ElectionConfig::fixed_tournament(), SEEDS);
                eprintln!(
                    "gap {gap} jitter {jitter} loss {loss}: ours {:.1}% in {} ms, fixed 3 s {:.1}%",
                    ours.accuracy() * 100.0,
                    ours.decision_quantile_ms(0.5),
                    fixed.accuracy() * 100.0
                );
                if !(0.05..0.5).contains(&gap) {
                    assert!(
                        ours.accuracy() >= 0.99,
                        "gap {gap} jitter {jitter} loss {loss}"
                    );
                }
                assert!(
                    ours.accuracy() + 0.03 >= fixed.accuracy(),
                    "gap {gap} jitter {jitter} loss {loss}: {} vs fixed {}",
                    ours.accuracy(),
                    fixed.accuracy()
                );
            }
        }
    }
}

#[test]
fn a_slow_webtransport_server_does_not_beat_a_fast_websocket_one() {
    let world = vec![
        SimCandidate::new("singapore", Ws, Link::new(40.0, 2.0, 0.0)),
        SimCandidate::new("singapore", Wt, Link::new(70.0, 2.0, 0.0)),
        SimCandidate::new("us-east", Ws, Link::new(250.0, 2.0, 0.0)),
        SimCandidate::new("us-east", Wt, Link::new(250.0, 2.0, 0.0)),
    ];
    for seed in 0..50 {
        let mut sim = Simulation::new(world.clone(), ElectionConfig::default(), seed);
        sim.run_until(Duration::from_secs(4));
        assert_eq!(sim.initial().unwrap().1.winner, 0, "seed {seed}");
    }
    // Within the margin WebTransport wins.
    let mut world = world;
    world[1].link = Link::new(42.0, 1.0, 0.0);
    for seed in 0..50 {
        let mut sim = Simulation::new(world.clone(), ElectionConfig::default(), seed);
        sim.run_until(Duration::from_secs(4));
        assert_eq!(sim.initial().unwrap().1.winner, 1, "seed {seed}");
    }
}

#[test]
fn jitter_does_not_cause_flapping() {
    let world = two_regions(
        ("singapore", Link::new(40.0, 30.0, 0.03)),
        ("us-east", Link::new(120.0, 30.0, 0.03)),
    );
    for seed in 0..20 {
        let mut sim = Simulation::new(world.clone(), ElectionConfig::default(), seed);
        sim.run_until(Duration::from_secs(600));
        assert_eq!(
            sim.switches(),
            0,
            "seed {seed}: switched {} times: {:?}",
            sim.switches(),
            sim.decisions
                .iter()
                .map(|(at, d)| format!("{at:?} {:?} {}", d.trigger, d.reason))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn losing_the_serving_relay_switches_to_the_standby_at_once() {
    for (transport_index, name) in [(0usize, "websocket"), (1, "webtransport")] {
        for seed in 0..50 {
            let mut world = two_regions(
                ("singapore", Link::new(40.0, 3.0, 0.0)),
                ("us-east", Link::new(250.0, 3.0, 0.0)),
            );
            // Make the chosen transport clearly win so we know who serves.
            world[1 - transport_index].link = Link::new(60.0, 3.0, 0.0);
            world[transport_index].dies_at = Some(Duration::from_secs(20));
            let mut sim = Simulation::new(world, ElectionConfig::default(), seed);
            sim.run_until(Duration::from_secs(40));
            assert_eq!(
                sim.serving_at(Duration::from_secs(19)),
                Some(transport_index)
            );
            let failover = sim
                .decisions
                .iter()
                .find(|(_, d)| d.trigger == ElectionTrigger::Failover)
                .unwrap_or_else(|| panic!("{name} seed {seed}: no failover"));
            let gap = failover.0 - Duration::from_secs(20);
            assert!(
                gap <= Duration::from_millis(1200),
                "{name} seed {seed}: failover took {gap:?}"
            );
            assert_eq!(failover.1.rule, DecisionRule::Standby);
            assert_ne!(
                sim.serving_at(Duration::from_secs(39)),
                Some(transport_index)
            );
        }
    }
}

#[test]
fn a_drain_moves_the_call_immediately() {
    let mut world = two_regions(
        ("singapore", Link::new(40.0, 3.0, 0.0)),
        ("us-east", Link::new(250.0, 3.0, 0.0)),
    );
    world[0].link = Link::new(60.0, 3.0, 0.0); // singapore/wt serves, ws stands by
    world[1].drains_at = Some(Duration::from_secs(15));
    let mut sim = Simulation::new(world.clone(), ElectionConfig::default(), 7);
    sim.run_until(Duration::from_secs(30));
    let drain = sim
        .decisions
        .iter()
        .find(|(_, d)| d.trigger == ElectionTrigger::Drain)
        .expect("a drain decision");
    assert!(
        drain.0 - Duration::from_secs(15) < Duration::from_millis(100),
        "{:?}",
        drain.0
    );
    assert_eq!(drain.1.rule, DecisionRule::Standby);
    assert_eq!(sim.serving_at(Duration::from_secs(29)), Some(0));

    // The whole region drains: no standby left, so a quick election moves the
    // call to the other region while the draining relay still carries it.
    world[0].drains_at = Some(Duration::from_secs(15));
    let mut sim = Simulation::new(world, ElectionConfig::default(), 7);
    sim.run_until(Duration::from_secs(30));
    let moved = sim
        .decisions
        .iter()
        .rfind(|(at, _)| *at >= Duration::from_secs(15))
        .expect("a decision after the drain");
    assert!(
        moved.0 - Duration::from_secs(15) < Duration::from_millis(1500),
        "{:?}",
        moved.0
    );
    assert!(
        sim.serving_at(Duration::from_secs(29)).unwrap() >= 2,
        "moved to us-east"
    );
}

#[test]
fn a_degraded_relay_is_left_for_a_clearly_better_one() {
    let mut world = two_regions(
        ("singapore", Link::new(40.0, 5.0, 0.0)),
        ("us-east", Link::new(250.0, 5.0, 0.0)),
    );
    for c in &mut world[0..2] {
        c.changes
            .push((Duration::from_secs(60), Link::new(400.0, 5.0, 0.0)));
    }
    let mut sim = Simulation::new(world, ElectionConfig::default(), 3);
    sim.run_until(Duration::from_secs(120));
    let switch = sim
        .decisions
        .iter()
        .find(|(_, d)| d.trigger == ElectionTrigger::Degradation)
        .expect("a degradation switch");
    assert!(switch.0 > Duration::from_secs(60));
    assert!(
        switch.0 < Duration::from_secs(60 + 35),
        "switched at {:?}",
        switch.0
    );
    assert!(sim.serving_at(Duration::from_secs(119)).unwrap() >= 2);
}

/// A listener whose downlink is slower than its call: whichever relay
/// serves, its answers wait behind the call's media (300 ms once the queue
/// has filled, a second after the relay starts serving), while a standby,
/// carrying none, answers at once and looks clearly better. Moving does not
/// help — the queue follows the call — so after a move or two the call
/// must stop chasing it. The latency lab's `bench failover
/// --slow-downlink-kbit 60` moved a listener 15 times in a minute; here,
/// before moves for degradation were damped, 107 times in ten minutes
/// (every 4–7 s, seed 0); damped, 7 (at 5, 15 and 49–82 s, then every two
/// minutes, in each of these seeds).
#[test]
fn a_call_whose_downlink_is_slower_than_its_media_stops_moving() {
    /// Moves for degradation allowed in ten minutes: see
    /// `election::damping` for the schedule.
    const MOVES: usize = 7;
    let world = two_regions(
        ("near", Link::new(40.0, 3.0, 0.0)),
        ("far", Link::new(240.0, 5.0, 0.0)),
    );
    for seed in 0..10 {
        let mut sim = Simulation::new(world.clone(), ElectionConfig::default(), seed);
        sim.queue_behind_the_call(Duration::from_millis(300), Duration::from_secs(1));
        sim.run_until(Duration::from_secs(600));
        let moves: Vec<Duration> = sim
            .decisions
            .iter()
            .filter(|(_, d)| d.trigger == ElectionTrigger::Degradation)
            .map(|(at, _)| *at)
            .collect();
        eprintln!("seed {seed}: {} moves, at {moves:?}", moves.len());
        assert!(
            moves.len() <= MOVES,
            "seed {seed}: moved {} times in ten minutes, at {moves:?}",
            moves.len()
        );
    }
}

/// A listener on a line slower than its call, whose drop-tail buffer the
/// call's media keeps full: the serving relay's answers wait behind that
/// media and some are dropped — loss from the call's own congestion, not
/// from a lossy path. Probing standbys (and the serving relay) 50 times a
/// second for evidence of loss then takes the line from the call it is
/// meant to rescue: a probe answer is ~115 B on the wire, ~46 kbit/s per
/// connection at that pace, on a line of 60 kbit/s in the latency lab.
/// Such a path's answers wait far above its least round trip; its standbys
/// keep their usual pace.
#[test]
fn a_line_the_call_congests_is_not_probed_harder_for_evidence_of_loss() {
    let world = two_regions(
        ("near", Link::new(40.0, 3.0, 0.0)),
        ("far", Link::new(240.0, 5.0, 0.0)),
    );
    const CALL: Duration = Duration::from_secs(300);
    let config = ElectionConfig::default();
    // Twice one standby's usual pace for the whole call, at most: re-probes
    // of the other region and suspicions' bursts add to its pace (they
    // took it to 382–432 here, against 2 954 while probing for evidence).
    let usual = 2.0 * CALL.as_secs_f64() / config.standby_probe_interval.as_secs_f64();
    for seed in 0..5 {
        let mut sim = Simulation::new(world.clone(), config.clone(), seed);
        sim.queue_and_drop_behind_the_call(
            Duration::from_millis(300),
            Duration::from_secs(1),
            0.05,
        );
        sim.run_until(CALL);
        eprintln!(
            "seed {seed}: {} probes in 5 min, {} of them to standbys (at most {usual:.0})",
            sim.probes, sim.standby_probes
        );
        assert!(
            sim.standby_probes as f64 <= usual,
            "seed {seed}: {} standby probes in 5 min, more than {usual:.0}: probed harder for \
             evidence of a queue's loss",
            sim.standby_probes
        );
    }
}

#[test]
fn a_better_relay_that_appears_is_adopted() {
    let mut world = two_regions(
        ("singapore", Link::new(600.0, 5.0, 0.0)),
        ("us-east", Link::new(250.0, 5.0, 0.0)),
    );
    for c in &mut world[0..2] {
        c.changes
            .push((Duration::from_secs(40), Link::new(40.0, 5.0, 0.0)));
    }
    let mut sim = Simulation::new(world, ElectionConfig::default(), 5);
    sim.run_until(Duration::from_secs(100));
    assert!(sim.serving_at(Duration::from_secs(39)).unwrap() >= 2);
    assert!(
        sim.serving_at(Duration::from_secs(99)).unwrap() < 2,
        "moved to singapore"
    );
}

#[test]
fn when_nothing_is_reachable_it_retries_with_backoff_and_says_so() {
    let mut world = two_regions(
        ("singapore", Link::new(40.0, 5.0, 0.0)),
        ("us-east", Link::new(250.0, 5.0, 0.0)),
    );
    for c in &mut world {
        c.unreachable = true;
    }
    let mut sim = Simulation::new(world, ElectionConfig::default(), 1);
    sim.run_until(Duration::from_secs(60));
    assert!(sim.joins.is_empty());
    // Each attempt waits for the 5 s connect timeout, then backs off 1, 2, 4,
    // 8, 16 s: attempts end at 5, 11, 18, 27, 40 (the sixth would end at 61).
    assert_eq!(sim.unreachable_notices, 5);
}

#[test]
fn a_failed_reelection_never_drops_the_working_connection() {
    let mut world = two_regions(
        ("singapore", Link::new(40.0, 3.0, 0.0)),
        ("us-east", Link::new(250.0, 3.0, 0.0)),
    );
    world[0].link = Link::new(60.0, 3.0, 0.0); // singapore/wt serves, ws stands by
    world[1].dies_at = Some(Duration::from_secs(10));
    world[2].unreachable = true;
    world[3].unreachable = true;
    let mut sim = Simulation::new(world, ElectionConfig::default(), 2);
    sim.run_until(Duration::from_secs(60));
    assert_eq!(sim.serving_at(Duration::from_secs(9)), Some(1));
    assert_eq!(sim.serving_at(Duration::from_secs(59)), Some(0));
    assert_eq!(sim.joins.len(), 2, "no move after the failover");
}

#[test]
fn every_decision_makes_a_valid_report() {
    let mut world = two_regions(
        ("singapore", Link::new(40.0, 5.0, 0.01)),
        ("us-east", Link::new(250.0, 5.0, 0.01)),
    );
    world[1].dies_at = Some(Duration::from_secs(10));
    let config = ElectionConfig::default();
    let candidates = world.iter().map(|c| c.candidate.clone()).collect();
    let mut election = rallypoint_client::election::Election::new(
        candidates,
        config,
        bytes::Bytes::from_static(&[9; 16]),
        Default::default(),
    );
    // Drive it by hand for one decision to look at the report itself.
    let t0 = rallypoint_client::Micros::ZERO;
    election.start(t0);
    let mut now = t0;
    let mut probes = Vec::new();
    while let Some(action) = election.poll_action() {
        if let rallypoint_client::election::Action::Open { candidate } = action {
            election.handle(
                rallypoint_client::election::Event::Connected {
                    candidate,
                    probes_answered: rallypoint_protocol::limits::PROBES_ANSWERED_PER_SECOND,
                },
                now + Duration::from_millis(100),
            );
        }
    }
    now = now + Duration::from_millis(100);
    for round in 0..20u64 {
        while let Some(action) = election.poll_action() {
            if let rallypoint_client::election::Action::SendProbe { candidate, seq } = action {
                probes.push((candidate, seq, now));
            }
        }
        for (candidate, seq, sent) in probes.drain(..) {
            let rtt = if candidate < 2 { 40 } else { 250 } + round % 3;
            election.handle(
                rallypoint_client::election::Event::ProbeAck {
                    candidate,
                    seq,
                    relay_hold: Duration::ZERO,
                    received_at: sent + Duration::from_millis(rtt),
                },
                sent + Duration::from_millis(rtt),
            );
        }
        now = now + Duration::from_millis(200);
        election.handle_timeout(now);
    }
    let mut decided = 0;
    while let Some(notice) = election.poll_notice() {
        if let rallypoint_client::election::Notice::Decided {
            mut report,
            decision,
        } = notice
        {
            finish_report(&mut report, [1; 16], 1_700_000_000_000);
            rallypoint_protocol::telemetry::validate(&report).expect("valid report");
            assert_eq!(report.candidates.len(), 4);
            assert_eq!(report.winner_index, Some(decision.winner as u32));
            assert!(report.candidates.iter().all(|c| c.samples > 0));
            decided += 1;
        }
    }
    assert_eq!(decided, 1);

    // And through the simulator: initial + failover + re-election all report.
    let mut sim = Simulation::new(world, ElectionConfig::default(), 4);
    sim.run_until(Duration::from_secs(30));
    assert!(sim.reports >= 3, "{} reports", sim.reports);
}

/// Issue #15, defect 1: a region losing 5% of its packets each way (about
/// 10% of round trips) must not keep a call that a clean region 25% slower
/// (not clearly slower) could carry.
#[test]
fn a_lossy_region_loses_the_call_to_a_clean_one_not_clearly_slower() {
    let world = two_regions(
        ("lossy", Link::new(80.0, 3.0, 0.05)),
        ("clean", Link::new(100.0, 3.0, 0.0)),
    );
    let mut initial_lossy = 0;
    for seed in 0..40 {
        let mut sim = Simulation::new(world.clone(), ElectionConfig::default(), seed);
        sim.run_until(Duration::from_secs(240));
        let (_, initial) = sim.initial().expect("an initial decision");
        initial_lossy += (initial.winner < 2) as usize;
        let serving = sim.serving_at(Duration::from_secs(239)).expect("serving");
        assert!(
            serving >= 2,
            "seed {seed}: still on the lossy region after 4 minutes ({} switches)",
            sim.switches()
        );
    }
    eprintln!("initial pick on the lossy region in {initial_lossy} of 40 runs; all moved");
}

/// Issue #15, defect 1 on a one-way lossy path: a congested downlink
/// losing 10% of what the relay sends (about as many round trips as 5% each
/// way) costs the region the call just the same. Probes cannot tell which
/// way lost them; the round trips lost are what the rule weighs.
#[test]
fn a_region_losing_packets_one_way_loses_the_call_to_a_clean_one() {
    let world = two_regions(
        ("lossy-down", Link::asymmetric(40.0, 40.0, 3.0, 0.0, 0.10)),
        ("clean", Link::new(100.0, 3.0, 0.0)),
    );
    for seed in 0..20 {
        let mut sim = Simulation::new(world.clone(), ElectionConfig::default(), seed);
        sim.run_until(Duration::from_secs(240));
        let serving = sim.serving_at(Duration::from_secs(239)).expect("serving");
        assert!(
            serving >= 2,
            "seed {seed}: still on the region whose downlink loses 10% after 4 minutes ({} switches)",
            sim.switches()
        );
    }
}

/// Issue #15, defect 1, in a call: once the serving path is suspected
/// lossy, a standby in the other region is probed 50 times a second (and,
/// where the first standby is the lossy region's other relay, one in the
/// other region is sought at once), and so is a serving WebTransport
/// relay, so the switching rule has the evidence it needs within seconds.
/// Without (`loss_evidence_probes` 0, the rule before) every one of these
/// calls stayed over 60 s; with the standby probed 10 times a second and
/// the serving relay at its own pace, talking calls took up to 25.5 s and
/// silent ones — their relay probed five times a second — up to 55.6 s (of
/// these 40 seeds; 29.9 and 55.6 s of the benchmark's 100); at 20 a second
/// (all a relay answered, 25, allowed) up to 19.0 s talking and 30.7 s
/// silent, and with one relay per region 11.1–12.8 s median (now 6.8–7.8).
#[test]
fn a_call_leaves_a_lossy_region_within_seconds() {
    for (talking, limit) in [(true, 16), (false, 26)] {
        let limit = Duration::from_secs(limit);
        for (name, world) in lossy_near_regions() {
            for (layout, world) in [
                ("one relay per region", one_relay_per_region(world.clone())),
                ("one relay per transport", world),
            ] {
                let mut moved_after = Vec::new();
                for seed in 0..40 {
                    let mut sim = Simulation::new(world.clone(), ElectionConfig::default(), seed);
                    if talking {
                        sim.talk();
                    }
                    sim.run_until(limit);
                    let moved = sim.first_served(|c| c >= 2);
                    assert!(
                        moved.is_some() && sim.serving_at(limit).is_some_and(|c| c >= 2),
                        "{name}, {layout}, talking {talking}, seed {seed}: not on the clean \
                         region within {limit:?} ({} switches)",
                        sim.switches()
                    );
                    moved_after.extend(moved.map(|at| at.as_millis()));
                }
                moved_after.sort_unstable();
                let median = moved_after[moved_after.len() / 2];
                eprintln!(
                    "{name}, {layout}, talking {talking}: on the clean region after {median} ms \
                     median, {} ms at most",
                    moved_after[moved_after.len() - 1]
                );
                if layout == "one relay per region" {
                    assert!(
                        median <= 9_000,
                        "{name}, {layout}, talking {talking}: {median} ms median"
                    );
                }
            }
        }
    }
}

/// A talker mutes on a clean path: its relay's answers drop from 20 a
/// second to five, the silence raises one suspicion (the standby prepared
/// once), and that is all — the suspicion's own burst of answers used to
/// keep the ended traffic looking steady, so that every silence after them
/// raised another: 101–102 preparations and 81–82 probes over the relay's
/// budget in 40 s of every one of these calls.
#[test]
fn a_talker_who_mutes_is_suspected_once() {
    for seed in 0..10 {
        let (sim, _) = muted_call(seed, None);
        assert_eq!(
            sim.prepares.len(),
            1,
            "seed {seed}: the standby prepared {} times in 40 s after the talker muted",
            sim.prepares.len()
        );
        assert_eq!(
            sim.probes_withheld, 0,
            "seed {seed}: probes over a relay's budget"
        );
        assert_eq!(sim.switches(), 0, "seed {seed}: the call moved");
    }
}

/// The price of the fix above: after a suspicion the watch waits for steady
/// traffic again, so a relay that dies then is noticed by its lost probes,
/// not its silence — as fast as any silent call's failover (the bound of
/// `losing_the_serving_relay_switches_to_the_standby_at_once`).
#[test]
fn a_relay_that_dies_just_after_a_muted_talkers_suspicion_is_left() {
    for seed in 0..10 {
        let (sim, _) = muted_call(seed, None);
        let suspected_at = sim.prepares[0].at;
        let dies_at = suspected_at + Duration::from_millis(300);
        let (sim, serving) = muted_call(seed, Some(dies_at));
        let failover = sim
            .decisions
            .iter()
            .find(|(_, d)| d.trigger == ElectionTrigger::Failover)
            .unwrap_or_else(|| panic!("seed {seed}: no failover after {serving}'s relay died"));
        let gap = failover.0 - dies_at;
        eprintln!("seed {seed}: failover {gap:?} after the relay died");
        assert!(
            gap <= Duration::from_millis(1200),
            "seed {seed}: failover {gap:?} after the relay died"
        );
    }
}

/// A two-region call whose client talks for 20 s, then mutes, run to 60 s;
/// the relay serving at 20 s dies at `dies_at` if given. The simulation and
/// that relay's candidate.
fn muted_call(seed: u64, dies_at: Option<Duration>) -> (Simulation, usize) {
    let world = two_regions(
        ("near", Link::new(40.0, 3.0, 0.0)),
        ("far", Link::new(120.0, 3.0, 0.0)),
    );
    let serving = {
        let mut sim = Simulation::new(world.clone(), ElectionConfig::default(), seed);
        sim.talk();
        sim.run_until(Duration::from_secs(20));
        sim.serving_at(Duration::from_secs(20))
            .expect("serving after 20 s")
    };
    let mut world = world;
    world[serving].dies_at = dies_at;
    let mut sim = Simulation::new(world, ElectionConfig::default(), seed);
    sim.talk();
    sim.run_until(Duration::from_secs(20));
    assert!(
        sim.prepares.is_empty(),
        "seed {seed}: a clean talking call prepared its standby"
    );
    sim.hush();
    sim.run_until(Duration::from_secs(60));
    (sim, serving)
}

/// Every relay answers a connection's probes up to a budget (by default
/// `PROBES_ANSWERED_PER_SECOND`, said in its Welcome; 25 if it does not say,
/// modelled by the simulation) and leaves the rest unanswered, which the
/// client cannot tell from loss. So the client never probes a connection
/// faster, whatever it is doing: deciding, talking, gathering loss evidence
/// on a lossy path, or suspecting a silent relay. (Standbys probed 40 times
/// a second for loss evidence by relays answering 25 had 3 600–6 200 probes
/// a call withheld, and the calls stayed on the lossy region 2–5 times as
/// long; against relays that do not say their budget, the client's 50 a
/// second for evidence would be withheld alike.) Nor when a talker's WebSocket on a rough path stalls and
/// delivers its probes in a bunch: with a burst of one second's worth, 4 of
/// seed 11's were withheld in its first minute, 48 in ten minutes of the
/// calls below that start on the WebSocket.
#[test]
fn no_connection_is_probed_faster_than_its_relay_answers() {
    let mut worlds: Vec<(String, Vec<SimCandidate>)> = Vec::new();
    for (name, world) in lossy_near_regions() {
        worlds.push((
            format!("{name}, one relay per region"),
            one_relay_per_region(world.clone()),
        ));
        // Relays from before `Welcome.probes_per_second`, answering 25 a
        // second: the client probes them as it did then.
        let mut earlier = one_relay_per_region(world.clone());
        for relay in &mut earlier {
            relay.welcome_probes_per_second = 0;
        }
        worlds.push((
            format!("{name}, relays that do not say their budget"),
            earlier,
        ));
        worlds.push((format!("{name}, one relay per transport"), world));
    }
    for (name, world) in realistic_scenarios() {
        worlds.push((name.to_owned(), world));
    }
    let mut dying = two_regions(
        ("near", Link::new(40.0, 3.0, 0.02)),
        ("far", Link::new(120.0, 3.0, 0.0)),
    );
    dying[1].dies_at = Some(Duration::from_secs(20));
    worlds.push(("the serving relay dies".to_owned(), dying));
    let rough = two_regions(
        ("near", Link::new(40.0, 30.0, 0.05)),
        ("far", Link::new(240.0, 30.0, 0.05)),
    );
    worlds.push(("a rough path".to_owned(), rough));
    for (name, world) in &worlds {
        for talking in [true, false] {
            // The rough path's seeds whose call starts on the WebSocket.
            let seeds = if name == "a rough path" { 10..17 } else { 0..5 };
            for seed in seeds {
                let mut sim = Simulation::new(world.clone(), ElectionConfig::default(), seed);
                if talking {
                    sim.talk();
                }
                sim.run_until(Duration::from_secs(60));
                assert_eq!(
                    sim.probes_withheld, 0,
                    "{name}, talking {talking}, seed {seed}: probes over a relay's budget"
                );
            }
        }
    }
}

/// The faster standby probing has a budget: none while the serving path is
/// clean (a standby is probed once a second), at most
/// `loss_evidence_probes` per decision when both regions lose alike — where
/// the call stays put, and a standby on the serving path is not given up
/// for one in a region that looks lossy too.
#[test]
fn standbys_are_probed_faster_only_while_the_serving_path_loses_and_only_so_long() {
    let config = ElectionConfig::default();
    let call = |per_region: bool, loss: f64, seed: u64| {
        let world = two_regions(
            ("a", Link::new(80.0, 3.0, loss)),
            ("b", Link::new(100.0, 3.0, loss)),
        );
        let world = if per_region {
            one_relay_per_region(world)
        } else {
            world
        };
        let mut sim = Simulation::new(world, config.clone(), seed);
        sim.talk();
        sim.run_until(Duration::from_secs(600));
        sim
    };
    // Ten minutes of a standby at one probe a second.
    let at_one_a_second = 600 + 5;
    for (layout, per_region) in [("one relay per region", true), ("one per transport", false)] {
        for seed in 0..6 {
            let clean = call(per_region, 0.0, seed);
            let lossy = call(per_region, 0.05, seed);
            eprintln!(
                "{layout}, seed {seed}: probes to the standby in 10 min: clean paths {}, \
                 both losing 5% each way {} ({} switches)",
                clean.standby_probes,
                lossy.standby_probes,
                lossy.switches()
            );
            assert!(
                clean.standby_probes <= at_one_a_second,
                "{layout}, seed {seed}: {} probes to a clean path's standby",
                clean.standby_probes
            );
            assert_eq!(
                lossy.switches(),
                0,
                "{layout}, seed {seed}: moved between regions losing alike"
            );
            // With one relay per transport the first standby shares the
            // serving path, and the other region, losing too, is no refuge
            // to replace it with: no faster probing there.
            assert!(
                !per_region || lossy.standby_probes > at_one_a_second + 100,
                "{layout}, seed {seed}: the lossy serving path's standby was not probed faster ({})",
                lossy.standby_probes
            );
            assert!(
                lossy.standby_probes <= at_one_a_second + config.loss_evidence_probes as u64,
                "{layout}, seed {seed}: {} probes to the standby, over the budget",
                lossy.standby_probes
            );
        }
    }
}

/// Issue #15, defect 2: the WebTransport preference chooses a transport
/// inside the leading region, never another region.
#[test]
fn the_webtransport_preference_never_crosses_regions() {
    let mut blocked = SimCandidate::new("near", Wt, Link::new(40.0, 1.0, 0.0));
    blocked.unreachable = true;
    let world = vec![
        SimCandidate::new("near", Ws, Link::new(40.0, 1.0, 0.0)),
        blocked,
        SimCandidate::new("other", Ws, Link::new(44.0, 1.0, 0.0)),
        SimCandidate::new("other", Wt, Link::new(43.0, 1.0, 0.0)),
    ];
    for seed in 0..100 {
        let mut sim = Simulation::new(world.clone(), ElectionConfig::default(), seed);
        sim.run_until(Duration::from_secs(6));
        let (_, decision) = sim.initial().expect("an initial decision");
        assert_eq!(
            decision.winner, 0,
            "seed {seed}: {} (other/wt is within the WebTransport margin of near/ws, on another path)",
            decision.reason
        );
    }
}

/// Issue #15, item 4: a client 12 ms from its best region and 180 ms from the
/// other decides within the physical limit, 4 × RTT_best + one probe
/// interval (≈ 250 ms), without losing accuracy.
#[test]
fn a_clear_winner_is_decided_within_the_physical_limit() {
    let world = two_regions(
        ("near", Link::new(12.0, 1.0, 0.0)),
        ("far", Link::new(180.0, 3.0, 0.0)),
    );
    let config = ElectionConfig::default();
    let limit = 4 * 12 + config.probe_interval.as_millis() as u64;
    let ours = initial_elections(&world, &config, SEEDS);
    let p95 = ours.decision_quantile_ms(0.95);
    eprintln!(
        "12 ms vs 180 ms: decision p50 {} ms, p95 {p95} ms (limit {limit} ms), accuracy {:.1}%",
        ours.decision_quantile_ms(0.5),
        ours.accuracy() * 100.0
    );
    assert!(p95 <= limit, "p95 {p95} ms against a limit of {limit} ms");
    assert_eq!(ours.accuracy(), 1.0);
}

/// An asymmetric path — 5 ms up and 80 ms down, a route that returns the
/// long way round — is elected like a symmetric path of the same round
/// trip: as fast and as right. Probes measure round trips, so the way the
/// 85 ms split must change nothing. Without loss the simulator draws the
/// same numbers for both, so this guards its split of a round trip into
/// legs (a WebSocket answer takes both) more than the election; the latency
/// lab's `asymmetric-route.json` is the evidence with real proxies.
/// (Against the physical limit, 4 × 85 ms + one probe interval =
/// 540 ms, both decide at ~1.04× median: see BENCHMARKS.md for the
/// connect-time bound this is the price of.)
#[test]
fn an_asymmetric_path_is_elected_like_a_symmetric_one_of_the_same_round_trip() {
    let far = ("far", Link::new(180.0, 3.0, 0.0));
    let config = ElectionConfig::default();
    let asymmetric = initial_elections(
        &two_regions(("near", Link::asymmetric(5.0, 80.0, 3.0, 0.0, 0.0)), far),
        &config,
        SEEDS,
    );
    let symmetric = initial_elections(
        &two_regions(("near", Link::new(85.0, 3.0, 0.0)), far),
        &config,
        SEEDS,
    );
    for q in [0.5, 0.95] {
        let (a, s) = (
            asymmetric.decision_quantile_ms(q),
            symmetric.decision_quantile_ms(q),
        );
        eprintln!("decision q{q}: 5 ms up + 80 ms down {a} ms, 85 ms symmetric {s} ms");
        assert!(
            a.abs_diff(s) * 20 <= s,
            "q{q}: {a} ms asymmetric against {s} ms symmetric"
        );
    }
    assert_eq!(asymmetric.accuracy(), 1.0);
}

/// Issue #15, item 5: a call on a rough path — 40 ms, 30 ms jitter, 5% loss
/// each way, the far region 200 ms further on the same kind of path — with
/// no fault never moves. The latency lab's call on such a path moved three
/// times in two minutes: to WebSocket because its retransmitted probes came
/// back (late, but counted as answered) while WebTransport's were lost, then
/// away from WebSocket when a retransmission stall outlasted three probes.
///
/// One move is allowed, off WebSocket: a call whose tournament, on this
/// jitter, picked the near region's WebSocket moves to its WebTransport,
/// whose datagrams no retransmission holds up — five of these twenty calls
/// (seeds 10, 11, 12, 14 and 16; the same seeds on the code before #15's
/// evidence probing): four by the switching rule, when TCP's stalls put
/// the WebSocket's bounds at 134–216 ms against 70–82 ms, and one (seed 12)
/// by a failover, when a segment lost again and again stalled the stream
/// for 2.7 s, past `stream_stall_limit` — the call did freeze. The region
/// never changes, nor does a call on WebTransport, and more such moves
/// fail the test.
#[test]
fn a_talking_call_on_a_rough_path_never_moves() {
    let world = two_regions(
        ("near", Link::new(40.0, 30.0, 0.05)),
        ("far", Link::new(240.0, 30.0, 0.05)),
    );
    const CALLS: u64 = 20;
    /// Calls that start on the WebSocket and move to the WebTransport.
    const OFF_WEBSOCKET: usize = 5;
    let mut moved = Vec::new();
    let mut off_websocket = Vec::new();
    for seed in 0..CALLS {
        let mut sim = Simulation::new(world.clone(), ElectionConfig::default(), seed);
        sim.talk();
        sim.run_until(Duration::from_secs(600));
        let served: Vec<&SimCandidate> = sim
            .decisions
            .iter()
            .map(|(_, d)| &sim.world[d.winner])
            .collect();
        // From the region's WebSocket to its WebTransport, never back.
        let to_the_regions_webtransport = served.windows(2).all(|w| {
            w[0].candidate.region == w[1].candidate.region && w[1].candidate.transport == Wt
        });
        if served.len() > 1 && to_the_regions_webtransport {
            off_websocket.push(seed);
        } else if served.len() > 1 {
            let (at, first_move) = &sim.decisions[1];
            moved.push(format!(
                "seed {seed}: {} switches; the first, at {at:?}: {:?} {}",
                sim.switches(),
                first_move.trigger,
                first_move.reason
            ));
        }
    }
    assert!(
        moved.is_empty(),
        "{} of {CALLS} ten-minute calls moved: {moved:#?}",
        moved.len()
    );
    assert!(
        off_websocket.len() <= OFF_WEBSOCKET,
        "{} calls moved off the WebSocket (seeds {off_websocket:?}), more than {OFF_WEBSOCKET}",
        off_websocket.len()
    );
}

/// A brief loss episode on the serving region sends the standby to another
/// region (no refuge shares the lossy path). Once the serving path has been
/// clean for the span of its recent probes (~13 s talking, and silent on
/// WebTransport while the standby is probed for evidence; ~51 s silent
/// otherwise — the limit below allows that), the suspicion ends, and the
/// next re-probe (every 30 s) brings the standby back to the serving
/// region, so a relay crash fails over nearby again: 31–32 s after the
/// loss ended talking, 30–34 s silent (this 6 s episode ends within the
/// evidence budget, so a silent call's relay was probed fast meanwhile).
/// When the suspicion looked at the whole decision's probes it lasted until
/// clean probes had diluted the episode's below 1%: the standby came back
/// 90–150 s after the loss ended while talking.
#[test]
fn the_standby_comes_back_to_the_serving_region_after_a_loss_episode_ends() {
    let config = ElectionConfig::default();
    let loss_ends = Duration::from_secs(16);
    for talking in [true, false] {
        // The recent log's span, and the re-probe that follows it.
        let probe_interval = if talking {
            config.talking_probe_interval
        } else {
            config.probe_interval
        };
        let limit = probe_interval * 256 + config.reprobe_interval + Duration::from_secs(2);
        for seed in 0..6u64 {
            let mut world = two_regions(
                ("near", Link::new(40.0, 2.0, 0.0)),
                ("far", Link::new(200.0, 3.0, 0.0)),
            );
            for c in &mut world[..2] {
                c.changes = vec![
                    (Duration::from_secs(10), Link::new(40.0, 2.0, 0.08)),
                    (loss_ends, Link::new(40.0, 2.0, 0.0)),
                ];
            }
            let mut sim = Simulation::new(world, config.clone(), seed);
            if talking {
                sim.talk();
            }
            let standby_region = |sim: &Simulation| {
                (0..4)
                    .find(|&id| sim.election.role(id) == Role::Standby)
                    .map(|id| if id < 2 { "near" } else { "far" })
            };
            let mut went_far_at = None;
            let mut back_at = None;
            for s in 1..=300 {
                let t = Duration::from_secs(s);
                sim.run_until(t);
                match standby_region(&sim) {
                    Some("far") if went_far_at.is_none() => went_far_at = Some(t),
                    Some("near") if went_far_at.is_some() && back_at.is_none() => back_at = Some(t),
                    Some("far") if back_at.is_some() => {
                        panic!("talking {talking}, seed {seed}: the standby left again at {t:?}")
                    }
                    _ => {}
                }
            }
            let went_far_at = went_far_at.unwrap_or_else(|| {
                panic!("talking {talking}, seed {seed}: the loss never sent the standby away")
            });
            let back_after = back_at.map(|at| at - loss_ends).unwrap_or_else(|| {
                panic!("talking {talking}, seed {seed}: the standby never came back")
            });
            eprintln!(
                "talking {talking}, seed {seed}: standby to the other region at {went_far_at:?}, \
                 back {back_after:?} after the loss ended (limit {limit:?})"
            );
            assert!(
                back_after <= limit,
                "talking {talking}, seed {seed}: back {back_after:?} after"
            );
            assert_eq!(
                sim.switches(),
                0,
                "talking {talking}, seed {seed}: the call moved"
            );
        }
    }
}
