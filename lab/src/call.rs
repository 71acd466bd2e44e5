//! A two-person call driven by native runners, with a fault in the middle:
//! the shared core of the failover tests and `rallypoint bench failover`.
//!
//! Alice sends synthetic audio (a frame every 20 ms); Bob receives and counts.
//! The largest gap between two of Alice's frames at Bob is what a caller
//! would hear as a drop-out. Bob calls from the stack's first latency-lab
//! location; Alice from its second if it has one (so a line of Bob's, such
//! as a slow downlink, is his alone), else from the same.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rallypoint_client::Candidate;
use rallypoint_client::election::ElectionConfig;
use rallypoint_client::session::Update;
use rallypoint_client_native::participant::{MediaPlan, MediaSource, ReceiveStats, SenderStats};
use rallypoint_client_native::runner::{self, Command, Output, RunnerConfig};
use rallypoint_protocol::v1::{DecisionRule, ElectionTrigger, server_frame};
use tokio::sync::mpsc;

use rallypoint_testkit::stack::Stack;

pub struct Participant {
    commands: mpsc::UnboundedSender<Command>,
    outputs: mpsc::UnboundedReceiver<Output>,
    /// Relay id currently serving.
    pub serving: Option<String>,
    pub decisions: Vec<(ElectionTrigger, DecisionRule, String)>,
    pub stats: ReceiveStats,
    pub peer_left: Vec<String>,
}

impl Participant {
    /// `user` in `room`, from the stack's first location.
    pub fn start(stack: &Stack, room: &str, user: &str) -> Self {
        Participant::start_with(stack.client_candidates(), stack, room, user)
    }

    /// `user` in `room`, offered `candidates` (one location's).
    pub fn start_with(candidates: Vec<Candidate>, stack: &Stack, room: &str, user: &str) -> Self {
        let token = stack
            .issuer
            .mint(room, user, user, Duration::from_secs(600));
        let (commands, outputs) = runner::spawn(
            candidates,
            RunnerConfig {
                election: ElectionConfig::default(),
                connect_timeout: Duration::from_secs(5),
                room: Some(room.into()),
                identity: rallypoint_client_native::identity(token),
            },
        );
        Participant {
            commands,
            outputs,
            serving: None,
            decisions: Vec::new(),
            stats: ReceiveStats::new(Instant::now()),
            peer_left: Vec::new(),
        }
    }

    fn handle(&mut self, output: Output) {
        match output {
            Output::Session(Update::Decided {
                decision,
                candidate,
                ..
            }) => {
                tracing::debug!(?decision.trigger, relay = %candidate.relay_id, "{}", decision.reason);
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

    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
    }
}

/// Alice talks, Bob listens, for `duration`.
pub async fn talk(
    alice: &mut Participant,
    bob: &mut Participant,
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
                    if alice.serving.is_some() {
                        let _ = alice.commands.send(Command::SendMedia(media));
                    }
                }
            }
            Some(output) = alice.outputs.recv() => alice.handle(output),
            Some(output) = bob.outputs.recv() => bob.handle(output),
        }
    }
}

/// What one call with a fault showed.
pub struct FaultedCall {
    pub alice: Participant,
    pub bob: Participant,
    pub frames_before: u64,
    pub frames_after: u64,
    /// The relay that received the signal.
    pub victim: String,
    /// Largest gap in Alice's audio at Bob around the fault (ms).
    pub gap_ms: f64,
    /// How many of Alice's decisions came before the fault.
    decisions_before_fault: usize,
}

impl FaultedCall {
    /// Alice's decisions caused by the fault (or later), without any she
    /// made while the call settled.
    pub fn alice_decisions_after_fault(&self) -> &[(ElectionTrigger, DecisionRule, String)] {
        &self.alice.decisions[self.decisions_before_fault..]
    }
}

