//! Handshakes through a rough path: how many connections to a relay complete
//! — the transport's handshake, then Hello and Welcome — when the path
//! between client and relay delays, reorders and loses packets, and how the
//! others fail, by reason.
//!
//! Real relays and the latency lab's delay proxies; each attempt is a fresh
//! connection from the native client. A path that loses packets makes some
//! handshakes slow (retransmission timeouts), never wrong: a failure other
//! than a timeout is a defect to chase. This is how wtransport's
//! control-stream bug was found (`vendor/wtransport/PATCHED.md`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rallypoint_client::{Candidate, TransportKind};
use rallypoint_client_native::connection::ConnectError;
use rallypoint_client_native::{Peer, PeerError, identity};
use rallypoint_service::parse_duration;
use rallypoint_testkit::proxy::{LinkSpec, Scenario};
use rallypoint_testkit::stack::{Stack, StackConfig};
use tokio::task::JoinSet;

#[derive(Debug, Clone, clap::Args)]
pub struct HandshakesBenchArgs {
    /// Handshakes per transport, spread over both regions' relays.
    #[arg(long, default_value_t = 1000)]
    pub attempts: usize,
    /// Handshakes in progress at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Round trip the delay proxies add (ms).
    #[arg(long, default_value_t = 40.0)]
    pub rtt_ms: f64,
    /// Standard deviation of that round trip (ms); independent per packet,
    /// so packets overtake each other.
    #[arg(long, default_value_t = 60.0)]
    pub jitter_ms: f64,
    /// Packet loss, each direction (0..1).
    #[arg(long, default_value_t = 0.10)]
    pub loss: f64,
    /// How long one attempt may take, connection and Welcome together.
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    pub timeout: Duration,
}

pub async fn run(args: HandshakesBenchArgs) -> anyhow::Result<()> {
    if args.attempts == 0 || args.concurrency == 0 {
        anyhow::bail!("--attempts and --concurrency must be at least 1");
    }
    let link = LinkSpec::new(args.rtt_ms, args.jitter_ms, args.loss);
    link.validate()?;
    let scenario = Scenario {
        name: "rough path".into(),
        access: None,
        links: [("us-east".to_owned(), link), ("singapore".to_owned(), link)].into(),
    };
    let dir = tempfile::tempdir()?;
    let stack = Stack::start(StackConfig {
        dir: dir.path().to_path_buf(),
        http: "127.0.0.1:0".parse()?,
        jwt_secret: None,
        dev_tokens: false,
        relay_args: Vec::new(),
        scenarios: vec![scenario],
        telemetry: false,
        collector_args: Vec::new(),
        stream_args: Vec::new(),
    })
    .await?;
    println!(
        "handshakes (transport, Hello, Welcome) through a path of {} ms RTT, {} ms jitter and \
         {:.0}% loss each way; {} per transport, {} at once, {:?} each at most",
        args.rtt_ms,
        args.jitter_ms,
        args.loss * 100.0,
        args.attempts,
        args.concurrency,
        args.timeout
    );
    let result = measure_both(&stack, &args).await;
    stack.stop().await;
    result
}

async fn measure_both(stack: &Stack, args: &HandshakesBenchArgs) -> anyhow::Result<()> {
    for transport in [TransportKind::WebSocket, TransportKind::WebTransport] {
        let candidates: Vec<Candidate> = stack.locations[0]
            .candidates
            .iter()
            .filter(|c| c.transport == transport)
            .cloned()
            .collect();
        if candidates.is_empty() {
            anyhow::bail!("the stack has no {transport:?} relay");
        }
        let tally = attempts(stack, &candidates, args).await;
        print_tally(transport, &tally, args.attempts);
    }
    Ok(())
}

/// How the attempts went: outcomes by kind, and the successful ones' times.
#[derive(Debug, Default)]
struct Tally {
    outcomes: BTreeMap<String, usize>,
    welcomed_ms: Vec<f64>,
}

async fn attempts(stack: &Stack, candidates: &[Candidate], args: &HandshakesBenchArgs) -> Tally {
    let mut tally = Tally::default();
    let mut running = JoinSet::new();
    let (mut started, mut done) = (0, 0);
    while done < args.attempts {
        while started < args.attempts && running.len() < args.concurrency {
            let candidate = candidates[started % candidates.len()].clone();
            let token = stack.issuer.mint(
                "lobby",
                &format!("h{started}"),
                "Prober",
                Duration::from_secs(300),
            );
            running.spawn(attempt(candidate, token, args.timeout));
            started += 1;
        }
        let Some(finished) = running.join_next().await else {
            break;
        };
        done += 1;
        match finished {
            Ok(Ok(took)) => {
                *tally.outcomes.entry("welcomed".into()).or_default() += 1;
                tally.welcomed_ms.push(took.as_secs_f64() * 1000.0);
            }
            Ok(Err(outcome)) => *tally.outcomes.entry(outcome).or_default() += 1,
            Err(e) => {
                *tally
                    .outcomes
                    .entry(format!("attempt panicked: {e}"))
                    .or_default() += 1
            }
        }
        if done % (args.attempts / 10).max(1) == 0 {
            eprintln!("[bench] {done}/{} handshakes", args.attempts);
        }
    }
    tally.welcomed_ms.sort_by(f64::total_cmp);
    tally
}

/// One connection, Hello and Welcome ([`Peer::connect`]): how long it took,
/// or what went wrong (without the candidate's address, so equal failures
/// count together) and the second it came in — a relay gives up on a
/// handshake at its own deadline (5 s by default).
async fn attempt(
    candidate: Candidate,
    token: String,
    timeout: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    match Peer::connect(&candidate, &identity(token), timeout).await {
        Ok(peer) => {
            peer.conn.close();
            Ok(peer.connect_time)
        }
        Err(e) => {
            let reason = match e {
                PeerError::Connect(ConnectError::Timeout { .. }) => "connection timed out".into(),
                PeerError::Connect(ConnectError::Failed { reason, .. }) => reason,
                PeerError::Refused { code, message, .. } => {
                    format!("refused with {code:?}: {message}")
                }
                PeerError::Closed { .. } => "closed before Welcome".into(),
                PeerError::Timeout { .. } => "no Welcome in time".into(),
            };
            Err(format!(
                "{reason} (after {} s)",
                started.elapsed().as_secs()
            ))
        }
    }
}

fn print_tally(transport: TransportKind, tally: &Tally, attempts: usize) {
    println!();
    println!("{transport:?}:");
    println!("| outcome | handshakes | share |");
    println!("|---|---|---|");
    for (outcome, count) in &tally.outcomes {
        println!(
            "| {outcome} | {count} | {:.1}% |",
            *count as f64 / attempts as f64 * 100.0
        );
    }
    let q = |p: f64| super::quantile(&tally.welcomed_ms, p);
    if !tally.welcomed_ms.is_empty() {
        println!(
            "time to Welcome: p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            q(0.5),
            q(0.95),
            q(0.99),
            q(1.0)
        );
    }
}
