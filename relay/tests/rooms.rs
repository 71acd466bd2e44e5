//! Rooms across regions, with real NATS servers and real relay processes.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use rallypoint_client::TransportKind::{WebSocket, WebTransport};
use rallypoint_client_native::{Peer, PeerError};
use rallypoint_protocol::v1::{LeaveReason, TrackKind, server_frame};
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

/// A relay gives its own clients' media to its other clients itself: NATS
/// carries the frames to the other relays only, and the relay's connection
/// does not hear them back (no echo) — one copy each, with no round trip
/// through nats-server for the receivers next door.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relays_own_clients_hear_each_other_directly_not_back_through_nats() {
    let lab = Lab::two_regions(&[]).await;
    let (mut alice, _) = lab.participant(0, WebSocket, "r", "alice").await; // us-east
    // WebSocket throughout: every frame must arrive, which datagrams do not
    // promise.
    let (mut bob, jb) = lab.participant(0, WebSocket, "r", "bob").await; // us-east
    let (mut carol, jc) = lab.participant(1, WebSocket, "r", "carol").await; // singapore
    wait_sees(&mut bob, &jb, &[alice.peer_id(), carol.peer_id()]).await;
    wait_sees(&mut carol, &jc, &[alice.peer_id(), bob.peer_id()]).await;

    const RELAY: &str = "rallypoint-relay us-east-0";
    let (server, before) = nats_connection(&lab, "us-east", RELAY).await;
    const FRAMES: u64 = 200;
    let sender = alice.peer_id().to_owned();
    let (_, bob_got, carol_got) = tokio::join!(
        send_audio(&alice, 0..FRAMES, 120, Duration::from_millis(5)),
        media_seqs_from(&mut bob, &sender, 0..FRAMES, T),
        media_seqs_from(&mut carol, &sender, 0..FRAMES, T),
    );
    let every_frame: Vec<u64> = (0..FRAMES).collect();
    assert_eq!(
        bob_got, every_frame,
        "bob, on alice's relay, hears every frame once, in order"
    );
    assert_eq!(
        carol_got, every_frame,
        "carol, on the other relay, hears every frame once, in order"
    );
    let late = media_within(&mut bob, Duration::from_millis(300)).await;
    assert!(
        late.iter().all(|m| m.sender != sender),
        "bob heard {} of alice's frames twice",
        late.len()
    );

    let (server_after, after) = nats_connection(&lab, "us-east", RELAY).await;
    assert_eq!(
        (server, &before["cid"]),
        (server_after, &after["cid"]),
        "the relay reconnected to NATS mid-test"
    );
    let count = |stats: &serde_json::Value, field: &str| stats[field].as_u64().unwrap();
    let published = count(&after, "in_msgs") - count(&before, "in_msgs");
    let delivered = count(&after, "out_msgs") - count(&before, "out_msgs");
    assert!(
        published >= FRAMES,
        "the relay published {published} messages for {FRAMES} frames: the other relay's clients need them"
    );
    assert!(
        delivered < FRAMES / 4,
        "nats-server sent the relay {delivered} messages while its client sent {FRAMES} frames \
         and nobody else sent any: the relay's own media came back to it"
    );

    // A keyframe request between two clients of the relay is passed on
    // directly, once.
    bob.request_keyframe(alice.peer_id(), TrackKind::Video);
    let keyframe_request = |kind: &server_frame::Kind| match kind {
        server_frame::Kind::KeyframeRequest(r) => Some(r.kind),
        _ => None,
    };
    let asked = alice.expect("KeyframeRequest", T, keyframe_request).await;
    assert_eq!(asked.unwrap(), TrackKind::Video as i32);
    let again = alice
        .expect(
            "a second KeyframeRequest",
            Duration::from_millis(500),
            keyframe_request,
        )
        .await;
    assert!(
        matches!(again, Err(PeerError::Timeout { .. })),
        "one request, one KeyframeRequest: {again:?}"
    );
}

