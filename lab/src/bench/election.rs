//! Election benchmark in virtual time: for each scenario, decision time (and
//! its ratio to the physical limit, 4 × the best RTT + one probe interval),
//! accuracy and loss-aware accuracy of rallypoint's rule against the
//! reference design's fixed 3 s tournament and against deciding on the first
//! probe — same seeds, same run. Then, for the lossy scenarios, how long a
//! call takes to leave the lossy region once serving, against the rule
//! gathering no extra evidence (`loss_evidence_probes` 0).

use rallypoint_client::TransportKind::{WebSocket, WebTransport};
use rallypoint_client::election::ElectionConfig;
use std::time::Duration;

use rallypoint_client::sim::{
    InitialElections, Link, SimCandidate, Simulation, initial_elections, lossy_near_regions,
    one_relay_per_region, realistic_scenarios, two_regions,
};

#[derive(Debug, Clone, clap::Args)]
pub struct ElectionBenchArgs {
    /// Simulated clients per scenario and rule.
    #[arg(long, default_value_t = 1000)]
    pub seeds: u64,
    /// Simulated calls per lossy scenario and variant in the table of how
    /// long a call takes to leave a lossy region (each runs 4 virtual
    /// minutes).
    #[arg(long, default_value_t = 100)]
    pub lossy_seeds: u64,
}

pub fn run(args: ElectionBenchArgs) -> anyhow::Result<()> {
    let mut scenarios: Vec<(String, _)> = realistic_scenarios()
        .into_iter()
        .map(|(name, world)| (name.to_owned(), world))
        .collect();
    // Issue #15's own locations: a clear winner (12 ms vs 180 ms), a lossy
    // near region against a clean one, an asymmetric near path (both ways'
    // delays, then only the downlink's loss), and a near region whose
    // WebTransport is blocked next to a far one within the WebTransport
    // margin.
    scenarios.push((
        "clear winner: 12 ms vs 180 ms".into(),
        two_regions(
            ("near", Link::new(12.0, 1.0, 0.0)),
            ("far", Link::new(180.0, 3.0, 0.0)),
        ),
    ));
    scenarios.push((
        "lossy near: 80 ms 5% loss vs 100 ms clean".into(),
        two_regions(
            ("near", Link::new(80.0, 3.0, 0.05)),
            ("far", Link::new(100.0, 3.0, 0.0)),
        ),
    ));
    scenarios.push((
        "asymmetric near: 5 ms up + 80 ms down vs 180 ms".into(),
        two_regions(
            ("near", Link::asymmetric(5.0, 80.0, 3.0, 0.0, 0.0)),
            ("far", Link::new(180.0, 3.0, 0.0)),
        ),
    ));
    scenarios.push((
        "lossy downlink near: 80 ms, 10% loss down vs 100 ms clean".into(),
        two_regions(
            ("near", Link::asymmetric(40.0, 40.0, 3.0, 0.0, 0.10)),
            ("far", Link::new(100.0, 3.0, 0.0)),
        ),
    ));
    let mut blocked = SimCandidate::new("near", WebTransport, Link::new(40.0, 1.0, 0.0));
    blocked.unreachable = true;
    scenarios.push((
        "UDP blocked near (40 ms) vs 43 ms far".into(),
        vec![
            SimCandidate::new("near", WebSocket, Link::new(40.0, 1.0, 0.0)),
            blocked,
            SimCandidate::new("far", WebSocket, Link::new(44.0, 1.0, 0.0)),
            SimCandidate::new("far", WebTransport, Link::new(43.0, 1.0, 0.0)),
        ],
    ));
    for gap in [0.02, 0.10, 0.50] {
        for jitter in [0.0, 10.0, 30.0] {
            for loss in [0.0, 0.05] {
                scenarios.push((
                    format!(
                        "grid: 80 ms vs +{:.0}%, jitter {jitter:.0} ms, loss {:.0}%",
                        gap * 100.0,
                        loss * 100.0
                    ),
                    two_regions(
                        ("a", Link::new(80.0, jitter, loss)),
                        ("b", Link::new(80.0 * (1.0 + gap), jitter, loss)),
                    ),
                ));
            }
        }
    }
    let rules = [
        ("rallypoint", ElectionConfig::default()),
        ("fixed 3 s", ElectionConfig::fixed_tournament()),
        ("first probe", ElectionConfig::first_probe()),
    ];
    println!(
        "election decision time and accuracy, {} simulated clients per scenario and rule",
        args.seeds
    );
    println!("(accuracy: share of picks whose true RTT is within 5% of the best candidate's;");
    println!(
        " loss-aware: share of picks whose round-trip loss is at most the least lossy one's + 1%;"
    );
    println!(
        " limit: 4 × the best RTT + one 200 ms probe interval, the earliest a decision can be sure)"
    );
    println!();
    println!(
        "| scenario | rule | decision p50 ms | decision p95 ms | p50 / limit | accuracy | loss-aware |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, world) in &scenarios {
        eprintln!("[bench] {name}");
        for (rule, config) in &rules {
            let r: InitialElections = initial_elections(world, config, args.seeds);
            println!(
                "| {name} | {rule} | {} | {} | {:.2} | {:.1}% | {:.1}% |",
                r.decision_quantile_ms(0.5),
                r.decision_quantile_ms(0.95),
                r.decision_to_limit(0.5),
                r.accuracy() * 100.0,
                r.loss_accuracy() * 100.0
            );
        }
    }
    leaving_a_lossy_region(args.lossy_seeds);
    Ok(())
}

