//! Relay capacity at call rates (issue #17): how much call traffic one relay
//! core forwards. One nats-server and one relay process; for rising levels
//! of participants (rooms of a few, audio first, then with video) a
//! `rallypoint load` child process sends and receives at call rates through
//! the relay, then the same load straight over NATS (the ceiling). The
//! relay's and nats-server's CPU time are read from `/proc` at the load's
//! window marks, so forwarded packets per relay CPU-second is measured, not
//! inferred. The series stops at the knee: the relay near a full core, drops,
//! a latency jump, or the machine full (the load generator shares it).
//!
//! With `--relays 2` (or more) every room is spread over that many relays of
//! one NATS server, its participants alternating between them: each frame is
//! then also published once and forwarded by another relay, the cost of a
//! call whose members are on different relays (rooms on one relay keep their
//! media off NATS). Relay CPU is all relays' together.

mod child;
mod report;

use std::time::Duration;

use rallypoint_client::TransportKind;
use rallypoint_service::parse_duration;
use rallypoint_testkit::nats::NatsRole;

use super::Rig;
use super::relay::BenchTransport;
use child::Watched;
use report::Level;

#[derive(Debug, Clone, clap::Args)]
pub struct CapacityBenchArgs {
    /// Client transport through the relay.
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: BenchTransport,
    /// Participants per room.
    #[arg(long, default_value_t = 5)]
    pub room_size: usize,
    /// Relays every room is spread over (participants alternate between
    /// them); 1 keeps each room on one relay.
    #[arg(long, default_value_t = 1)]
    pub relays: usize,
    /// Participants at each audio-only level, rising (comma-separated; empty
    /// or `none`: no audio-only series).
    #[arg(long, default_value = "20,40,80,160,320,640,1280", value_parser = parse_levels)]
    pub audio_levels: Levels,
    /// Participants at each level with video, rising (comma-separated; empty
    /// or `none`: no video series).
    #[arg(long, default_value = "10,20,40,80,160", value_parser = parse_levels)]
    pub video_levels: Levels,
    /// Sending before each level's measured window.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Each level's measured window.
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    pub duration: Duration,
    /// NATS without TLS and NKey users (default: as deployed, with both).
    #[arg(long)]
    pub plain_nats: bool,
}

/// The participant counts of one series, rising; empty runs no series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Levels(pub Vec<usize>);

