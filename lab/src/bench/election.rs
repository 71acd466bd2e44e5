//! Election benchmark in virtual time: for each scenario, decision time (and
//! its ratio to the physical limit, 4 × the best RTT + one probe interval),
//! accuracy and loss-aware accuracy of rallypoint's rule against the
//! reference design's fixed 3 s tournament and against deciding on the first
//! probe — same seeds, same run.

use rallypoint_client::TransportKind::{WebSocket, WebTransport};
use rallypoint_client::election::ElectionConfig;
use rallypoint_client::sim::{
    InitialElections, Link, SimCandidate, initial_elections, realistic_scenarios, two_regions,
};

#[derive(Debug, Clone, clap::Args)]
pub struct ElectionBenchArgs {
    /// Simulated clients per scenario and rule.
    #[arg(long, default_value_t = 1000)]
    pub seeds: u64,
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
    Ok(())
}
