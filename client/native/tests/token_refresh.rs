//! A call outlives its token only when the runner has fresh ones: a real
//! NATS server and relay process on loopback, two runners in one room with
//! 3-second tokens (a relay serves a token 5 s past its expiry), one with a
//! token source and one without, and a plain participant watching the room.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rallypoint_client::election::ElectionConfig;
use rallypoint_client::session::Update;
use rallypoint_client::{Candidate, TransportKind};
use rallypoint_client_native::Peer;
use rallypoint_client_native::runner::{self, Command, Output, RunnerConfig, TokenSource};
use rallypoint_protocol::v1::{ErrorCode, Media, TrackKind, server_frame};
use rallypoint_testkit::nats::SuperCluster;
use rallypoint_testkit::relays::RelayProcess;
use rallypoint_testkit::tokens::DevIssuer;
use tokio::sync::mpsc;

mod support;
use support::decided;

const SECRET: &str = "token-refresh-test-secret";
const ROOM: &str = "long-call";
const T: Duration = Duration::from_secs(10);
const TOKEN_LIFE: Duration = Duration::from_secs(3);
/// A token's expiry plus the relay's leeway, and a margin: by then every
/// connection on an unrefreshed token is gone.
const PAST_EXPIRY: Duration = Duration::from_secs(3 + 5 + 2);

struct Lab {
    _dir: tempfile::TempDir,
    _nats: SuperCluster,
    relay: RelayProcess,
}

/// One NATS server and one relay serving both transports.
async fn lab() -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let nats = support::nats(dir.path()).await;
    let transports = vec![TransportKind::WebSocket, TransportKind::WebTransport];
    let relay = support::relay(&nats, dir.path(), "us-east-0", transports, SECRET).await;
    Lab {
        _dir: dir,
        _nats: nats,
        relay,
    }
}

fn short_token(user: &str) -> String {
    DevIssuer::new(SECRET).mint(ROOM, user, user, TOKEN_LIFE)
}

fn config(user: &str) -> RunnerConfig {
    RunnerConfig {
        election: ElectionConfig::default(),
        connect_timeout: T,
        room: Some(ROOM.into()),
        identity: rallypoint_client_native::identity(short_token(user)),
    }
}

/// Mints another short token for `user` each time, counting the calls.
fn token_source(user: &'static str, calls: Arc<AtomicUsize>) -> TokenSource {
    Box::new(move || {
        calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move { Ok(short_token(user)) })
    })
}

/// The refusals a runner reported until `until`.
async fn refusals_until(
    outputs: &mut mpsc::UnboundedReceiver<Output>,
    until: Instant,
) -> Vec<ErrorCode> {
    let mut refusals = Vec::new();
    let until = tokio::time::Instant::from_std(until);
    while let Ok(Some(output)) = tokio::time::timeout_at(until, outputs.recv()).await {
        if let Output::Session(Update::Refused { code, .. }) = output {
            refusals.push(code);
        }
    }
    refusals
}

fn audio(seq: u64) -> Media {
    Media {
        kind: TrackKind::Audio as i32,
        seq,
        payload: Bytes::from_static(&[1; 40]),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_outlives_its_token_only_with_a_token_source() {
    let lab = lab().await;
    let candidates: Vec<Candidate> = lab.relay.candidates();
    let mut watcher = Peer::connect(
        &lab.relay.candidate(TransportKind::WebSocket),
        &rallypoint_client_native::identity(DevIssuer::new(SECRET).mint(
            ROOM,
            "watcher",
            "watcher",
            Duration::from_secs(600),
        )),
        T,
    )
    .await
    .expect("the watcher connects");
    watcher.join(ROOM, 0, T).await.expect("the watcher joins");

    let fetched = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let (refreshing, mut refreshing_out) = runner::spawn_refreshing(
        candidates.clone(),
        config("refreshing"),
        token_source("refreshing", fetched.clone()),
    );
    let (_expiring, mut expiring_out) = runner::spawn(candidates, config("expiring"));
    decided(&mut refreshing_out, T).await;
    decided(&mut expiring_out, T).await;

    let past_expiry = started + PAST_EXPIRY;
    let (refreshing_refusals, expiring_refusals) = tokio::join!(
        refusals_until(&mut refreshing_out, past_expiry),
        refusals_until(&mut expiring_out, past_expiry),
    );
    assert!(
        expiring_refusals.contains(&ErrorCode::TokenExpired),
        "without a token source the relay ends the call: {expiring_refusals:?}"
    );
    assert_eq!(
        refreshing_refusals,
        vec![],
        "the refreshed call was never refused"
    );
    assert!(
        fetched.load(Ordering::Relaxed) >= 2,
        "a fresh token for each short one: {} fetched",
        fetched.load(Ordering::Relaxed)
    );

    // Long past its first token, the refreshed call still reaches the room.
    for seq in 0..20 {
        refreshing.send(Command::SendMedia(audio(seq))).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watcher
        .expect("media from the refreshed call", T, |kind| match kind {
            server_frame::Kind::Media(m) if m.seq < 20 => Some(()),
            _ => None,
        })
        .await
        .expect("the refreshed call lives on");
    let _ = refreshing.send(Command::Stop);
}

/// A native client whose token the relays do not accept hears the refusal,
/// code and message, the way the browser does; it never decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_is_reported_as_the_relays_refusal() {
    let lab = lab().await;
    let candidates = lab.relay.candidates();
    let forged = DevIssuer::new("not-the-relays-secret").mint(ROOM, "mallory", "mallory", T);
    let config = RunnerConfig {
        identity: rallypoint_client_native::identity(forged),
        ..config("mallory")
    };
    let (runner, mut outputs) = runner::spawn(candidates.clone(), config);
    let mut refused = Vec::new();
    let deadline = tokio::time::Instant::now() + T;
    // Until every transport was refused: a candidate refused quickly may be
    // tried (and refused) again, after its backoff, before a slower
    // handshake on the other transport has been refused once.
    let transports_refused = |refused: &[(TransportKind, ErrorCode, String)]| {
        refused
            .iter()
            .map(|(t, _, _)| format!("{t:?}"))
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    while transports_refused(&refused) < 2 {
        let output = tokio::time::timeout_at(deadline, outputs.recv())
            .await
            .unwrap_or_else(|_| panic!("refusals on both transports within {T:?}, got {refused:?}"))
            .expect("the runner runs");
        match output {
            Output::Session(Update::Refused {
                candidate,
                code,
                message,
            }) => refused.push((candidate.transport, code, message)),
            Output::Session(Update::Decided { .. }) => panic!("decided with a forged token"),
            _ => {}
        }
    }
    for (transport, code, message) in &refused {
        assert_eq!(
            *code,
            ErrorCode::Unauthenticated,
            "{transport:?}: {message}"
        );
        assert!(!message.is_empty(), "{transport:?}: the relay says why");
    }
    let _ = runner.send(Command::Stop);
}