/// `20,40,80` → three levels; `` or `none` → no series.
fn parse_levels(text: &str) -> Result<Levels, String> {
    let text = text.trim();
    if text.is_empty() || text == "none" {
        return Ok(Levels(Vec::new()));
    }
    let levels = text
        .split(',')
        .map(|level| {
            level.trim().parse::<usize>().map_err(|e| {
                format!(
                    "{level:?} is not a participant count ({e}); give counts like 20,40,80, or none"
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if levels.contains(&0) {
        return Err("a level of 0 participants measures nothing; leave it out".into());
    }
    if !levels.is_sorted() {
        return Err(format!(
            "levels must rise (the series stops at its knee): {text}"
        ));
    }
    Ok(Levels(levels))
}

const JWT_SECRET: &str = "bench-capacity-secret";
/// Other processes using more than this during a window disturb it.
const DISTURBED_CORES: f64 = 0.25;
/// More relays than this only share the same few cores of the machine.
const MAX_RELAYS: usize = 4;

pub async fn run(args: CapacityBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.room_size >= 2, "--room-size must be at least 2");
    anyhow::ensure!(
        (1..=MAX_RELAYS).contains(&args.relays) && args.relays <= args.room_size,
        "--relays must be from 1 to {MAX_RELAYS} and at most --room-size ({}), so that every \
         relay serves part of every room",
        args.room_size
    );
    let transport = match args.transport {
        BenchTransport::Ws => TransportKind::WebSocket,
        BenchTransport::Wt => TransportKind::WebTransport,
    };
    let machine_cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let dir = tempfile::tempdir()?;
    eprintln!(
        "[bench] starting one NATS server and {} relay(s) ({transport:?})",
        args.relays
    );
    // The relay runs with its deployed limits: this measures a relay as
    // shipped, at call rates well inside every per-sender budget.
    let rig = Rig::start_relays(
        dir.path(),
        !args.plain_nats,
        transport,
        JWT_SECRET,
        Vec::new(),
        args.relays,
    )
    .await?;
    let result = measure(&args, &rig, transport, machine_cores).await;
    rig.stop().await;
    result
}

async fn measure(
    args: &CapacityBenchArgs,
    rig: &Rig,
    transport: TransportKind,
    machine_cores: f64,
) -> anyhow::Result<()> {
    let watched = Watched {
        relays: rig
            .relays
            .iter()
            .map(|relay| relay.pid().ok_or_else(|| anyhow::anyhow!("a relay exited")))
            .collect::<anyhow::Result<_>>()?,
        nats: rig.nats.servers()[0]
            .pid()
            .ok_or_else(|| anyhow::anyhow!("nats-server exited"))?,
    };
    let idle_rss = watched.relays_rss();
    let relay_urls: Vec<String> = rig
        .relays
        .iter()
        .map(|relay| {
            let candidate = relay.candidate(transport);
            match &candidate.cert_hash {
                Some(hash) => format!("{}#cert={hash}", candidate.url),
                None => candidate.url,
            }
        })
        .collect();
    let nats_args = rig.nats_access(NatsRole::Admin).cli_args();
    println!();
    let spread = if args.relays > 1 {
        format!(
            " spread over {} relays (relay cores are theirs together)",
            args.relays
        )
    } else {
        String::new()
    };
    println!(
        "relay capacity at call rates, {transport:?}, rooms of {}{spread}, NATS {}; audio 50 frames/s \
         of 120 B, video 30 fps of 2.4 kB with a 24 kB keyframe every 2 s; window {:?} after {:?} warm-up",
        args.room_size,
        if args.plain_nats {
            "plain"
        } else {
            "with TLS and NKeys"
        },
        args.duration,
        args.warmup
    );
    println!(
        "this machine has {machine_cores} cores, shared by the relay, nats-server and the load \
         generator: CPU per forwarded packet is the honest figure, not the totals"
    );
    for (video, Levels(levels)) in [(false, &args.audio_levels), (true, &args.video_levels)] {
        if levels.is_empty() {
            continue;
        }
        println!();
        println!("{}:", if video { "audio + video" } else { "audio only" });
        report::print_header();
        let mut first_p99 = None;
        let mut knee = None;
        let mut measured = Vec::new();
        for &participants in levels {
            let rooms = participants.div_ceil(args.room_size);
            let mut common = vec![
                "--rooms".to_owned(),
                rooms.to_string(),
                "--participants".to_owned(),
                args.room_size.to_string(),
                "--warmup".to_owned(),
                format!("{}ms", args.warmup.as_millis()),
                "--duration".to_owned(),
                format!("{}ms", args.duration.as_millis()),
            ];
            if video {
                common.push("--video".to_owned());
            }
            let deadline = args.warmup + args.duration + Duration::from_secs(90);
            eprintln!("[bench] {participants} participants through the relay");
            let mut relay_args = common.clone();
            for url in &relay_urls {
                relay_args.extend(["--relay".to_owned(), url.clone()]);
            }
            let mut relay_run = child::run(
                &relay_args,
                &[("RALLYPOINT_JWT_SECRET", JWT_SECRET)],
                &watched,
                deadline,
            )
            .await?;
            if args.relays > 1 {
                relay_run.summary.path = format!("{} x{}", relay_run.summary.path, args.relays);
            }
            eprintln!("[bench] {participants} participants straight over NATS");
            let mut baseline_args = common;
            baseline_args.push("--nats".to_owned());
            baseline_args.extend(nats_args.iter().cloned());
            let nats_run = child::run(&baseline_args, &[], &watched, deadline).await?;
            let level = Level {
                participants: rooms * args.room_size,
                relay: relay_run,
                nats: nats_run,
                idle_rss,
            };
            report::print_level(&level);
            let first = *first_p99.get_or_insert(level.relay.summary.latency_p99_ms);
            knee = report::knee(&level, first, machine_cores);
            measured.push(level);
            if knee.is_some() {
                break;
            }
        }
        summarize_series(&measured, knee.as_ref());
    }
    Ok(())
}

/// Added latency per level, the ceiling ratio, and the knee.
fn summarize_series(levels: &[Level], knee: Option<&report::Knee>) {
    println!();
    for level in levels {
        let (p50, p99) = report::added_latency(level);
        let r = &level.relay;
        let n = &level.nats;
        let relay_per_core = r.summary.forwarded_per_s / r.cores.relay;
        let nats_per_core = n.summary.forwarded_per_s / n.cores.nats;
        println!(
            "{} participants: added latency by the relay p50 {p50:+.2} ms, p99 {p99:+.2} ms \
             (target p99 <= 5 ms); forwarded per relay core / per nats-server core {:.2}; \
             {:.0} participants per relay core at this load; {:.0} frames/s or {:.0} RTP-sized \
             packets/s per relay core",
            level.participants,
            relay_per_core / nats_per_core,
            level.participants as f64 / r.cores.relay,
            relay_per_core,
            r.summary.forwarded_rtp_packets_per_s / r.cores.relay,
        );
        let others = r.cores.others.max(n.cores.others);
        if others > DISTURBED_CORES {
            println!("  disturbed: other processes used up to {others:.2} cores in these windows");
        }
    }
    // Fixed costs (room beats, timers, the runtime) weigh on the lowest
    // levels; the cost of one more forwarded packet is the slope between levels.
    if let [.., below, top] = levels {
        let frames = top.relay.summary.forwarded_per_s - below.relay.summary.forwarded_per_s;
        let cores = top.relay.cores.relay - below.relay.cores.relay;
        if frames > 0.0 && cores > 0.0 {
            println!(
                "marginal: {:.0} more forwarded pkt/s per extra relay core between the last two levels",
                frames / cores
            );
        }
    }
    match (knee, levels.last()) {
        (Some(knee), Some(level)) => {
            println!("knee at {} participants: {knee}", level.participants);
            let others = level.relay.cores.others;
            if others > DISTURBED_CORES {
                println!(
                    "  but other processes used {others:.2} cores meanwhile: rerun on a quiet machine"
                );
            }
        }
        _ => println!("no knee within these levels: add higher ones"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_as_a_rising_list_or_as_none() {
        assert_eq!(parse_levels("20, 40,80"), Ok(Levels(vec![20, 40, 80])));
        assert_eq!(parse_levels(""), Ok(Levels(Vec::new())));
        assert_eq!(parse_levels("none"), Ok(Levels(Vec::new())));
        assert!(parse_levels("40,20").unwrap_err().contains("rise"));
        assert!(parse_levels("0,20").is_err());
        assert!(parse_levels("20,x").unwrap_err().contains("\"x\""));
    }

    /// The help said "empty: none" while clap refused an empty value.
    #[test]
    fn an_empty_level_list_on_the_command_line_skips_that_series() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "rallypoint",
            "bench",
            "capacity",
            "--audio-levels",
            "160",
            "--video-levels",
            "",
        ])
        .expect("an empty --video-levels parses");
        let crate::cli::Command::Bench(crate::cli::BenchCommand::Capacity(args)) = cli.command
        else {
            panic!("parsed as another command");
        };
        assert_eq!(args.audio_levels, Levels(vec![160]));
        assert_eq!(args.video_levels, Levels(Vec::new()));
    }
}
