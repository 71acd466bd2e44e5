//! `wss://` served by the relay itself (`--ws-tls`), with the development
//! certificate pinned by hash, against real relays and NATS servers.

mod support;

use std::time::Duration;

use rallypoint_client::TransportKind::{WebSocket, WebTransport};
use rallypoint_client_native::Connection;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_works_over_wss_pinned_to_the_development_certificate() {
    let lab = Lab::two_regions(&["--ws-tls"]).await;
    let candidate = lab.candidate(0, WebSocket);
    assert!(candidate.url.starts_with("wss://"), "{}", candidate.url);
    assert_eq!(
        candidate.cert_hash,
        lab.candidate(0, WebTransport).cert_hash,
        "one identity for both transports"
    );

    let (mut alice, ja) = lab.participant(0, WebSocket, "r", "alice").await;
    let (mut bob, jb) = lab.participant(1, WebTransport, "r", "bob").await;
    wait_sees(&mut alice, &ja, &[bob.peer_id()]).await;
    wait_sees(&mut bob, &jb, &[alice.peer_id()]).await;
    send_audio(&alice, 0..10, 200, Duration::from_millis(5)).await;
    let got = media_seqs_from(&mut bob, alice.peer_id(), 0..10, T).await;
    assert_eq!(got.len(), 10, "alice's media over wss reaches bob: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_refuses_a_certificate_the_candidate_does_not_name() {
    let lab = Lab::two_regions(&["--ws-tls"]).await;

    let mut wrong = lab.candidate(0, WebSocket);
    wrong.cert_hash = Some("ab".repeat(32));
    let error = Connection::connect(&wrong, T).await.err().expect("refused");
    eprintln!("wrong hash: {error}");
    assert!(
        error
            .to_string()
            .contains("does not match the candidate's cert_hash"),
        "{error}"
    );

    // Without a hash the system's roots decide, and none vouches for a
    // self-signed development certificate.
    let mut unpinned = lab.candidate(0, WebSocket);
    unpinned.cert_hash = None;
    let error = Connection::connect(&unpinned, T)
        .await
        .err()
        .expect("refused");
    eprintln!("no hash: {error}");
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");

    // The relay keeps serving well-behaved clients.
    Connection::connect(&lab.candidate(0, WebSocket), T)
        .await
        .expect("the pinned candidate still connects");
}
