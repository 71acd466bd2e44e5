//! `rallypoint load` as a process against a real relay and NATS: its JSON
//! summary adds up, and a bad plan is refused before anything connects.

use std::process::Command;

use rallypoint_client::TransportKind;
use rallypoint_lab::bench::Rig;
use rallypoint_lab::load::Summary;

const SECRET: &str = "load-test-secret";

fn load(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rallypoint"))
        .arg("load")
        .args(args)
        .env("RALLYPOINT_JWT_SECRET", SECRET)
        .output()
        .expect("rallypoint runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_load_through_a_relay_reports_consistent_counts() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(
        dir.path(),
        false,
        TransportKind::WebSocket,
        SECRET,
        Vec::new(),
    )
    .await
    .expect("NATS and the relay start");
    let url = rig.relay.ws_url();
    let output = tokio::task::spawn_blocking(move || {
        load(&[
            "--relay",
            &url,
            "--rooms",
            "2",
            "--participants",
            "3",
            "--video",
            "--warmup",
            "500ms",
            "--duration",
            "1s",
        ])
    })
    .await
    .unwrap();
    rig.stop().await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "load failed: {stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let summary: Summary = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not a summary ({e}): {stdout:?}"));
    assert_eq!(summary.path, "relay-ws");
    assert_eq!(summary.participants, 6);
    // Each frame is for the two others in its room of three.
    assert_eq!(summary.expected, summary.sent * 2);
    assert!(summary.received > 0, "{summary:?}");
    assert!(summary.received <= summary.expected, "{summary:?}");
    let drops = (summary.expected - summary.received) as f64 / summary.expected as f64;
    assert!((summary.drop_fraction - drops).abs() < 1e-12, "{summary:?}");
    assert!(summary.forwarded_per_s > 0.0, "{summary:?}");
    assert!(
        summary.latency_p50_ms <= summary.latency_p99_ms,
        "{summary:?}"
    );
}

#[test]
fn a_plan_without_receivers_is_refused_with_the_reason() {
    let output = load(&["--relay", "ws://127.0.0.1:9/ws", "--participants", "1"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--participants must be at least 2"),
        "{stderr}"
    );
}

#[test]
fn a_load_needs_a_relay_or_nats() {
    let output = load(&["--rooms", "1"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--relay") && stderr.contains("--nats"),
        "{stderr}"
    );
}
