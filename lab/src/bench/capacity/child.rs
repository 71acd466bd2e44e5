//! One `rallypoint load` child process per level: started from this very
//! executable, its window marks read off its stderr to sample CPU time of the
//! processes that matter at the same moments, its summary read off stdout.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rallypoint_testkit::usage;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use crate::load::{Summary, WINDOW_CLOSE_MARK, WINDOW_OPEN_MARK};

/// The processes whose CPU a level reads.
#[derive(Debug, Clone)]
pub struct Watched {
    /// Every relay of the rig (one unless rooms are spread over several).
    pub relays: Vec<u32>,
    pub nats: u32,
}

impl Watched {
    /// The relays' resident memory together, if every one could be read.
    pub fn relays_rss(&self) -> Option<u64> {
        self.relays.iter().map(|&pid| usage::rss_bytes(pid)).sum()
    }
}

/// CPU seconds used so far by each watched process, at one moment.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    /// One per relay, in `Watched::relays`' order.
    relays: Vec<f64>,
    nats: f64,
    load: f64,
    machine: f64,
}

impl Sample {
    fn take(watched: &Watched, load: u32) -> Self {
        let cpu = |pid| usage::cpu_seconds(pid).unwrap_or(f64::NAN);
        Sample {
            at: Instant::now(),
            relays: watched.relays.iter().map(|&pid| cpu(pid)).collect(),
            nats: cpu(watched.nats),
            load: cpu(load),
            machine: usage::machine_busy_seconds().unwrap_or(f64::NAN),
        }
    }
}

/// Cores each process used during the window (CPU seconds per second).
#[derive(Debug, Clone, Copy)]
pub struct Cores {
    /// All relays together.
    pub relay: f64,
    /// The one relay that used the most (the same as `relay` for one relay):
    /// a relay near a full core is a knee however many there are.
    pub busiest_relay: f64,
    pub nats: f64,
    pub load: f64,
    /// Everything else on the machine (another build, say): it competes
    /// with the relay for the same cores and disturbs latency.
    pub others: f64,
}

/// What one child run measured.
pub struct ChildRun {
    pub summary: Summary,
    pub cores: Cores,
    /// The relays' resident memory together when the window closed.
    pub relay_rss: Option<u64>,
}

/// Runs `rallypoint load <args>` with `envs`, waiting at most `deadline`.
pub async fn run(
    args: &[String],
    envs: &[(&str, &str)],
    watched: &Watched,
    deadline: Duration,
) -> anyhow::Result<ChildRun> {
    let exe = std::env::current_exe().context("cannot find this executable to run `load`")?;
    let mut child = Command::new(&exe)
        .arg("load")
        .args(args)
        // Progress lines only, not every connection's log line.
        .env("RUST_LOG", "warn")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {} load", exe.display()))?;
    let pid = child.id().context("the load process exited at once")?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let mut stdout = child.stdout.take().context("no stdout pipe")?;
    let watch = async {
        let mut lines = BufReader::new(stderr).lines();
        let (mut open, mut close, mut rss) = (None, None, None);
        let mut tail = Vec::new();
        while let Some(line) = lines.next_line().await? {
            if line == WINDOW_OPEN_MARK {
                open = Some(Sample::take(watched, pid));
            } else if line == WINDOW_CLOSE_MARK {
                close = Some(Sample::take(watched, pid));
                rss = watched.relays_rss();
            } else {
                eprintln!("    {line}");
                tail.push(line);
            }
        }
        let mut out = String::new();
        stdout.read_to_string(&mut out).await?;
        let status = child.wait().await?;
        anyhow::Ok((status, open, close, rss, out, tail))
    };
    let (status, open, close, relay_rss, out, tail) = tokio::time::timeout(deadline, watch)
        .await
        .with_context(|| format!("the load process did not finish within {deadline:?}"))??;
    if !status.success() {
        anyhow::bail!(
            "the load process failed ({status}): {}",
            tail.last().map(String::as_str).unwrap_or("no output")
        );
    }
    let (Some(open), Some(close)) = (open, close) else {
        anyhow::bail!("the load process never marked its measured window");
    };
    let summary: Summary = serde_json::from_str(out.trim())
        .with_context(|| format!("cannot read the load summary from {out:?}"))?;
    let seconds = close.at.duration_since(open.at).as_secs_f64().max(1e-3);
    let per_second = |used: f64| used / seconds;
    let relays: Vec<f64> = close
        .relays
        .iter()
        .zip(&open.relays)
        .map(|(close, open)| per_second(close - open))
        .collect();
    let relay: f64 = relays.iter().sum();
    // A relay whose CPU could not be read (NaN) leaves the busiest unknown,
    // as it leaves the sum, rather than being skipped by `f64::max`.
    let busiest_relay = if relays.iter().any(|cores| cores.is_nan()) {
        f64::NAN
    } else {
        relays.iter().copied().fold(0.0, f64::max)
    };
    let (nats, load) = (
        per_second(close.nats - open.nats),
        per_second(close.load - open.load),
    );
    let machine = per_second(close.machine - open.machine);
    Ok(ChildRun {
        summary,
        cores: Cores {
            relay,
            busiest_relay,
            nats,
            load,
            others: (machine - relay - nats - load).max(0.0),
        },
        relay_rss,
    })
}
