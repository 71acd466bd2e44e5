//! The traffic watch with real relays: a talker who mutes has its relay
//! suspected once, not again and again. A real NATS server and two relay
//! processes on loopback; a native runner in a room of its own, so the
//! only traffic it hears is its probes' answers — 20 a second while it
//! talks, five once it mutes. (The logic is tested in virtual time in
//! `client/core`; this is the same through sockets, timers and relays.)

use std::time::Duration;

use bytes::Bytes;
use rallypoint_client::TransportKind;
use rallypoint_client::election::{CandidateId, ElectionConfig, Role};
use rallypoint_client::session::Update;
use rallypoint_client_native::runner::{self, Command, Output, RunnerConfig};
use rallypoint_protocol::v1::{Media, TrackKind};
use rallypoint_testkit::tokens::DevIssuer;

mod support;
use support::decided;

const SECRET: &str = "traffic-watch-test-secret";
const ROOM: &str = "muted";
const T: Duration = Duration::from_secs(10);

/// Talks for three seconds, mutes, and counts the times its relay turned
/// suspect (each prepares the standby: media through two relays, a keyframe
/// asked for) and the probes it sent its relay in the next twelve. Before
/// the watch's fix a suspicion's own burst of answers kept the ended
/// traffic looking steady: suspect again every few hundred milliseconds,
/// for good. (Exactly one suspicion is asserted in virtual time; here a
/// starved runner may see none, or fail over, and that is not this test's
/// business.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_talker_who_mutes_has_its_relay_suspected_at_most_once() {
    let dir = tempfile::tempdir().unwrap();
    let nats = support::nats(dir.path()).await;
    let mut relays = Vec::new();
    for id in ["us-east-0", "us-east-1"] {
        let transports = vec![TransportKind::WebTransport];
        relays.push(support::relay(&nats, dir.path(), id, transports, SECRET).await);
    }
    let candidates = relays.iter().flat_map(|r| r.candidates()).collect();
    let token = DevIssuer::new(SECRET).mint(ROOM, "talker", "Talker", Duration::from_secs(600));
    let (commands, mut outputs) = runner::spawn(
        candidates,
        RunnerConfig {
            election: ElectionConfig::default(),
            connect_timeout: T,
            room: Some(ROOM.into()),
            identity: rallypoint_client_native::identity(token),
        },
    );
    decided(&mut outputs, T).await;

    let mut talking = tokio::time::interval(Duration::from_millis(20));
    for seq in 0..150 {
        talking.tick().await;
        let audio = Media {
            kind: TrackKind::Audio as i32,
            seq,
            payload: Bytes::from_static(&[1; 40]),
            ..Default::default()
        };
        commands.send(Command::SendMedia(audio)).unwrap();
    }
    // Drain what talking brought; from here on the talker is muted.
    while outputs.try_recv().is_ok() {}
    let mut suspected = 0;
    let mut moved = Vec::new();
    // The serving candidate's probes answered or lost, first and last seen.
    let mut probed: Option<(CandidateId, u32, u32)> = None;
    let muted_for = tokio::time::Instant::now() + Duration::from_secs(12);
    while let Ok(Some(output)) = tokio::time::timeout_at(muted_for, outputs.recv()).await {
        match output {
            Output::Session(Update::Preparing { .. }) => suspected += 1,
            Output::Session(Update::Decided { report, .. }) => moved.push(report.reason),
            Output::Session(Update::Snapshot(views)) => {
                for view in views.iter().filter(|v| v.role == Role::Serving) {
                    let count = view.summary.samples + view.summary.lost;
                    match &mut probed {
                        None => probed = Some((view.id, count, count)),
                        Some((id, _, last)) if *id == view.id => *last = count,
                        Some(_) => {}
                    }
                }
            }
            _ => {}
        }
    }
    let _ = commands.send(Command::Stop);
    let (_, first, last) = probed.expect("snapshots of the serving candidate");
    let probes = last - first;
    eprintln!(
        "in the 12 s after muting: suspected {suspected} times, {probes} probes to the relay; \
         moves: {moved:?}"
    );
    // `Update::Preparing` is told at most every 2 s, so the probes are the
    // finer count: 20 a second until the talking pace ends a second after
    // the last frame, then five, and a burst of five per suspicion — 84
    // here; with the loop, 355 (and six suspicions told).
    assert!(
        suspected <= 1 && probes < 150,
        "the relay of a talker who muted turned suspect again and again: {suspected} \
         suspicions told, {probes} probes in 12 s"
    );
}
