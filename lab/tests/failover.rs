//! Failover and drain with real relays, real NATS and the native runner.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rallypoint_client::election::ElectionConfig;
use rallypoint_client_native::ClientIdentity;
use rallypoint_client_native::participant::{MediaPlan, MediaSource, ReceiveStats};
use rallypoint_client_native::runner::{self, Command, Output, RunnerConfig};
use rallypoint_lab::stack::{Stack, StackConfig};
use rallypoint_protocol::v1::{DecisionRule, ElectionTrigger, server_frame};
use tokio::sync::mpsc;

async fn stack(dir: &std::path::Path) -> Stack {
    Stack::start(StackConfig {
        dir: dir.to_path_buf(),
        http: "127.0.0.1:0".parse().unwrap(),
        jwt_secret: Some("failover-test".into()),
        dev_tokens: true,
        relay_args: vec!["--drain-grace".into(), "5s".into()],
    })
    .await
    .expect("stack starts")
}

struct Participant {
    commands: mpsc::UnboundedSender<Command>,
    outputs: mpsc::UnboundedReceiver<Output>,
    serving: Option<String>,
    decisions: Vec<(ElectionTrigger, DecisionRule, String)>,
    stats: ReceiveStats,
    stats_started: Instant,
    peer_left: Vec<String>,
}

impl Participant {
    fn start(stack: &Stack, user: &str) -> Self {
        let token = stack
            .issuer
            .mint("call", user, user, Duration::from_secs(600));
        let (commands, outputs) = runner::spawn(
            stack.candidates(),
            RunnerConfig {
                election: ElectionConfig::default(),
                connect_timeout: Duration::from_secs(5),
                room: Some("call".into()),
                identity: ClientIdentity::new(token),
            },
        );
        Participant {
            commands,
            outputs,
            serving: None,
            decisions: Vec::new(),
            stats: ReceiveStats::new(Instant::now()),
            stats_started: Instant::now(),
            peer_left: Vec::new(),
        }
    }

    fn handle(&mut self, output: Output) {
        match output {
            Output::Decided {
                decision,
                candidate,
                ..
            } => {
                eprintln!(
                    "{:?} decided {:?} via {}: {}",
                    self.stats_started.elapsed(),
                    decision.trigger,
                    candidate.relay_id,
                    decision.reason
                );
                self.serving = Some(candidate.relay_id.clone());
                self.decisions
                    .push((decision.trigger, decision.rule, candidate.relay_id));
            }
            Output::Room(received) => {
                if let Some(server_frame::Kind::PeerLeft(left)) = &received.frame.kind {
                    self.peer_left.push(left.peer_id.clone());
                }
                self.stats.record(&received);
            }
            _ => {}
        }
    }
}

/// Runs `a` sending audio and `b` receiving for `duration`.
async fn talk(
    a: &mut Participant,
    b: &mut Participant,
    source: &mut MediaSource,
    duration: Duration,
) {
    let end = tokio::time::Instant::now() + duration;
    loop {
        let due = tokio::time::Instant::from_std(source.next_due());
        tokio::select! {
            _ = tokio::time::sleep_until(end) => return,
            _ = tokio::time::sleep_until(due) => {
                while let Some(media) = source.poll(Instant::now()) {
                    if a.serving.is_some() {
                        let _ = a.commands.send(Command::SendMedia(media));
                    }
                }
            }
            Some(output) = a.outputs.recv() => a.handle(output),
            Some(output) = b.outputs.recv() => b.handle(output),
        }
    }
}

async fn call_then(signal: Signal) -> (Participant, Participant, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path()).await;
    let mut a = Participant::start(&stack, "alice");
    let mut b = Participant::start(&stack, "bob");
    let mut source = MediaSource::new(
        MediaPlan {
            video_fps: 0,
            ..Default::default()
        },
        Instant::now(),
    );
    talk(&mut a, &mut b, &mut source, Duration::from_secs(6)).await;
    let before = b.stats.total_frames();
    assert!(before > 50, "media flows before the fault: {before} frames");
    let victim = a.serving.clone().expect("alice serves through a relay");
    let relay = stack
        .relays
        .iter()
        .position(|r| r.spec.relay_id == victim)
        .unwrap();
    eprintln!("{:?} {signal:?} to {victim}", a.stats_started.elapsed());
    stack.relays[relay].signal(signal).unwrap();
    talk(&mut a, &mut b, &mut source, Duration::from_secs(6)).await;
    let after = b.stats.total_frames();
    let _ = a.commands.send(Command::Stop);
    let _ = b.commands.send(Command::Stop);
    stack.stop().await;
    (a, b, before, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_elected_relay_brings_media_back_through_the_standby() {
    let (a, b, before, after) = call_then(Signal::SIGKILL).await;
    let failover = a
        .decisions
        .iter()
        .find(|(trigger, _, _)| *trigger == ElectionTrigger::Failover)
        .unwrap_or_else(|| panic!("no failover: {:?}", a.decisions));
    assert_eq!(failover.1, DecisionRule::Standby, "{:?}", a.decisions);
    assert!(after > before + 150, "media resumed: {before} -> {after}");
    assert!(
        b.peer_left.is_empty(),
        "bob was told alice left: {:?}",
        b.peer_left
    );
    let gap = b
        .stats
        .senders
        .values()
        .map(|s| s.max_gap_ms)
        .fold(0.0, f64::max);
    eprintln!(
        "largest gap bob saw in alice's audio: {gap:.0} ms; decisions {:?}",
        a.decisions
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_relay_hands_the_call_over_without_a_leave() {
    let (a, b, before, after) = call_then(Signal::SIGTERM).await;
    let drain = a
        .decisions
        .iter()
        .find(|(trigger, _, _)| *trigger == ElectionTrigger::Drain)
        .unwrap_or_else(|| panic!("no drain switch: {:?}", a.decisions));
    assert_eq!(drain.1, DecisionRule::Standby);
    assert!(after > before + 150, "media continued: {before} -> {after}");
    assert!(
        b.peer_left.is_empty(),
        "bob was told alice left: {:?}",
        b.peer_left
    );
    let gap = b
        .stats
        .senders
        .values()
        .map(|s| s.max_gap_ms)
        .fold(0.0, f64::max);
    eprintln!(
        "largest gap bob saw in alice's audio: {gap:.0} ms; decisions {:?}",
        a.decisions
    );
}
