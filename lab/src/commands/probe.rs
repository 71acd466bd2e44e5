//! `rallypoint probe`: run one election against a deployment and show it.
//!
//! While it runs, a live table of every candidate (stderr); then the result
//! and why. `--json` prints the election report as one JSON object on stdout
//! (format in the README). The report is also delivered to the winner's relay
//! as telemetry, like any client's.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use rallypoint_client::election::{CandidateView, ElectionConfig, Role};
use rallypoint_client::report_json::report_json;
use rallypoint_client::session::Update;
use rallypoint_client_native::runner::{self, Command, Output, RunnerConfig};
use rallypoint_service::parse_duration;

use super::outcome::{Failures, refusal_that_ends};
use super::source::Source;

#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub source: Source,

    /// Print the election report as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    /// Room the token is for (probing never joins it).
    #[arg(long, default_value = "lobby")]
    pub room: String,

    /// Probe interval during the tournament.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub interval: Duration,

    /// Latest decision time.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub deadline: Duration,

    /// Give up on a candidate's connection after this long.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
}

pub async fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let (candidates, token) = args.source.resolve(&args.room, "rallypoint probe").await?;
    let config = RunnerConfig {
        election: ElectionConfig {
            probe_interval: args.interval,
            deadline: args.deadline,
            ..Default::default()
        },
        connect_timeout: args.connect_timeout,
        room: None,
        identity: rallypoint_client_native::identity(token),
    };
    let live = std::io::stderr().is_terminal();
    let (commands, mut outputs) = runner::spawn(candidates, config);
    let mut drawn_lines = 0;
    let mut decided = None;
    let mut failures = Failures::default();
    while let Some(output) = outputs.recv().await {
        match output {
            Output::Session(Update::Snapshot(views)) if live && decided.is_none() => {
                drawn_lines = redraw(&views, drawn_lines);
            }
            Output::Session(Update::Snapshot(_)) => {}
            Output::Session(Update::CandidateFailed { candidate, reason }) => {
                if !live {
                    eprintln!("{}: failed: {reason}", candidate.label());
                }
                failures.record(&candidate, &reason);
            }
            Output::Session(Update::Refused {
                candidate,
                code,
                message,
            }) => {
                if !live {
                    eprintln!("{}: refused: {message}", candidate.label());
                }
                if let Some(error) = refusal_that_ends(&candidate, code, &message) {
                    let _ = commands.send(Command::Stop);
                    return Err(error);
                }
                failures.record(&candidate, &format!("refused: {message}"));
            }
            // One election: a client in a call would try again later.
            Output::Session(Update::NoRelayReachable { .. }) => {
                let _ = commands.send(Command::Stop);
                return Err(failures.none_reachable());
            }
            Output::Session(Update::Decided {
                decision,
                candidate,
                report,
            }) => {
                eprintln!();
                eprintln!(
                    "elected {} ({}) — {}",
                    candidate.label(),
                    candidate.relay_id,
                    decision.reason
                );
                print_table(&report);
                decided = Some(report);
                break;
            }
            // Probing joins no room: nothing is ever prepared.
            Output::Room(_)
            | Output::Session(Update::Reports { .. } | Update::Preparing { .. }) => {}
        }
    }
    let Some(report) = decided else {
        anyhow::bail!("the election ended without a decision");
    };
    // Give the report a moment to reach the relay's intake.
    let ack = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(output) = outputs.recv().await {
            if let Output::Session(Update::Reports { ack: Some(ack), .. }) = output {
                return Some((ack.accepted, ack.reason));
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    match ack {
        Some((true, _)) => eprintln!("report delivered to the relay's telemetry intake"),
        Some((false, reason)) => eprintln!("report not stored: {reason}"),
        None => eprintln!("report not acknowledged within 3 s"),
    }
    let _ = commands.send(Command::Stop);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report_json(&report))?);
    }
    Ok(())
}

fn state(view: &CandidateView) -> String {
    if let Some(error) = &view.error {
        return format!("failed: {}", shorten(error, 40));
    }
    match view.role {
        Role::Serving => "WINNER".into(),
        Role::Standby => "standby".into(),
        _ if view.connecting => "connecting".into(),
        _ if view.connected => "measuring".into(),
        _ => "closed".into(),
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

fn redraw(views: &[CandidateView], previous_lines: usize) -> usize {
    let mut out = std::io::stderr().lock();
    if previous_lines > 0 {
        let _ = write!(out, "\x1b[{previous_lines}A");
    }
    let _ = writeln!(
        out,
        "\x1b[2K{:<22} {:>7} {:>5} {:>10} {:>10} {:>9}  state",
        "candidate", "samples", "lost", "median ms", "p95 ms", "jitter"
    );
    for view in views {
        let s = view.summary;
        let ms = |us: u64| {
            if s.samples == 0 {
                "-".to_owned()
            } else {
                format!("{:.1}", us as f64 / 1000.0)
            }
        };
        let _ = writeln!(
            out,
            "\x1b[2K{:<22} {:>7} {:>5} {:>10} {:>10} {:>9}  {}",
            view.candidate.label(),
            s.samples,
            s.lost,
            ms(s.median),
            ms(s.p95),
            ms(s.jitter),
            state(view)
        );
    }
    views.len() + 1
}

fn print_table(report: &rallypoint_protocol::v1::ElectionReport) {
    use rallypoint_protocol::names::{outcome, transport};
    eprintln!(
        "{:<12} {:<18} {:<13} {:>8} {:>7} {:>5} {:>10} {:>9}  outcome",
        "region", "relay", "transport", "connect", "samples", "lost", "median ms", "p95 ms"
    );
    for c in &report.candidates {
        let ms = |us: u32| {
            if c.samples == 0 {
                "-".into()
            } else {
                format!("{:.1}", us as f64 / 1000.0)
            }
        };
        let outcome = if c.error.is_empty() {
            outcome(c.outcome).to_owned()
        } else {
            format!("{} ({})", outcome(c.outcome), shorten(&c.error, 50))
        };
        eprintln!(
            "{:<12} {:<18} {:<13} {:>6}ms {:>7} {:>5} {:>10} {:>9}  {}",
            c.region,
            c.relay_id,
            transport(c.transport),
            c.connect_ms,
            c.samples,
            c.lost,
            ms(c.rtt_median_us),
            ms(c.rtt_p95_us),
            outcome
        );
    }
    eprintln!(
        "decided in {} ms ({}), trigger {}",
        report.decision_ms,
        rallypoint_protocol::names::rule(report.rule),
        rallypoint_protocol::names::trigger(report.trigger)
    );
}
