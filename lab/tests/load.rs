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

/// Two rooms of three for a second and a half (`extra` flags added) over
/// WebSocket, spread over `relays` relays of one nats-server; with the
/// output, each relay's `/stats` after the load.
async fn small_load(
    relays: usize,
    extra: &[&str],
) -> (std::process::Output, Vec<serde_json::Value>) {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start_relays(
        dir.path(),
        false,
        TransportKind::WebSocket,
        SECRET,
        Vec::new(),
        relays,
    )
    .await
    .expect("NATS and the relays start");
    let mut args: Vec<String> = rig
        .relays
        .iter()
        .flat_map(|relay| ["--relay".to_owned(), relay.ws_url()])
        .collect();
    args.extend(
        [
            "--rooms",
            "2",
            "--participants",
            "3",
            "--warmup",
            "500ms",
            "--duration",
            "1s",
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .map(String::from),
    );
    let output = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        load(&args)
    })
    .await
    .unwrap();
    let mut stats = Vec::new();
    for relay in &rig.relays {
        stats.push(relay.stats().await.expect("the relay's /stats"));
    }
    rig.stop().await;
    (output, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_load_through_a_relay_reports_consistent_counts() {
    let (output, _) = small_load(1, &["--video"]).await;
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
    // With video, a 2.4 kB frame is two RTP-sized packets and a keyframe
    // twenty; audio frames are one each.
    assert!(
        summary.forwarded_rtp_packets_per_s > 1.2 * summary.forwarded_per_s,
        "{summary:?}"
    );
    assert!(
        summary.latency_p50_ms <= summary.latency_p99_ms,
        "{summary:?}"
    );
}

/// Rooms spread over two relays: every participant of a room receives the
/// others whichever relay they joined, and both relays carry their share —
/// each publishes its own participants' media to NATS for the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_over_two_relays_spreads_every_room_over_both() {
    let (output, stats) = small_load(2, &[]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "load failed: {stderr}");
    let summary: Summary = serde_json::from_slice(&output.stdout).expect("a summary");
    assert_eq!(summary.path, "relay-ws");
    assert!(summary.received > 0, "{summary:?}");
    // Frames sent in the first moments after a join may race the other
    // relay's subscription; nothing else may go missing.
    assert!(summary.drop_fraction < 0.01, "{summary:?}");
    // Participants 0 and 2 of each room joined the first relay, 1 the
    // second. The second relay publishing at all shows the rooms were
    // spread (it serves no room otherwise); the first would publish in any
    // case while its rooms are new (see `relay/src/rooms/audience.rs`).
    for (i, stats) in stats.iter().enumerate() {
        let published = stats["media_published"].as_u64().unwrap();
        assert!(published > 0, "relay {i} published nothing: {stats}");
    }
}

/// As deployments run: relays hold only an Ed25519 public key and accept
/// one issuer; `load` mints with the private key and that issuer. Tokens
/// signed any other way are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_mints_ed25519_tokens_for_relays_that_verify_with_a_public_key() {
    const ISSUER: &str = "https://auth.example.test";
    let dir = tempfile::tempdir().unwrap();
    let (private_pem, public_pem) = rallypoint_testkit::tokens::ed25519_key_pair().unwrap();
    let (private_key, public_key) = (dir.path().join("jwt.pem"), dir.path().join("jwt.pub.pem"));
    std::fs::write(&private_key, private_pem).unwrap();
    std::fs::write(&public_key, public_pem).unwrap();
    let relay_args = [
        "--jwt-public-key",
        &public_key.display().to_string(),
        "--jwt-issuer",
        ISSUER,
    ]
    .map(String::from)
    .to_vec();
    let rig = Rig::start(
        dir.path(),
        false,
        TransportKind::WebSocket,
        SECRET,
        relay_args,
    )
    .await
    .expect("NATS and the relay start");
    let url = rig.relay().ws_url();
    let run = |key: &[&str]| {
        let mut args = vec![
            "load",
            "--relay",
            &url,
            "--rooms",
            "1",
            "--participants",
            "2",
        ];
        args.extend(["--warmup", "300ms", "--duration", "500ms"]);
        args.extend(key);
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_rallypoint"))
                .args(args)
                // A secret in the environment, as a shell that also loads
                // HS256 relays has: the private key still wins.
                .env("RALLYPOINT_JWT_SECRET", "some-other-secret")
                .output()
                .expect("rallypoint runs")
        })
    };
    let key = private_key.display().to_string();
    let with_key = run(&["--jwt-private-key", &key, "--jwt-issuer", ISSUER]).await;
    let wrong_issuer = run(&["--jwt-private-key", &key]).await;
    let with_secret = run(&["--jwt-secret", SECRET, "--jwt-issuer", ISSUER]).await;
    let (with_key, wrong_issuer, with_secret) = (
        with_key.unwrap(),
        wrong_issuer.unwrap(),
        with_secret.unwrap(),
    );
    rig.stop().await;

    let stderr = String::from_utf8_lossy(&with_key.stderr);
    assert!(
        with_key.status.success(),
        "load with the private key failed: {stderr}"
    );
    let summary: Summary = serde_json::from_slice(&with_key.stdout).expect("a summary");
    assert_eq!(summary.participants, 2);
    assert!(summary.received > 0, "{summary:?}");
    for (what, refused, why) in [
        (
            "the dev issuer",
            wrong_issuer,
            "token issuer is not the one this relay trusts",
        ),
        ("an HS256 secret", with_secret, "InvalidAlgorithm"),
    ] {
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success()
                && stderr.contains("refused with Unauthenticated")
                && stderr.contains(why),
            "tokens from {what}: {stderr}"
        );
    }
}

#[test]
fn a_relay_load_without_a_token_key_says_which_keys_there_are() {
    let output = Command::new(env!("CARGO_BIN_EXE_rallypoint"))
        .args(["load", "--relay", "ws://127.0.0.1:9/ws"])
        .env_remove("RALLYPOINT_JWT_SECRET")
        .output()
        .expect("rallypoint runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--jwt-secret") && stderr.contains("--jwt-private-key"),
        "{stderr}"
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

/// Runs `load` with `args`, which it must refuse before connecting anywhere
/// (nothing listens on the test URLs' ports), saying `reason`.
fn assert_refused(args: &[&str], reason: &str) {
    let output = load(args);
    assert!(!output.status.success(), "load {args:?} was not refused");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(reason), "{stderr}");
}

#[test]
fn relays_of_one_load_must_share_a_transport() {
    assert_refused(
        &[
            "--relay",
            "ws://127.0.0.1:9/ws",
            "--relay",
            "https://127.0.0.1:9/",
            "--rooms",
            "1",
        ],
        "must share a transport",
    );
}

#[test]
fn a_load_refuses_more_relays_than_a_room_has_participants() {
    assert_refused(
        &[
            "--relay",
            "ws://127.0.0.1:9/ws",
            "--relay",
            "ws://127.0.0.1:10/ws",
            "--relay",
            "ws://127.0.0.1:11/ws",
            "--participants",
            "2",
        ],
        "3 relays but rooms of 2",
    );
}