/// Alice and Bob joining `room`, and the synthetic audio Alice will send.
fn audio_call(stack: &Stack, room: &str) -> (Participant, Participant, MediaSource) {
    let alice_candidates = stack
        .locations
        .get(1)
        .map_or_else(|| stack.client_candidates(), |l| l.candidates.clone());
    let alice = Participant::start_with(alice_candidates, stack, room, "alice");
    let bob = Participant::start(stack, room, "bob");
    let source = MediaSource::new(
        MediaPlan {
            video_fps: 0,
            ..Default::default()
        },
        Instant::now(),
    );
    (alice, bob, source)
}

/// A call in `room`: talk for `settle`, send `signal` to Alice's relay, talk
/// for `after`.
pub async fn faulted_call(
    stack: &Stack,
    room: &str,
    signal: Signal,
    settle: Duration,
    after: Duration,
) -> anyhow::Result<FaultedCall> {
    let (mut alice, mut bob, mut source) = audio_call(stack, room);
    talk(&mut alice, &mut bob, &mut source, settle).await;
    let frames_before = bob.stats.total_frames();
    let victim = alice
        .serving
        .clone()
        .ok_or_else(|| anyhow::anyhow!("alice never elected a relay"))?;
    let relay = stack
        .relays
        .iter()
        .find(|r| r.spec.relay_id == victim)
        .ok_or_else(|| anyhow::anyhow!("alice serves through unknown relay {victim}"))?;
    let decisions_before_fault = alice.decisions.len();
    relay.signal(signal)?;
    talk(&mut alice, &mut bob, &mut source, after).await;
    let frames_after = bob.stats.total_frames();
    alice.stop();
    bob.stop();
    let gap_ms = bob
        .stats
        .senders
        .values()
        .map(|s| s.max_gap_ms)
        .fold(0.0, f64::max);
    Ok(FaultedCall {
        alice,
        bob,
        frames_before,
        frames_after,
        victim,
        gap_ms,
        decisions_before_fault,
    })
}

/// What a fault-free call showed.
pub struct QuietCall {
    /// Relay switches after the call settled, by either participant, with
    /// their trigger and the relay moved to: every one is a false failover.
    /// A decision that keeps the serving relay (a re-election confirming
    /// it) is not a switch.
    pub moves: Vec<(&'static str, ElectionTrigger, String)>,
    /// Alice's frames Bob received after the call settled.
    pub frames: u64,
    /// What Bob received from Alice over the whole call: its longest gap
    /// (a stalled path shows here) and the frames' latency.
    pub heard: Option<SenderStats>,
}

/// A call in `room` with no fault: talk for `settle`, then for `duration`,
/// counting every relay switch either participant makes meanwhile.
pub async fn quiet_call(
    stack: &Stack,
    room: &str,
    settle: Duration,
    duration: Duration,
) -> anyhow::Result<QuietCall> {
    let (mut alice, mut bob, mut source) = audio_call(stack, room);
    talk(&mut alice, &mut bob, &mut source, settle).await;
    if alice.serving.is_none() || bob.serving.is_none() {
        anyhow::bail!("the call did not settle within {settle:?}: nobody elected a relay");
    }
    let settled = (alice.decisions.len(), bob.decisions.len());
    let frames_before = bob.stats.total_frames();
    talk(&mut alice, &mut bob, &mut source, duration).await;
    alice.stop();
    bob.stop();
    let moves = [("alice", &alice, settled.0), ("bob", &bob, settled.1)]
        .into_iter()
        .flat_map(|(who, participant, before)| {
            // Each decision after the settled one, with the relay it left.
            let decisions = &participant.decisions[before - 1..];
            decisions
                .windows(2)
                .filter(|pair| pair[0].2 != pair[1].2)
                .map(move |pair| (who, pair[1].0, pair[1].2.clone()))
        })
        .collect();
    Ok(QuietCall {
        moves,
        frames: bob.stats.total_frames() - frames_before,
        heard: bob.stats.senders.values().next().cloned(),
    })
}
