//! Failover gap with real relays: a two-person call on the local stack, the
//! relay serving the talker is killed (or drained), and the listener's largest
//! gap in the talker's audio — last frame before to first frame after — is
//! recorded. Repeated over fresh calls; the relay is restarted between runs.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::call::faulted_call;
use rallypoint_testkit::stack::{Stack, StackConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct FailoverBenchArgs {
    /// Calls per fault kind.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
}

pub async fn run(args: FailoverBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut stack = Stack::start(StackConfig {
        dir: dir.path().to_path_buf(),
        http: "127.0.0.1:0".parse()?,
        jwt_secret: None,
        dev_tokens: false,
        relay_args: vec!["--drain-grace".into(), "3s".into()],
        scenarios: Vec::new(),
        telemetry: false,
        collector_args: Vec::new(),
        stream_args: Vec::new(),
    })
    .await?;
    println!(
        "failover gap: largest gap in the talker's 20 ms audio at the listener, {} calls per fault",
        args.runs
    );
    println!();
    println!("| fault | p50 ms | p95 ms | max ms | calls |");
    println!("|---|---|---|---|---|");
    for (name, signal) in [
        ("relay killed (SIGKILL)", Signal::SIGKILL),
        ("relay drained (SIGTERM)", Signal::SIGTERM),
    ] {
        let mut gaps = Vec::new();
        for run in 0..args.runs {
            let room = format!("bench-{}-{run}", signal as i32);
            let call = faulted_call(
                &stack,
                &room,
                signal,
                Duration::from_secs(4),
                Duration::from_secs(4),
            )
            .await?;
            eprintln!(
                "[bench] {name} #{run}: {} -> gap {:.0} ms",
                call.victim, call.gap_ms
            );
            gaps.push(call.gap_ms);
            let relay = stack
                .relays
                .iter_mut()
                .find(|r| r.spec.relay_id == call.victim)
                .expect("victim is one of the stack's relays");
            relay.restart().await?;
        }
        gaps.sort_by(f64::total_cmp);
        let q = |p: f64| gaps[((gaps.len() - 1) as f64 * p).round() as usize];
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {} |",
            q(0.5),
            q(0.95),
            q(1.0),
            gaps.len()
        );
    }
    stack.stop().await;
    Ok(())
}
