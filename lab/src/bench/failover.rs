//! Failover gap with real relays: a two-person call on the local stack, the
//! relay serving the talker is killed (or drained), and the listener's largest
//! gap in the talker's audio — last frame before to first frame after — is
//! recorded. Repeated over fresh calls; the relay is restarted between runs.
//!
//! Each added round trip (`--rtt-ms`) gets its own stack whose clients reach
//! the relays through the latency lab's delay proxies. Then, unless
//! `--rough-minutes 0`, a call with no fault on a rough path counts false
//! failovers: every relay switch there is one. `--slow-downlink-kbit` does
//! the same for a listener whose downlink is slower than (or about as fast
//! as) the talker's audio.

use std::collections::BTreeMap;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::call::{faulted_call, quiet_call};
use rallypoint_testkit::proxy::{AccessSpec, LineSpec, LinkSpec, Scenario};
use rallypoint_testkit::stack::{Stack, StackConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct FailoverBenchArgs {
    /// Calls per fault kind and round trip.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Round trips (ms) added between the clients and the nearest region,
    /// one measurement each; 0 is plain loopback. The other region is 200 ms
    /// further.
    #[arg(long, value_delimiter = ',', default_value = "0,40")]
    pub rtt_ms: Vec<u32>,
    /// Minutes of a call with no fault on a rough path (40 ms round trip,
    /// 30 ms jitter, 5% loss each way), where every relay switch is a false
    /// failover; 0 skips it.
    #[arg(long, default_value_t = 2.0)]
    pub rough_minutes: f64,
    /// Downlink rates (kbit/s, behind a 100 ms queue, one line shared by
    /// the paths to both regions: 40 ms round trip to us-east, 240 ms to
    /// singapore) of one call each with no fault, `--slow-minutes` long,
    /// counting relay switches. The talker's audio takes about 70 kbit/s on
    /// the wire. None by default.
    #[arg(long, value_delimiter = ',')]
    pub slow_downlink_kbit: Vec<u32>,
    #[arg(long, default_value_t = 1.0)]
    pub slow_minutes: f64,
    /// The slow downlink slows down this many seconds after the call's
    /// relays are up, and is as fast as its paths before: a line that
    /// slows mid-call, after the client measured its paths on an idle line.
    /// The call's figures (audio heard, gaps, latency) cover the whole
    /// call, the fast start included.
    #[arg(long, default_value_t = 0.0)]
    pub slow_after_s: f64,
}

/// The rough path's loss per direction and jitter.
const ROUGH_LOSS: f64 = 0.05;
const ROUGH_JITTER_MS: f64 = 30.0;
const ROUGH_RTT_MS: f64 = 40.0;
/// The slow downlink's queue, about a home router's buffer.
const SLOW_QUEUE_MS: f64 = 100.0;

pub async fn run(args: FailoverBenchArgs) -> anyhow::Result<()> {
    if args.runs == 0 {
        anyhow::bail!("--runs must be at least 1");
    }
    if !(0.0..=60.0).contains(&args.rough_minutes) {
        anyhow::bail!("--rough-minutes must be between 0 and 60");
    }
    if !(0.1..=60.0).contains(&args.slow_minutes) {
        anyhow::bail!("--slow-minutes must be between 0.1 and 60");
    }
    if args.slow_downlink_kbit.contains(&0) {
        anyhow::bail!("--slow-downlink-kbit rates must be at least 1 kbit/s");
    }
    // The line slows within the call, which starts a few seconds after the
    // stack is up.
    if !(0.0..=args.slow_minutes * 60.0).contains(&args.slow_after_s) {
        anyhow::bail!(
            "--slow-after-s must be between 0 and the call's length (--slow-minutes × 60 s)"
        );
    }
    if args.slow_after_s > 0.0 && args.slow_downlink_kbit.is_empty() {
        anyhow::bail!("--slow-after-s slows the line of --slow-downlink-kbit: give its rates too");
    }
    println!(
        "failover gap: largest gap in the talker's 20 ms audio at the listener, {} calls per fault",
        args.runs
    );
    println!();
    println!("| added RTT | fault | p50 ms | p95 ms | max ms | calls |");
    println!("|---|---|---|---|---|---|");
    for &rtt in &args.rtt_ms {
        let scenarios = match rtt {
            0 => Vec::new(),
            rtt => vec![location(f64::from(rtt), 0.0, 0.0)],
        };
        let dir = tempfile::tempdir()?;
        let mut stack = start(dir.path(), scenarios).await?;
        for (name, signal) in [
            ("relay killed (SIGKILL)", Signal::SIGKILL),
            ("relay drained (SIGTERM)", Signal::SIGTERM),
        ] {
            let gaps = gaps(&mut stack, rtt, name, signal, args.runs).await?;
            let q = |p: f64| super::quantile(&gaps, p);
            println!(
                "| {rtt} ms | {name} | {:.0} | {:.0} | {:.0} | {} |",
                q(0.5),
                q(0.95),
                q(1.0),
                gaps.len()
            );
        }
        stack.stop().await;
    }
    if args.rough_minutes > 0.0 {
        rough_path(args.rough_minutes).await?;
    }
    for &kbit in &args.slow_downlink_kbit {
        slow_downlink(kbit, args.slow_minutes, args.slow_after_s).await?;
    }
    Ok(())
}

/// The failover gaps of `runs` calls in which `signal` hits the talker's
/// relay, sorted.
async fn gaps(
    stack: &mut Stack,
    rtt: u32,
    name: &str,
    signal: Signal,
    runs: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut gaps = Vec::new();
    for run in 0..runs {
        let room = format!("bench-{rtt}-{}-{run}", signal as i32);
        let call = faulted_call(
            stack,
            &room,
            signal,
            Duration::from_secs(4),
            Duration::from_secs(4),
        )
        .await?;
        eprintln!(
            "[bench] {rtt} ms, {name} #{run}: {} -> gap {:.0} ms",
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
    Ok(gaps)
}

/// One long call with no fault on the rough path: every switch is false.
async fn rough_path(minutes: f64) -> anyhow::Result<()> {
    let scenario = location(ROUGH_RTT_MS, ROUGH_JITTER_MS, ROUGH_LOSS);
    let path = format!(
        "a path of {ROUGH_RTT_MS} ms RTT, {ROUGH_JITTER_MS} ms jitter and {:.0}% loss each way",
        ROUGH_LOSS * 100.0
    );
    call_without_fault(vec![scenario], &path, minutes).await
}

/// One call with no fault for a listener behind a downlink of `kbit`
/// kbit/s; the talker sends audio only, from a location of her own on the
/// same paths without the slow line. The downlink is the listener's access
/// line, which his paths to both regions cross: the standby's probe answers
/// wait behind the serving relay's media, as at home.
async fn slow_downlink(kbit: u32, minutes: f64, after_s: f64) -> anyhow::Result<()> {
    let links = || {
        [
            ("us-east".to_owned(), LinkSpec::new(ROUGH_RTT_MS, 0.0, 0.0)),
            (
                "singapore".to_owned(),
                LinkSpec::new(ROUGH_RTT_MS + 200.0, 0.0, 0.0),
            ),
        ]
        .into()
    };
    let listener = Scenario {
        name: format!("{kbit} kbit/s downlink"),
        access: Some(AccessSpec {
            up: None,
            down: Some(LineSpec {
                rate_kbit: f64::from(kbit),
                queue_ms: Some(SLOW_QUEUE_MS),
                after_s: (after_s > 0.0).then_some(after_s),
            }),
        }),
        links: links(),
    };
    let talker = Scenario {
        name: "the talker's line".into(),
        access: None,
        links: links(),
    };
    let from = if after_s > 0.0 {
        format!(" from {after_s} s on")
    } else {
        String::new()
    };
    let path = format!(
        "a {kbit} kbit/s downlink{from} behind a {SLOW_QUEUE_MS} ms queue, the listener's line to \
         both regions ({ROUGH_RTT_MS} ms RTT to us-east, {} ms to singapore)",
        ROUGH_RTT_MS + 200.0
    );
    call_without_fault(vec![listener, talker], &path, minutes).await
}

/// A call with no fault through `scenario`: every switch is false.
/// The listener calls from the first of `scenarios`, the talker from the
/// second if there is one (see `crate::call`).
async fn call_without_fault(
    scenarios: Vec<Scenario>,
    path: &str,
    minutes: f64,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let stack = start(dir.path(), scenarios).await?;
    let duration = Duration::from_secs_f64(minutes * 60.0);
    eprintln!("[bench] a {minutes} min call with no fault on {path}");
    let call = quiet_call(&stack, "bench-quiet", Duration::from_secs(5), duration).await;
    stack.stop().await;
    let call = call?;
    let mut by_trigger: BTreeMap<String, usize> = BTreeMap::new();
    for (who, trigger, relay) in &call.moves {
        eprintln!("[bench] false failover: {who} moved to {relay} ({trigger:?})");
        *by_trigger.entry(format!("{trigger:?}")).or_default() += 1;
    }
    let expected = duration.as_secs_f64() / 0.020;
    let triggers = if by_trigger.is_empty() {
        String::new()
    } else {
        format!(" (by trigger: {by_trigger:?})")
    };
    println!();
    println!(
        "false failovers: {} in a {minutes} min call, both participants counted, on {path}\
         {triggers}; the listener got {} of the talker's ~{expected:.0} audio frames ({:.1}%)",
        call.moves.len(),
        call.frames,
        call.frames as f64 / expected * 100.0
    );
    if let Some(heard) = &call.heard {
        println!(
            "  the talker's audio at the listener: longest gap {:.0} ms (from {:.1} s), latency \
             p50 {:.0} ms, p99 {:.0} ms",
            heard.max_gap_ms,
            heard.max_gap_at_ms.0 / 1000.0,
            heard.latency_p50_ms,
            heard.latency_p99_ms
        );
    }
    Ok(())
}

/// A client location with `rtt_ms` to us-east and 200 ms more to
/// singapore, both with the same jitter and loss.
fn location(rtt_ms: f64, jitter_ms: f64, loss: f64) -> Scenario {
    Scenario {
        name: format!("{rtt_ms} ms from us-east"),
        access: None,
        links: [
            ("us-east".to_owned(), LinkSpec::new(rtt_ms, jitter_ms, loss)),
            (
                "singapore".to_owned(),
                LinkSpec::new(rtt_ms + 200.0, jitter_ms, loss),
            ),
        ]
        .into(),
    }
}

async fn start(dir: &std::path::Path, scenarios: Vec<Scenario>) -> anyhow::Result<Stack> {
    Stack::start(StackConfig {
        dir: dir.to_path_buf(),
        http: "127.0.0.1:0".parse()?,
        jwt_secret: None,
        dev_tokens: false,
        relay_args: vec!["--drain-grace".into(), "3s".into()],
        scenarios,
        telemetry: false,
        collector_args: Vec::new(),
        stream_args: Vec::new(),
    })
    .await
}
