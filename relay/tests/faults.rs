//! Bad input, shutdown and infrastructure failures, against real relays and
//! real NATS servers.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::signal::Signal;
use rallypoint_client::TransportKind::{WebSocket, WebTransport};
use rallypoint_client_native::{Peer, PeerError, Route};
use rallypoint_protocol::limits;
use rallypoint_protocol::token::Claims;
use rallypoint_protocol::v1::{ErrorCode, server_frame};
use support::*;

fn refused_code(result: Result<Peer, PeerError>) -> (ErrorCode, String) {
    match result {
        Err(PeerError::Refused { code, message, .. }) => (code, message),
        Err(other) => panic!("expected an Error frame, got {other}"),
        Ok(_) => panic!("expected an Error frame, the relay accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_a_clear_error_then_the_connection_closes() {
    let lab = Lab::two_regions(&[]).await;
    for transport in [WebSocket, WebTransport] {
        let candidate = lab.candidate(0, transport);

        let (code, message) = refused_code(
            Peer::connect(
                &candidate,
                &rallypoint_client_native::identity("not-a-jwt"),
                T,
            )
            .await,
        );
        assert_eq!(code, ErrorCode::Unauthenticated);
        assert!(message.contains("token"), "{message}");

        let forged = rallypoint_testkit::tokens::DevIssuer::new("some-other-secret").mint(
            "r",
            "mallory",
            "Mallory",
            Duration::from_secs(60),
        );
        let (code, message) = refused_code(
            Peer::connect(&candidate, &rallypoint_client_native::identity(forged), T).await,
        );
        assert_eq!(code, ErrorCode::Unauthenticated);
        assert!(message.contains("signature"), "{message}");

        let expired = lab.issuer.mint_claims(&Claims {
            sub: "u".into(),
            name: "U".into(),
            room: "r".into(),
            exp: 1_000_000,
            iss: None,
            iat: None,
            ..Default::default()
        });
        let (code, message) = refused_code(
            Peer::connect(&candidate, &rallypoint_client_native::identity(expired), T).await,
        );
        assert_eq!(code, ErrorCode::TokenExpired);
        assert!(message.contains("expired"), "{message}");

        let mut peer = Peer::connect(&candidate, &lab.identity("room-a", "u"), T)
            .await
            .unwrap();
        match peer.join("room-b", 0, T).await {
            Err(PeerError::Refused { code, message, .. }) => {
                assert_eq!(code, ErrorCode::WrongRoom);
                assert!(message.contains("room-a"), "{message}");
            }
            other => panic!("joining another room must be refused, got {other:?}"),
        }
        assert_closed(&mut peer).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversize_frames_close_only_that_connection() {
    let lab = Lab::two_regions(&[]).await;
    let (mut alice, ja) = lab.participant(0, WebSocket, "r", "alice").await;
    let (bob, _) = lab.participant(0, WebTransport, "r", "bob").await;
    wait_sees(&mut alice, &ja, &[bob.peer_id()]).await;

    let cases: Vec<(_, Bytes, Route, ErrorCode)> = vec![
        (
            WebSocket,
            Bytes::from_static(&[0xff; 12]),
            Route::Control,
            ErrorCode::MalformedFrame,
        ),
        (
            WebSocket,
            Bytes::new(),
            Route::Control,
            ErrorCode::MalformedFrame,
        ),
        (
            WebSocket,
            Bytes::from(vec![0u8; limits::MAX_FRAME + 1]),
            Route::Control,
            ErrorCode::FrameTooLarge,
        ),
        (
            WebTransport,
            Bytes::from_static(&[0xff; 12]),
            Route::Control,
            ErrorCode::MalformedFrame,
        ),
        (
            WebTransport,
            Bytes::from_static(&[0xff; 12]),
            Route::Datagram,
            ErrorCode::MalformedFrame,
        ),
        (
            WebTransport,
            Bytes::from(vec![0u8; limits::MAX_CONTROL_FRAME + 1]),
            Route::Control,
            ErrorCode::FrameTooLarge,
        ),
    ];
    for (case, (transport, bytes, route, expected)) in (0u64..).zip(cases) {
        let (mut attacker, _) = lab.participant(0, transport, "r", "mallory").await;
        eprintln!("case: {transport:?} {route:?} {} bytes", bytes.len());
        attacker.conn.send_raw(bytes, route);
        let error = attacker
            .expect("Error", T, |kind| match kind {
                server_frame::Kind::Error(e) => Some(e.clone()),
                _ => None,
            })
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", lab.relays[0].log_tail(10)));
        assert_eq!(
            error.code, expected as i32,
            "{transport:?} {route:?}: {}",
            error.message
        );
        assert_closed(&mut attacker).await;

        // The room is unaffected: bob's media still reaches alice, every
        // frame once (numbered per case, so a late frame of an earlier case
        // cannot stand in for one of this case).
        let seqs = case * 100..case * 100 + 5;
        send_audio(&bob, seqs.clone(), 200, Duration::from_millis(5)).await;
        let mut got = media_seqs_from(&mut alice, bob.peer_id(), seqs.clone(), T).await;
        got.sort_unstable();
        assert_eq!(
            got,
            seqs.collect::<Vec<_>>(),
            "after {transport:?} {route:?} abuse"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_drain_to_every_client_before_the_relay_exits() {
    let mut lab = Lab::two_regions(&["--drain-grace", "5s"]).await;
    let (mut ws, _) = lab.participant(0, WebSocket, "r", "a").await;
    let (mut wt, _) = lab.participant(0, WebTransport, "r", "b").await;
    let mut probe_only = Peer::connect(&lab.candidate(0, WebSocket), &lab.identity("r", "c"), T)
        .await
        .unwrap();

    lab.relays[0].signal(Signal::SIGTERM).unwrap();
    for peer in [&mut ws, &mut wt, &mut probe_only] {
        let drain = peer
            .expect("Drain", T, |kind| match kind {
                server_frame::Kind::Drain(d) => Some(d.clone()),
                _ => None,
            })
            .await
            .unwrap();
        assert_eq!(drain.deadline_ms, 5000);
    }
    assert!(
        lab.relays[0].is_running(),
        "the relay waits for its clients to move"
    );
    // Clients move away; the relay exits as soon as the last one has gone.
    let started = Instant::now();
    drop((ws, wt, probe_only));
    let status = lab.relays[0]
        .wait_exit(Duration::from_secs(8))
        .await
        .expect("relay exits after its clients left");
    assert!(status.success(), "relay exit status {status:?}");
    eprintln!(
        "relay exited {:?} after its clients left",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_nats_server_of_the_region_keeps_the_room_flowing() {
    let mut lab = Lab::two_regions(&[]).await;
    let (mut alice, ja) = lab.participant(0, WebSocket, "r", "alice").await; // us-east
    let (mut bob, jb) = lab.participant(1, WebTransport, "r", "bob").await; // singapore
    wait_sees(&mut alice, &ja, &[bob.peer_id()]).await;
    wait_sees(&mut bob, &jb, &[alice.peer_id()]).await;

    // Crash the us-east server the us-east relay is connected to.
    let (victim, _) = nats_connection(&lab, "us-east", "rallypoint-relay us-east-0").await;
    lab.nats.kill(&victim).await.unwrap();

    // Media keeps flowing both ways once the relay has reconnected.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut a_ok, mut b_ok) = (false, false);
    let mut seq = 0;
    while !(a_ok && b_ok) {
        assert!(
            Instant::now() < deadline,
            "room did not recover: alice {a_ok}, bob {b_ok}"
        );
        seq += 1;
        alice.send_media(
            rallypoint_protocol::v1::TrackKind::Audio,
            seq,
            0,
            false,
            Bytes::from_static(b"a"),
        );
        bob.send_media(
            rallypoint_protocol::v1::TrackKind::Audio,
            seq,
            0,
            false,
            Bytes::from_static(b"b"),
        );
        let (a, b) = tokio::join!(
            media_within(&mut alice, Duration::from_millis(200)),
            media_within(&mut bob, Duration::from_millis(200)),
        );
        a_ok |= !a.is_empty();
        b_ok |= !b.is_empty();
    }
}

/// A connection that falls silent is closed once `--idle-timeout` has
/// passed since its last frame, with an Error saying why; one that keeps
/// probing stays, however long past the timeout it lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_idle_timeout_and_a_talking_one_stays() {
    const IDLE: Duration = Duration::from_secs(1);
    let lab = Lab::two_regions(&["--idle-timeout", "1s"]).await;
    for transport in [WebSocket, WebTransport] {
        let mut talker = lab
            .connect(0, transport, &lab.identity("r", "talker"))
            .await;
        // The talker probes from now on, while the silent client connects
        // and then says nothing.
        let talking = async {
            let talking_since = Instant::now();
            let mut answered = 0;
            for seq in 0..12 {
                // 250 ms apart for 3 s: three idle timeouts.
                talker.probe(seq, 0);
                let answer = talker
                    .expect("ProbeAck", Duration::from_millis(250), |kind| match kind {
                        server_frame::Kind::ProbeAck(ack) if ack.seq == seq => Some(()),
                        _ => None,
                    })
                    .await;
                match answer {
                    Ok(()) => answered += 1,
                    Err(PeerError::Timeout { .. }) => {}
                    Err(other) => panic!("{transport:?}: the talking client was refused: {other}"),
                }
                tokio::time::sleep_until(
                    (talking_since + Duration::from_millis(250 * (seq + 1))).into(),
                )
                .await;
            }
            answered
        };
        let silence = async {
            // Its last frame, Hello, goes out after `connecting` and before
            // `connected`.
            let connecting = Instant::now();
            let mut silent = lab
                .connect(0, transport, &lab.identity("r", "silent"))
                .await;
            let connected = Instant::now();
            let refusal = silent
                .expect("an Error", T, |_| None::<()>)
                .await
                .expect_err("nothing but an Error ends the wait");
            assert_closed(&mut silent).await;
            (refusal, connecting.elapsed(), connected.elapsed())
        };
        let (answered, (refusal, since_connecting, since_connected)) =
            tokio::join!(talking, silence);
        assert!(
            answered >= 10,
            "{transport:?}: {answered} of 12 probes answered"
        );
        let PeerError::Refused { message, .. } = refusal else {
            panic!("{transport:?}: expected the relay's Error, got {refusal}");
        };
        assert!(
            message.contains("nothing received for"),
            "{transport:?}: {message}"
        );
        assert!(
            since_connecting >= IDLE && since_connected < IDLE * 3,
            "{transport:?}: the silent connection was closed {since_connecting:?} after it began \
             connecting, {since_connected:?} after Welcome (idle timeout {IDLE:?})"
        );
    }
}

async fn assert_closed(peer: &mut Peer) {
    let end = tokio::time::timeout(T, async { while peer.recv().await.is_some() {} }).await;
    assert!(
        end.is_ok(),
        "the relay must close the connection after the Error"
    );
}

/// What `peer` heard about `other` within `window`: "joined", "moved" and
/// "left", in order.
async fn presence_of(peer: &mut Peer, other: &str, window: Duration) -> Vec<&'static str> {
    let mut heard = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(received)) = tokio::time::timeout_at(deadline, peer.recv()).await {
        let about = |p: &Option<rallypoint_protocol::v1::Participant>| {
            p.as_ref().is_some_and(|p| p.peer_id == other)
        };
        match received.frame.kind {
            Some(server_frame::Kind::PeerJoined(j)) if about(&j.peer) => heard.push("joined"),
            Some(server_frame::Kind::PeerMoved(m)) if about(&m.peer) => heard.push("moved"),
            Some(server_frame::Kind::PeerLeft(l)) if l.peer_id == other => heard.push("left"),
            _ => {}
        }
    }
    heard
}

/// The regions partitioned for 30 s and healed: each side sees the other
/// leave (once its presence grace has passed), then come back — once, with
/// no ghost left behind and no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_cut_for_30_s_is_a_leave_then_a_join_with_no_ghosts() {
    // Keep the idle test connections open through the partition.
    let mut lab = Lab::two_regions_partitionable(&["--idle-timeout", "120s"]).await;
    let (mut alice, ja) = lab.participant(0, WebSocket, "split", "alice").await;
    let (mut bob, jb) = lab.participant(1, WebSocket, "split", "bob").await;
    let (alice_id, bob_id) = (alice.peer_id().to_owned(), bob.peer_id().to_owned());
    wait_sees(&mut alice, &ja, &[&bob_id]).await;
    wait_sees(&mut bob, &jb, &[&alice_id]).await;

    let cut_at = Instant::now();
    lab.nats.cut_gateways();
    let (during_alice, during_bob) = tokio::join!(
        presence_of(&mut alice, &bob_id, Duration::from_secs(30)),
        presence_of(&mut bob, &alice_id, Duration::from_secs(30)),
    );
    assert_eq!(during_alice, ["left"], "alice during the cut");
    assert_eq!(during_bob, ["left"], "bob during the cut");

    lab.nats.heal_gateways().await.expect("the gateways heal");
    eprintln!("healed {:?} after the cut", cut_at.elapsed());
    let (after_alice, after_bob) = tokio::join!(
        presence_of(&mut alice, &bob_id, Duration::from_secs(8)),
        presence_of(&mut bob, &alice_id, Duration::from_secs(8)),
    );
    assert_eq!(after_alice, ["joined"], "alice after the heal");
    assert_eq!(after_bob, ["joined"], "bob after the heal");

    // And media flows again across the healed gateway.
    send_audio(&alice, 0..5, 100, Duration::from_millis(20)).await;
    let got = media_seqs_from(&mut bob, &alice_id, 0..5, T).await;
    assert_eq!(got.len(), 5, "media after the heal: {got:?}");
}
