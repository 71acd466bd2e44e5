//! Failover and drain with real relays, real NATS and the native runner.

use std::time::Duration;

use nix::sys::signal::Signal;
use rallypoint_lab::call::{FaultedCall, faulted_call};
use rallypoint_lab::stack::{Stack, StackConfig};
use rallypoint_protocol::v1::{DecisionRule, ElectionTrigger};

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
