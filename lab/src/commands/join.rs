//! `rallypoint join`: a headless participant. It elects a relay like a browser
//! would, joins the room, sends synthetic audio- and video-sized media, and
//! counts what it receives (load and failover tests use it).

use std::time::{Duration, Instant};

use rallypoint_client::election::ElectionConfig;
use rallypoint_client::session::Update;
use rallypoint_client_native::participant::{MediaPlan, MediaSource, ReceiveStats};
use rallypoint_client_native::runner::{self, Command, Output, RunnerConfig};
use rallypoint_protocol::v1::server_frame;
use rallypoint_service::parse_duration;

use super::outcome::refusal_that_ends;
use super::source::Source;

#[derive(Debug, Clone, clap::Args)]
pub struct JoinArgs {
    #[command(flatten)]
    pub source: Source,

    /// Room to join.
    #[arg(long)]
    pub room: String,

    /// Display name.
    #[arg(long, default_value = "headless")]
    pub name: String,

    /// Stay this long, then hang up (default: until Ctrl-C).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Video frames per second (0: audio only).
    #[arg(long, default_value_t = 30)]
    pub video_fps: u32,

    /// Print statistics as JSON when done.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: JoinArgs) -> anyhow::Result<()> {
    let (candidates, token) = args.source.resolve(&args.room, &args.name).await?;
    let config = RunnerConfig {
        election: ElectionConfig::default(),
        connect_timeout: Duration::from_secs(5),
        room: Some(args.room.clone()),
        identity: rallypoint_client_native::identity(token),
    };
    let (commands, mut outputs) = runner::spawn(candidates, config);
    let started = Instant::now();
    let plan = MediaPlan {
        video_fps: args.video_fps,
        ..Default::default()
    };
    let mut source = MediaSource::new(plan, started);
    let mut stats = ReceiveStats::new(started);
    let mut sent = 0u64;
    let mut serving = false;
    let mut report_tick = tokio::time::interval(Duration::from_secs(5));
    let stop = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => rallypoint_service::shutdown::terminate_signal().await,
        }
    };
    tokio::pin!(stop);
    loop {
        let due = tokio::time::Instant::from_std(source.next_due());
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep_until(due) => {
                while let Some(media) = source.poll(Instant::now()) {
                    if serving {
                        sent += 1;
                        let _ = commands.send(Command::SendMedia(media));
                    }
                }
            }
            _ = report_tick.tick() => {
                eprintln!(
                    "[join] {:>5.1}s sent {sent} frames, received {} from {} participants",
                    started.elapsed().as_secs_f64(),
                    stats.total_frames(),
                    stats.senders.len()
                );
            }
            output = outputs.recv() => match output {
                None => break,
                Some(Output::Session(Update::Decided { decision, candidate, .. })) => {
                    serving = true;
                    // A new relay path: everyone needs a fresh keyframe of us.
                    source.request_keyframe();
                    eprintln!("[join] {:?}: now via {} — {}", decision.trigger, candidate.label(), decision.reason);
                }
                Some(Output::Session(Update::Refused { candidate, code, message })) => {
                    if let Some(error) = refusal_that_ends(&candidate, code, &message) {
                        let _ = commands.send(Command::Stop);
                        return Err(error.context(format!("cannot join room {:?}", args.room)));
                    }
                }
                Some(Output::Session(Update::NoRelayReachable { retry_in, attempt })) => {
                    serving = false;
                    eprintln!("[join] no relay reachable (attempt {attempt}); retrying in {retry_in:?}");
                }
                Some(Output::Room(received)) => {
                    match &received.frame.kind {
                        Some(server_frame::Kind::KeyframeRequest(_)) => source.request_keyframe(),
                        Some(server_frame::Kind::PeerJoined(j)) => {
                            eprintln!("[join] {} joined", j.peer.as_ref().map(|p| p.display_name.as_str()).unwrap_or("?"));
                        }
                        Some(server_frame::Kind::PeerMoved(m)) => {
                            eprintln!("[join] {} moved from {}", m.peer.as_ref().map(|p| p.display_name.as_str()).unwrap_or("?"), m.from_region);
                        }
                        Some(server_frame::Kind::PeerLeft(l)) => eprintln!("[join] {} left", l.peer_id),
                        _ => stats.record(&received),
                    }
                }
                Some(_) => {}
            }
        }
    }
    let _ = commands.send(Command::Stop);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "sent_frames": sent,
                "received": stats,
            }))?
        );
    }
    Ok(())
}
