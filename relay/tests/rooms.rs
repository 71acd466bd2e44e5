//! Rooms across regions, with real NATS servers and real relay processes.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use rallypoint_client::TransportKind::{WebSocket, WebTransport};
use rallypoint_protocol::v1::{LeaveReason, server_frame};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_in_two_regions_share_a_room_over_mixed_transports() {
    let lab = Lab::two_regions(&[]).await;
    // Relay 0 is us-east, relay 1 is singapore.
    let (mut alice, ja) = lab.participant(0, WebSocket, "standup", "alice").await;
    let (mut bob, jb) = lab.participant(1, WebTransport, "standup", "bob").await;
    let (mut carol, jc) = lab.participant(1, WebSocket, "standup", "carol").await;
    let (mut dave, jd) = lab.participant(0, WebTransport, "standup", "dave").await;
    let (mut eve, _) = lab.participant(0, WebSocket, "other-room", "eve").await;
    let ids: Vec<String> = [&alice, &bob, &carol, &dave]
        .iter()
        .map(|p| p.peer_id().to_owned())
        .collect();

    for (peer, joined) in [
        (&mut alice, &ja),
        (&mut bob, &jb),
        (&mut carol, &jc),
        (&mut dave, &jd),
    ] {
        let others: Vec<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|id| *id != peer.peer_id())
            .collect();
        wait_sees(peer, joined, &others).await;
    }

    const FRAMES: u64 = 20;
    tokio::join!(
        send_audio(&alice, 0..FRAMES, 300, Duration::from_millis(10)),
        send_audio(&bob, 0..FRAMES, 300, Duration::from_millis(10)),
        send_audio(&carol, 0..FRAMES, 300, Duration::from_millis(10)),
        send_audio(&dave, 0..FRAMES, 300, Duration::from_millis(10)),
    );
    let window = Duration::from_millis(1500);
    let (a, b, c, d, e) = tokio::join!(
        media_within(&mut alice, window),
        media_within(&mut bob, window),
        media_within(&mut carol, window),
        media_within(&mut dave, window),
        media_within(&mut eve, window),
    );

    for (name, own_id, received) in [
        ("alice", &ids[0], &a),
        ("bob", &ids[1], &b),
        ("carol", &ids[2], &c),
        ("dave", &ids[3], &d),
    ] {
        let mut by_sender: HashMap<&str, Vec<u64>> = HashMap::new();
        for m in received {
            by_sender.entry(m.sender.as_str()).or_default().push(m.seq);
        }
        assert!(
            !by_sender.contains_key(own_id.as_str()),
            "{name} got its own media back"
        );
        for sender in ids.iter().filter(|id| *id != own_id) {
            let seqs = by_sender.get(sender.as_str()).cloned().unwrap_or_default();
            assert_eq!(
                seqs,
                (0..FRAMES).collect::<Vec<_>>(),
                "{name} must receive every frame of {sender}, in order"
            );
        }
    }
    assert!(
        e.is_empty(),
        "a participant of another room received {} frames",
        e.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_only_connection_is_not_in_the_room() {
    let lab = Lab::two_regions(&[]).await;
    let (mut alice, _) = lab.participant(0, WebSocket, "r", "alice").await;
    let mut tester = rallypoint_client_native::Peer::connect(
        &lab.candidate(1, WebTransport),
        &lab.identity("r", "bob"),
        T,
    )
    .await
    .unwrap();
    for seq in 0..5 {
        tester.probe(seq, 1000 + seq);
    }
    let acks = tester
        .expect("5 ProbeAcks", T, {
            let mut seen = 0;
            move |kind| match kind {
                server_frame::Kind::ProbeAck(ack) => {
                    assert_eq!(ack.region, "singapore");
                    assert_eq!(ack.relay_id, "singapore-0");
                    assert_eq!(ack.client_send_us, 1000 + ack.seq);
                    assert!(ack.relay_send_us >= ack.relay_recv_us);
                    seen += 1;
                    (seen == 5).then_some(seen)
                }
                _ => None,
            }
        })
        .await
        .unwrap();
    assert_eq!(acks, 5);
    send_audio(&alice, 0..3, 100, Duration::from_millis(5)).await;
    let frames = media_within(&mut tester, Duration::from_millis(700)).await;
    assert!(
        frames.is_empty(),
        "a candidate under test received room media"
    );
    let events = presence_within(&mut alice, Duration::from_millis(700)).await;
    assert!(
        events.is_empty(),
        "the room was told about a probe-only connection: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_moves_relay_is_seen_moving_not_leaving() {
    // The grace must outlast bob's reconnect (a new handshake on a loaded
    // machine) and a late beat; short enough to keep the test quick.
    let lab = Lab::two_regions(&["--presence-grace", "3s", "--roster-beat", "300ms"]).await;
    let (mut alice, _) = lab.participant(0, WebSocket, "r", "alice").await;
    let identity = lab.identity("r", "bob");
    let mut bob =
        rallypoint_client_native::Peer::connect(&lab.candidate(1, WebSocket), &identity, T)
            .await
            .unwrap();
    bob.join("r", 0, T).await.unwrap();
    let bob_id = bob.peer_id().to_owned();
    wait_sees(&mut alice, &Default::default(), &[&bob_id]).await;

    // Bob's relay "dies" for him: he moves to us-east with the same identity.
    bob.conn.abort();
    let mut bob2 =
        rallypoint_client_native::Peer::connect(&lab.candidate(0, WebTransport), &identity, T)
            .await
            .unwrap();
    assert_eq!(bob2.peer_id(), bob_id, "same identity on every relay");
    bob2.join("r", 1, T).await.unwrap();

    let moved = alice
        .expect("PeerMoved", T, |kind| match kind {
            server_frame::Kind::PeerMoved(m) => Some(m.clone()),
            server_frame::Kind::PeerLeft(l) => panic!("saw a leave instead of a move: {l:?}"),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(moved.peer.unwrap().peer_id, bob_id);
    assert_eq!(moved.from_region, "singapore");
    // Well past the grace period: still no leave.
    let later = presence_within(&mut alice, Duration::from_millis(3500)).await;
    assert!(
        later
            .iter()
            .all(|e| !matches!(e, server_frame::Kind::PeerLeft(_))),
        "a moved participant was reported as left: {later:?}"
    );

    // Carol vanishes for good: she is reported as left after the grace period.
    let (carol, _) = lab.participant(1, WebSocket, "r", "carol").await;
    let carol_id = carol.peer_id().to_owned();
    wait_sees(&mut alice, &Default::default(), &[&carol_id]).await;
    carol.conn.abort();
    let left = alice
        .expect("PeerLeft", T, |kind| match kind {
            server_frame::Kind::PeerLeft(l) => Some(l.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(left.peer_id, carol_id);
    assert_eq!(left.reason, LeaveReason::TimedOut as i32);

    // Bob hangs up: reported at once as a hang-up.
    bob2.leave();
    let left = alice
        .expect("PeerLeft", T, |kind| match kind {
            server_frame::Kind::PeerLeft(l) => Some(l.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(left.peer_id, bob_id);
    assert_eq!(left.reason, LeaveReason::Hangup as i32);
}

/// Room events (not media, not probe answers) received within `window`.
async fn presence_within(
    peer: &mut rallypoint_client_native::Peer,
    window: Duration,
) -> Vec<server_frame::Kind> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(received)) = tokio::time::timeout_at(deadline, peer.recv()).await {
        if let Some(
            kind @ (server_frame::Kind::PeerJoined(_)
            | server_frame::Kind::PeerLeft(_)
            | server_frame::Kind::PeerMoved(_)),
        ) = received.frame.kind
        {
            events.push(kind)
        }
    }
    events
}