/// A room whose participants are all on one relay keeps its media off
/// NATS: a publish would reach nobody. Its media crosses again as soon as
/// another relay serves the room — for a prepared standby, which is in no
/// roster (its relay's beats say it listens), and for a participant:
/// every frame each side sends once it is in the room (the decision's
/// timing is unit-tested in `rooms::audience`), and long after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_on_one_relay_keeps_its_media_off_nats_until_another_relay_serves_it() {
    // Beats every 200 ms: a relay not heard from for 1.6 s (three beats and
    // a second) serves the room no longer, and a relay new to a room
    // publishes for its first 1.2 s (a beat and a second).
    let lab = Lab::two_regions(&["--roster-beat", "200ms"]).await;
    let span_passed = Duration::from_millis(2_000);
    let identity = lab.identity("r", "alice");
    let mut alice = lab.connect(0, WebSocket, &identity).await; // us-east
    let ja = alice.join("r", 0, T).await.unwrap();
    let (mut bob, jb) = lab.participant(0, WebSocket, "r", "bob").await; // us-east
    wait_sees(&mut alice, &ja, &[bob.peer_id()]).await;
    tokio::time::sleep(span_passed).await;

    const RELAY: &str = "rallypoint-relay us-east-0";
    const FRAMES: u64 = 100;
    let burst = |n: u64| n * FRAMES..(n + 1) * FRAMES;
    let (server, before) = nats_connection(&lab, "us-east", RELAY).await;
    let kept_before = lab.relays[0].stats().await.unwrap()["media_kept_here"]
        .as_u64()
        .unwrap();
    let alice_got = audio_heard(&bob, &mut alice, burst(0)).await;
    assert_eq!(alice_got, burst(0).collect::<Vec<_>>(), "alice hears bob");
    // The relay hands a frame to its room task before it publishes it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (server_after, after) = nats_connection(&lab, "us-east", RELAY).await;
    assert_eq!(
        (server, &before["cid"]),
        (server_after, &after["cid"]),
        "the relay reconnected to NATS mid-test"
    );
    let published = after["in_msgs"].as_u64().unwrap() - before["in_msgs"].as_u64().unwrap();
    assert!(
        published < FRAMES / 4,
        "the relay published {published} messages while bob sent {FRAMES} frames to a room \
         no other relay serves"
    );
    let stats = lab.relays[0].stats().await.unwrap();
    let kept = stats["media_kept_here"].as_u64().unwrap() - kept_before;
    assert_eq!(kept, FRAMES, "frames counted as kept here: {stats}");

    // Alice prepares a standby in singapore, which did not serve the room;
    // bob's media reaches it, still after the span.
    let mut standby = lab.connect(1, WebSocket, &identity).await;
    standby.prepare("r");
    tokio::time::sleep(span_passed).await;
    let standby_got = audio_heard(&bob, &mut standby, burst(1)).await;
    assert_eq!(
        standby_got,
        burst(1).collect::<Vec<_>>(),
        "alice's standby in singapore hears bob"
    );
    standby.leave_moving();
    tokio::time::sleep(span_passed).await;

    // Carol joins through singapore once it has stopped serving the room.
    // Her first frames go out before singapore has heard of anyone else...
    let (mut carol, _) = lab.participant(1, WebSocket, "r", "carol").await;
    let carols = carol.peer_id().to_owned();
    let alice_got = audio_heard(&carol, &mut alice, burst(2)).await;
    assert_eq!(alice_got, burst(2).collect::<Vec<_>>(), "alice hears carol");
    // ... and bob's from the moment he is told of her.
    wait_sees(&mut bob, &jb, &[&carols]).await;
    let carol_got = audio_heard(&bob, &mut carol, burst(3)).await;
    assert_eq!(carol_got, burst(3).collect::<Vec<_>>(), "carol hears bob");
    // Quiet for a span, the room still has her.
    tokio::time::sleep(span_passed).await;
    let carol_got = audio_heard(&bob, &mut carol, burst(4)).await;
    assert_eq!(
        carol_got,
        burst(4).collect::<Vec<_>>(),
        "carol still hears bob"
    );
}

