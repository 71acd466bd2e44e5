//! Election benchmark in virtual time: for each scenario, decision time and
//! accuracy of rallypoint's rule against the reference design's fixed 3 s
//! tournament and against deciding on the first probe — same seeds, same run.

use rallypoint_client::election::ElectionConfig;
use rallypoint_client::sim::{
    InitialElections, Link, initial_elections, realistic_scenarios, two_regions,
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
    println!("(accuracy: share of picks whose true RTT is within 5% of the best candidate's)");
    println!();
    println!("| scenario | rule | decision p50 ms | decision p95 ms | accuracy |");
    println!("|---|---|---|---|---|");
    for (name, world) in &scenarios {
        eprintln!("[bench] {name}");
        for (rule, config) in &rules {
            let r: InitialElections = initial_elections(world, config, args.seeds);
            println!(
                "| {name} | {rule} | {} | {} | {:.1}% |",
                r.decision_quantile_ms(0.5),
                r.decision_quantile_ms(0.95),
                r.accuracy() * 100.0
            );
        }
    }
    Ok(())
}
