//! `rallypoint probe` and `rallypoint join` as processes against a real
//! relay: a refusal no other relay would answer differently (a bad token, a
//! token for another room) ends the command with the relay's reason and a
//! failing exit status, and a probe that reaches no relay gives up saying
//! why — instead of retrying for ever, or failing over in a loop and
//! exiting 0 as if the call had happened.

use std::process::Command;
use std::time::{Duration, Instant};

use rallypoint_client::TransportKind;
use rallypoint_lab::bench::Rig;
use rallypoint_testkit::tokens::DevIssuer;

const SECRET: &str = "refusals-test-secret";
/// Each command must have ended well within this.
const WITHIN: Duration = Duration::from_secs(30);

/// Runs `rallypoint args…` and asserts that it failed by itself, well
/// within [`WITHIN`]; what it said on stderr.
async fn fails(what: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (output, took) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let output = Command::new("timeout")
            .arg(WITHIN.as_secs().to_string())
            .arg(env!("CARGO_BIN_EXE_rallypoint"))
            .args(&args)
            .output()
            .expect("rallypoint runs");
        (output, started.elapsed())
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&output.stderr).into_owned();
    // 124: `timeout` stopped it.
    assert!(
        !output.status.success() && output.status.code() != Some(124),
        "{what}: status {:?} after {took:?}\n{said}",
        output.status
    );
    said
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_every_relay_would_repeat_ends_the_command_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(
        dir.path(),
        false,
        TransportKind::WebSocket,
        SECRET,
        Vec::new(),
    )
    .await
    .expect("NATS and a relay start");
    let url = rig.relays[0].ws_url();
    let lobby = DevIssuer::new(SECRET).mint("lobby", "tester", "Tester", Duration::from_secs(600));

    // A token that is no token.
    let said = fails(
        "probe with a bad token",
        &["probe", "--token", "garbage", &url],
    )
    .await;
    assert!(
        said.contains("token"),
        "the relay's reason is not said:\n{said}"
    );

    // A token for another room.
    let said = fails(
        "join with another room's token",
        &[
            "join",
            "--room",
            "trial",
            "--duration",
            "5s",
            "--token",
            &lobby,
            &url,
        ],
    )
    .await;
    assert!(
        said.contains("admits to room \"lobby\", not \"trial\""),
        "the relay's reason is not said:\n{said}"
    );
    assert!(
        said.lines().count() < 20,
        "{} lines for one refusal:\n{said}",
        said.lines().count()
    );

    // Synthetic reports under a token signed with the wrong secret.
    let said = fails(
        "simulate with the wrong secret",
        &[
            "simulate",
            "--jwt-secret",
            "not-the-secret",
            "--reports",
            "10",
            &url,
        ],
    )
    .await;
    assert!(
        said.contains("signature")
            && said.contains("--jwt-secret")
            && !said.contains("is `rallypoint up` running"),
        "the wrong secret is not named as the cause:\n{said}"
    );

    // Nothing listening there.
    let closed = format!(
        "ws://127.0.0.1:{}/ws",
        rallypoint_testkit::ports::free_tcp()
    );
    let said = fails("probe of nothing", &["probe", "--token", &lobby, &closed]).await;
    assert!(
        said.contains(&closed),
        "which relay failed is not said:\n{said}"
    );
}