/// A relay whose NATS connection broke cannot know who began serving its
/// rooms meanwhile (their announcements went nowhere), so after it
/// reconnects it publishes its rooms' media for a span — although no other
/// relay serves this room — and then keeps it here again. Here its NATS
/// server is killed and it reconnects to another of its cluster. (The room
/// task notices either the outage on its tick or, for a reconnect between
/// two ticks, the connection's count of connects; on this machine the
/// outage lasts long enough for a tick, so the second path is not what
/// this test isolates; `rooms::audience`'s unit tests cover it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_nats_reconnect_a_relay_publishes_its_rooms_media_for_a_span() {
    let mut lab = Lab::two_regions(&["--roster-beat", "200ms"]).await;
    let span_passed = Duration::from_millis(2_000);
    let (mut alice, ja) = lab.participant(0, WebSocket, "r", "alice").await;
    let (bob, _) = lab.participant(0, WebSocket, "r", "bob").await;
    wait_sees(&mut alice, &ja, &[bob.peer_id()]).await;
    tokio::time::sleep(span_passed).await;

    const RELAY: &str = "rallypoint-relay us-east-0";
    const FRAMES: u64 = 100;
    // Bob sends a burst of FRAMES to alice (half a second): how many of
    // them the relay published to NATS.
    let published_of_burst = async |lab: &Lab, alice: &mut Peer, n: u64| {
        let published = async || {
            lab.relays[0].stats().await.unwrap()["media_published"]
                .as_u64()
                .unwrap()
        };
        let before = published().await;
        let heard = audio_heard(&bob, alice, n * FRAMES..(n + 1) * FRAMES).await;
        assert_eq!(heard.len() as u64, FRAMES, "alice hears bob's burst {n}");
        // The relay hands a frame to its room task before it publishes it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        published().await - before
    };
    let kept_phase = published_of_burst(&lab, &mut alice, 0).await;
    assert!(
        kept_phase < FRAMES / 4,
        "published {kept_phase} of {FRAMES} before the reconnect"
    );

    let (server, _) = nats_connection(&lab, "us-east", RELAY).await;
    lab.nats.kill(&server).await.unwrap();
    let reconnected_by = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match find_nats_connection(&lab, "us-east", RELAY).await {
            Some((now_on, _)) if now_on != server => break,
            _ if tokio::time::Instant::now() > reconnected_by => {
                panic!("the relay did not reconnect to another us-east NATS server in 10 s")
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    // From the moment the new connection shows: the room task looks every
    // 250 ms, so at least half of the burst goes out.
    let after_reconnect = published_of_burst(&lab, &mut alice, 1).await;
    assert!(
        after_reconnect >= FRAMES / 4,
        "published only {after_reconnect} of {FRAMES} frames right after reconnecting to NATS"
    );

    // A span later nobody else was heard: the media stays here again.
    tokio::time::sleep(span_passed).await;
    let later = published_of_burst(&lab, &mut alice, 2).await;
    assert!(
        later < FRAMES / 4,
        "published {later} of {FRAMES} a span after the reconnect"
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
    let mut bob = lab.connect(1, WebSocket, &identity).await;
    bob.join("r", 0, T).await.unwrap();
    let bob_id = bob.peer_id().to_owned();
    wait_sees(&mut alice, &Default::default(), &[&bob_id]).await;

    // Bob's relay "dies" for him: he moves to us-east with the same identity.
    bob.conn.abort();
    let mut bob2 = lab.connect(0, WebTransport, &identity).await;
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

/// A participant's microphone and camera reach everyone in the room, across
/// regions: at once when they change, in `Joined` for whoever comes later,
/// and carried over a move to another relay by the new `Join`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microphone_and_camera_state_reach_the_room_across_regions_and_moves() {
    use rallypoint_protocol::v1::{ClientFrame, Join, MediaState, client_frame};

    let lab = Lab::two_regions(&[]).await;
    let identity = lab.identity("standup", "alice");
    let mut alice = lab.connect(0, WebSocket, &identity).await;
    alice.join("standup", 0, T).await.unwrap();
    let (mut bob, jb) = lab.participant(1, WebTransport, "standup", "bob").await;
    wait_sees(&mut bob, &jb, &[alice.peer_id()]).await;

    let muted = MediaState {
        muted: true,
        camera_off: false,
        sharing_screen: false,
    };
    alice
        .conn
        .send(&ClientFrame::of(client_frame::Kind::MediaState(muted)));
    let changed = state_change_within(&mut bob, Duration::from_secs(5))
        .await
        .expect("bob hears that alice muted, through the other region");
    assert_eq!(changed.peer_id, alice.peer_id());
    assert_eq!(changed.state, Some(muted));

    // Carol comes later, in alice's region: Joined says alice is muted.
    let (_carol, jc) = lab.participant(0, WebSocket, "standup", "carol").await;
    let alice_there = jc
        .participants
        .iter()
        .find(|p| p.peer_id == alice.peer_id())
        .expect("carol's Joined lists alice");
    assert_eq!(alice_there.state, Some(muted));

    // Alice moves to singapore with her camera now off too: bob sees the
    // move carry the new state.
    let both_off = MediaState {
        muted: true,
        camera_off: true,
        sharing_screen: false,
    };
    alice.conn.abort();
    let moved = rallypoint_client_native::Peer::connect(&lab.candidate(1, WebSocket), &identity, T)
        .await
        .expect("alice reaches the second relay");
    assert_eq!(moved.peer_id(), alice.peer_id(), "the same participant");
    moved
        .conn
        .send(&ClientFrame::of(client_frame::Kind::Join(Join {
            room: "standup".into(),
            join_seq: 1,
            state: Some(both_off),
            ..Default::default()
        })));
    let seen = bob
        .expect("PeerMoved", T, |kind| match kind {
            server_frame::Kind::PeerMoved(m) => m.peer.clone(),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(seen.state, Some(both_off));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_state_before_join_is_refused_and_a_flood_of_changes_is_bounded() {
    use rallypoint_protocol::v1::{ClientFrame, MediaState, client_frame};

    let lab = Lab::two_regions(&[]).await;
    // Probe-only: announcing a state is a protocol violation.
    let identity = lab.identity("standup", "mallory");
    let mut probe_only = rallypoint_client_native::Peer::connect(
        &lab.candidate(0, WebSocket),
        &identity,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    probe_only
        .conn
        .send(&ClientFrame::of(client_frame::Kind::MediaState(
            MediaState::default(),
        )));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let refusal = loop {
        match tokio::time::timeout_at(deadline, probe_only.recv()).await {
            Ok(Some(received)) => {
                if let Some(server_frame::Kind::Error(e)) = received.frame.kind {
                    break Some(e);
                }
            }
            _ => break None,
        }
    };
    let refusal = refusal.expect("the relay says why");
    assert!(
        refusal.message.contains("before Join"),
        "{}",
        refusal.message
    );

    // In a room, a client toggling a thousand times is held to its budget:
    // the others see a bounded number of changes, not a thousand.
    let (flooder, _) = lab.participant(0, WebSocket, "flood", "flooder").await;
    let (mut watcher, jw) = lab.participant(1, WebSocket, "flood", "watcher").await;
    wait_sees(&mut watcher, &jw, &[flooder.peer_id()]).await;
    for i in 0..1000 {
        let state = MediaState {
            muted: i % 2 == 0,
            camera_off: false,
            sharing_screen: false,
        };
        flooder
            .conn
            .send(&ClientFrame::of(client_frame::Kind::MediaState(state)));
    }
    let mut changes = 0;
    while state_change_within(&mut watcher, Duration::from_millis(1500))
        .await
        .is_some()
    {
        changes += 1;
        assert!(changes <= 40, "the watcher saw over 40 of 1000 changes");
    }
    assert!(changes >= 1, "changes within the budget still arrive");
}

/// The next `PeerState` `peer` receives within `window`.
async fn state_change_within(
    peer: &mut rallypoint_client_native::Peer,
    window: Duration,
) -> Option<rallypoint_protocol::v1::PeerState> {
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(received)) = tokio::time::timeout_at(deadline, peer.recv()).await {
        if let Some(server_frame::Kind::PeerState(changed)) = received.frame.kind {
            return Some(changed);
        }
    }
    None
}

/// A shared screen is its own track: the relay forwards it next to the
/// camera, each with its own numbering, and a client asking for the
/// screen's keyframe reaches the sharer with the screen's kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_screen_travels_as_its_own_track() {
    use bytes::Bytes;

    let lab = Lab::two_regions(&[]).await;
    let (mut sharer, _) = lab.participant(0, WebTransport, "demo", "sharer").await;
    let (mut viewer, jv) = lab.participant(1, WebSocket, "demo", "viewer").await;
    wait_sees(&mut viewer, &jv, &[sharer.peer_id()]).await;

    for seq in 0..5u64 {
        for kind in [TrackKind::Video, TrackKind::Screen] {
            let size = if kind == TrackKind::Screen {
                20_000
            } else {
                2_000
            };
            sharer.send_media(kind, seq, 0, seq == 0, Bytes::from(vec![7u8; size]));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = media_until(&mut viewer, 10, T).await;
    let seqs = |kind: TrackKind| -> Vec<u64> {
        received
            .iter()
            .filter(|m| m.kind == kind as i32)
            .map(|m| m.seq)
            .collect()
    };
    assert_eq!(
        seqs(TrackKind::Screen),
        [0, 1, 2, 3, 4],
        "every screen frame"
    );
    assert_eq!(seqs(TrackKind::Video), [0, 1, 2, 3, 4], "and the camera's");

    viewer.request_keyframe(sharer.peer_id(), TrackKind::Screen);
    let asked = sharer
        .expect("KeyframeRequest", T, |kind| match kind {
            server_frame::Kind::KeyframeRequest(r) => Some(r.kind),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(asked, TrackKind::Screen as i32);
}

/// A room's task runs, and the gateways forward the room here, while a
/// slot is held: every way out of a room — and every refusal — must free
/// the slot it took, or the relay keeps serving a room nobody is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_out_of_a_room_frees_its_slot() {
    let lab = Lab::two_regions(&["--presence-grace", "1s", "--max-room-size", "1"]).await;
    let relay = &lab.relays[1];
    let lab = &lab;
    let connect = |room: &str, user: &str| {
        let identity = lab.identity(room, user);
        async move { lab.connect(1, WebSocket, &identity).await }
    };
    // Waits until the relay serves `rooms` rooms (one room task each).
    let rooms_become = |rooms: u64, path: &'static str| async move {
        let served = relay
            .stats_once(Duration::from_secs(5), |stats| {
                stats["rooms_served"] == rooms && stats["rooms_active"] == rooms
            })
            .await;
        if let Err(stats) = served {
            panic!("{path}: not {rooms} rooms served within 5 s: {stats}");
        }
    };
    // Each path first takes the room's slot (the room is served), then
    // frees it.
    let served = |path| rooms_become(1, path);
    let freed = |path| rooms_become(0, path);

    let mut peer = connect("a", "hangs-up").await;
    peer.join("a", 0, T).await.unwrap();
    served("a Join").await;
    peer.leave();
    freed("a Join, then a hang-up").await;

    let mut peer = connect("a", "vanishes").await;
    peer.join("a", 0, T).await.unwrap();
    served("a Join").await;
    peer.conn.abort();
    freed("a Join, then a lost connection (after its grace)").await;

    let mut peer = connect("a", "moves-away").await;
    peer.join("a", 0, T).await.unwrap();
    peer.leave_moving();
    served("a Leave to move (held in its grace)").await;
    peer.conn.abort();
    freed("a Join, a Leave to move, then a closed connection").await;

    let peer = connect("a", "prepares-then-leaves").await;
    peer.prepare("a");
    served("a preparation").await;
    peer.leave_moving();
    freed("a preparation, then a Leave").await;

    let peer = connect("a", "prepares-then-closes").await;
    peer.prepare("a");
    served("a preparation").await;
    peer.conn.abort();
    freed("a preparation, then a closed connection").await;

    let mut peer = connect("a", "prepares-then-joins").await;
    peer.prepare("a");
    served("a preparation").await;
    peer.join("a", 0, T).await.unwrap();
    served("a Join after a preparation").await;
    peer.leave();
    freed("a preparation, a Join, then a hang-up").await;

    // A full room refuses; what the refusals took is freed once its one
    // participant hangs up.
    let (occupant, _) = lab.participant(1, WebSocket, "full", "occupant").await;
    let mut refused = connect("full", "refused").await;
    refused
        .join("full", 0, T)
        .await
        .expect_err("the room is full");
    let mut prepared = connect("full", "prepared-then-refused").await;
    prepared.prepare("full");
    tokio::time::sleep(Duration::from_millis(200)).await;
    prepared
        .join("full", 0, T)
        .await
        .expect_err("the room is full");
    served("a full room, two Joins refused").await;
    occupant.leave();
    freed("Joins refused, the room full (one prepared first)").await;
}

/// A relay new to a room admits a join before the other relays' rosters
/// reach it, so joins through two relays could fill a room past
/// `--max-room-size`. Once the relays have heard of each other's
/// participants, the later one is refused (`RoomFull`) and leaves; the
/// earlier stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_filled_past_its_size_through_two_relays_refuses_the_later_join() {
    use rallypoint_client_native::PeerError;
    use rallypoint_protocol::v1::ErrorCode;

    let lab = Lab::two_regions(&["--max-room-size", "1"]).await;
    let (mut first, _) = lab.participant(0, WebSocket, "one", "first").await;
    // Relay 1 serves nobody in the room yet: it answers before it knows.
    let identity = lab.identity("one", "second");
    let mut second = lab.connect(1, WebSocket, &identity).await;
    let second_id = second.peer_id().to_owned();
    let refusal = match second.join("one", 0, T).await {
        // Admitted in the race: refused once relay 1 hears of `first`.
        Ok(_) => {
            second
                .expect("a refusal", Duration::from_secs(5), |_| None::<()>)
                .await
        }
        refused => refused.map(|_| ()),
    };
    match refusal {
        Err(PeerError::Refused { code, message, .. }) => {
            assert_eq!(code, ErrorCode::RoomFull, "{message}")
        }
        other => panic!("a second participant stayed in a room of one: {other:?}"),
    }
    // The first is never refused, and whatever it was told of the second
    // ends with it gone.
    let mut told = Vec::new();
    let window = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(received)) = tokio::time::timeout_at(window, first.recv()).await {
        match received.frame.kind {
            Some(server_frame::Kind::Error(e)) => {
                panic!("the first participant was refused: {e:?}")
            }
            Some(server_frame::Kind::PeerJoined(j))
                if j.peer.as_ref().unwrap().peer_id == second_id =>
            {
                told.push("joined")
            }
            Some(server_frame::Kind::PeerLeft(l)) if l.peer_id == second_id => told.push("left"),
            _ => {}
        }
    }
    assert!(
        told.is_empty() || told == ["joined", "left"],
        "the first participant was told {told:?} of the second"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (stay, refused) = (
            lab.relays[0].stats().await.unwrap(),
            lab.relays[1].stats().await.unwrap(),
        );
        // Relay 1 freed the slot the refused participant held: it serves
        // the room no more.
        if stay["participants_active"] == 1
            && refused["participants_active"] == 0
            && refused["rooms_active"] == 0
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "participants: {} on relay 0, {} on relay 1 (rooms served there: {})",
            stay["participants_active"],
            refused["participants_active"],
            refused["rooms_active"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
