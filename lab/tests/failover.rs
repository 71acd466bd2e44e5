//! Failover and drain with real relays, real NATS and the native runner.

use std::time::Duration;

use nix::sys::signal::Signal;
use rallypoint_lab::call::{FaultedCall, faulted_call};
use rallypoint_protocol::v1::{DecisionRule, ElectionTrigger};
use rallypoint_testkit::stack::{Stack, StackConfig};

async fn call_then(signal: Signal) -> FaultedCall {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(StackConfig {
        dir: dir.path().to_path_buf(),
        http: "127.0.0.1:0".parse().unwrap(),
        jwt_secret: Some("failover-test".into()),
        dev_tokens: true,
        relay_args: vec!["--drain-grace".into(), "5s".into()],
        scenarios: Vec::new(),
        telemetry: false,
        collector_args: Vec::new(),
        stream_args: Vec::new(),
    })
    .await
    .expect("stack starts");
    let call = faulted_call(
        &stack,
        "call",
        signal,
        Duration::from_secs(6),
        Duration::from_secs(6),
    )
    .await
    .expect("the call runs");
    stack.stop().await;
    eprintln!(
        "{signal:?} to {}: largest gap {:.0} ms; alice's decisions {:?}",
        call.victim, call.gap_ms, call.alice.decisions
    );
    call
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_elected_relay_brings_media_back_through_the_standby() {
    let call = call_then(Signal::SIGKILL).await;
    // A decision before the kill (a probe lost on a loaded machine) is not
    // the failover under test.
    let failover = call
        .alice_decisions_after_fault()
        .iter()
        .find(|(trigger, _, _)| *trigger == ElectionTrigger::Failover)
        .unwrap_or_else(|| panic!("no failover: {:?}", call.alice.decisions));
    assert_eq!(failover.1, DecisionRule::Standby);
    assert_ne!(failover.2, call.victim);
    assert!(
        call.frames_before > 50,
        "media flowed before: {}",
        call.frames_before
    );
    assert!(
        call.frames_after > call.frames_before + 150,
        "media resumed: {} -> {}",
        call.frames_before,
        call.frames_after
    );
    assert!(call.bob.peer_left.is_empty(), "bob was told alice left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_relay_hands_the_call_over_without_a_leave() {
    let call = call_then(Signal::SIGTERM).await;
    let drain = call
        .alice_decisions_after_fault()
        .iter()
        .find(|(trigger, _, _)| *trigger == ElectionTrigger::Drain)
        .unwrap_or_else(|| panic!("no drain switch: {:?}", call.alice.decisions));
    assert_eq!(drain.1, DecisionRule::Standby);
    assert!(
        call.frames_after > call.frames_before + 150,
        "media continued: {} -> {}",
        call.frames_before,
        call.frames_after
    );
    assert!(call.bob.peer_left.is_empty(), "bob was told alice left");
}

/// A relay cut off from NATS must not keep its callers: with every NATS
/// server of Alice's region killed, her relay stops answering probes and
/// drains her, and she moves to a relay of the other region (the relay's
/// 2 s `--nats-loss-grace`, then the drain and her move: the test prints
/// how long it took, ~2.3 s on a quiet machine — a speed BENCHMARKS.md
/// records, not one this test asserts; it waits 10 s for the move), with
/// media flowing again. When NATS returns, the relay serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_regions_nats_moves_its_callers_to_the_other_region() {
    use std::time::Instant;

    use rallypoint_client_native::participant::{MediaPlan, MediaSource};
    use rallypoint_lab::call::{Participant, talk};

    let dir = tempfile::tempdir().unwrap();
    let mut stack = Stack::start(StackConfig {
        dir: dir.path().to_path_buf(),
        http: "127.0.0.1:0".parse().unwrap(),
        jwt_secret: Some("nats-loss-test".into()),
        dev_tokens: true,
        relay_args: Vec::new(),
        scenarios: Vec::new(),
        telemetry: false,
        collector_args: Vec::new(),
        stream_args: Vec::new(),
    })
    .await
    .expect("stack starts");
    let mut alice = Participant::start(&stack, "call", "alice");
    let mut bob = Participant::start(&stack, "call", "bob");
    let mut source = MediaSource::new(
        MediaPlan {
            video_fps: 0,
            ..Default::default()
        },
        Instant::now(),
    );
    talk(&mut alice, &mut bob, &mut source, Duration::from_secs(5)).await;
    let region_of = |stack: &Stack, relay_id: &str| {
        stack
            .relays
            .iter()
            .find(|r| r.spec.relay_id == relay_id)
            .map(|r| r.spec.region.clone())
            .expect("a relay of the stack")
    };
    let serving = alice.serving.clone().expect("alice elected a relay");
    let lost_region = region_of(&stack, &serving);
    let doomed: Vec<String> = stack
        .nats
        .servers()
        .iter()
        .filter(|s| s.cluster == lost_region)
        .map(|s| s.name.clone())
        .collect();
    for server in &doomed {
        stack.nats.kill(server).await.unwrap();
    }
    // From the last death: killing each server waits for its process to exit,
    // which is the test's time, not the relay's.
    let killed_at = Instant::now();
    let mut moved_after = None;
    while killed_at.elapsed() < Duration::from_secs(10) {
        talk(&mut alice, &mut bob, &mut source, Duration::from_millis(50)).await;
        let now_serving = alice.serving.clone().unwrap_or_default();
        if moved_after.is_none() && region_of(&stack, &now_serving) != lost_region {
            moved_after = Some(killed_at.elapsed());
        }
    }
    let moved_after = moved_after.unwrap_or_else(|| {
        panic!(
            "alice stayed in {lost_region} for 10 s with its NATS gone: {:?}",
            alice.decisions
        )
    });
    eprintln!("moved out of {lost_region} {moved_after:?} after its NATS died");
    let frames = bob.stats.total_frames();
    talk(&mut alice, &mut bob, &mut source, Duration::from_secs(2)).await;
    assert!(
        bob.stats.total_frames() > frames + 50,
        "media resumed through the other region"
    );

    // NATS back: the relay serves again without a restart.
    let doomed: Vec<&str> = doomed.iter().map(String::as_str).collect();
    stack.nats.restart_all(&doomed).await.unwrap();
    let relay = stack
        .relays
        .iter()
        .find(|r| r.spec.relay_id == serving)
        .unwrap();
    if let Err(stats) = relay
        .stats_once(Duration::from_secs(15), |stats| {
            stats["cut_off_from_nats"] == false
        })
        .await
    {
        panic!("never recovered: {stats}");
    }
    alice.stop();
    bob.stop();
    stack.stop().await;
}