/// How long calls stay on a lossy region that won the first pick: the
/// tournament ranks by RTT (see the rule's module doc), the switching rule
/// moves the call once the loss is beyond doubt. Two layouts: one relay per
/// region serving both transports (a deployment), and one relay per
/// transport (the local stack), where the first standby is the lossy
/// region's other relay, on the same path.
fn leaving_a_lossy_region(seeds: u64) {
    let ours = ElectionConfig::default();
    let before = ElectionConfig {
        loss_evidence_probes: 0,
        ..ours.clone()
    };
    let horizon = Duration::from_secs(240);
    println!();
    println!(
        "leaving a lossy region: seconds from the start until the call first serves through \
         the clean region, {seeds} calls per row (calls the tournament put there at once count 0; \
         \"before\": no evidence gathered — standbys probed once a second, re-probes every 30 s)"
    );
    println!();
    println!("| scenario | relays | call | rule | moved within 4 min | p50 s | p95 s | max s |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, world) in &lossy_near_regions() {
        eprintln!("[bench] leaving: {name}");
        for (layout, world) in [
            ("one per region", one_relay_per_region(world.clone())),
            ("one per transport", world.clone()),
        ] {
            for talking in [true, false] {
                for (variant, config) in [("rallypoint", &ours), ("before", &before)] {
                    let mut moved: Vec<f64> = Vec::new();
                    for seed in 0..seeds {
                        let mut sim = Simulation::new(world.clone(), config.clone(), seed);
                        if talking {
                            sim.talk();
                        }
                        sim.run_until(horizon);
                        moved.extend(sim.first_served(|c| c >= 2).map(|at| at.as_secs_f64()));
                    }
                    moved.sort_by(f64::total_cmp);
                    let at = |q: f64| {
                        moved
                            .get(((moved.len() as f64 * q).ceil() as usize).saturating_sub(1))
                            .map_or("-".to_owned(), |s| format!("{s:.1}"))
                    };
                    println!(
                        "| {name} | {layout} | {} | {variant} | {}/{seeds} | {} | {} | {} |",
                        if talking { "talking" } else { "silent" },
                        moved.len(),
                        at(0.5),
                        at(0.95),
                        at(1.0)
                    );
                }
            }
        }
    }
}
