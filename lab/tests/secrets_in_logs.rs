//! No secret reaches a log. A whole local stack — both regions' NATS,
//! relays, ClickHouse, the collector and the dashboard — runs at debug
//! level while clients connect with tokens, report elections and sign in to
//! the dashboard (rightly and wrongly); then every log file under the stack's
//! directory is searched for every secret the stack holds: the token signing
//! secret, the tokens, every NATS seed, the TLS private key and the
//! dashboard password. The same files are plain text (no terminal colours).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rallypoint_client_native::Peer;
use rallypoint_testkit::reports::ReportGenerator;
use rallypoint_testkit::reports::send;
use rallypoint_testkit::stack::{Stack, StackConfig};

#[test]
fn no_secret_reaches_any_log_at_debug_level() {
    // SAFETY: no other thread exists yet (the runtime is built below), and
    // nextest runs every test in a process of its own. The stack's processes
    // inherit the level.
    unsafe {
        std::env::set_var("RUST_LOG", "debug");
        std::env::set_var("RALLYPOINT_RELAY_LOG", "debug");
        std::env::set_var("RALLYPOINT_COLLECTOR_LOG", "debug");
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(StackConfig {
        jwt_secret: Some(format!("signing-{:032x}", rand::random::<u128>())),
        ..StackConfig::for_test(dir.path())
    })
    .await
    .expect("stack starts");

    // Clients with a token on every relay, reporting.
    let token = stack
        .issuer
        .mint("lobby", "alice", "Alice", Duration::from_secs(600));
    let identity = rallypoint_client_native::identity(token.clone());
    let mut peers = Vec::new();
    for candidate in stack.candidates() {
        peers.push(
            Peer::connect(&candidate, &identity, Duration::from_secs(10))
                .await
                .expect("a client connects"),
        );
    }
    let outcome = send(
        peers,
        ReportGenerator::new(stack.candidates(), 7, false),
        20,
        2000,
    )
    .await;
    assert_eq!(
        outcome.accepted, 20,
        "reports flow: {:?}",
        outcome.first_refusal
    );

    // The dashboard: signed in, and a wrong password.
    let dashboard = stack
        .dashboard
        .as_ref()
        .expect("telemetry starts the dashboard");
    let good = dashboard.get("/").await.unwrap();
    assert!(good.status().is_success(), "signed in: {}", good.status());
    let wrong_password = format!("{}-wrong", dashboard.password);
    let bad = dashboard
        .get_as("/", &dashboard.user, &wrong_password)
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    // Let the last lines reach the files.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let security = stack.nats.security().expect("the stack is secured");
    let mut secrets = vec![
        ("token signing secret", stack.secret.clone()),
        ("client token", token),
        ("dashboard password", dashboard.password.clone()),
        ("wrong dashboard password", wrong_password),
    ];
    for seed in security.seed_files() {
        let text = std::fs::read_to_string(seed).unwrap();
        secrets.push(("NATS seed", text.trim().to_owned()));
    }
    let key = std::fs::read_to_string(&security.server.key).unwrap();
    // The key's body lines, each long enough to be unmistakable.
    for line in key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 32)
    {
        secrets.push(("TLS private key", line.to_owned()));
    }

    let logs = log_files(dir.path());
    let relay_debug = logs
        .iter()
        .filter(|p| p.to_string_lossy().contains("relays"))
        .any(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .contains("DEBUG")
        });
    assert!(relay_debug, "the relays logged at debug level: {logs:?}");
    assert!(logs.len() >= 8, "every part logged: {logs:?}");
    let mut leaks = Vec::new();
    let mut coloured = Vec::new();
    for log in &logs {
        let text = String::from_utf8_lossy(&std::fs::read(log).unwrap()).into_owned();
        // Plain text for files and log collectors, not a terminal's colours.
        if text.contains("\u{1b}[") {
            coloured.push(log.display().to_string());
        }
        for (what, secret) in &secrets {
            for (number, line) in text.lines().enumerate() {
                if line.contains(secret.as_str()) {
                    leaks.push(format!("{what} in {}:{}", log.display(), number + 1));
                }
            }
        }
    }
    stack.stop().await;
    assert!(leaks.is_empty(), "secrets in logs:\n{}", leaks.join("\n"));
    assert!(coloured.is_empty(), "terminal colour codes in {coloured:?}");
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "log") {
                found.push(path);
            }
        }
    }
    found
}
