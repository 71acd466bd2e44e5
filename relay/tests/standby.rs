//! Prepared standbys (`Join.prepare`, make-before-break), with real NATS
//! servers and real relay processes: what a standby forwards, to whom, and
//! what it costs the room.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;

use rallypoint_client::TransportKind::{WebSocket, WebTransport};
use rallypoint_protocol::v1::server_frame;
use support::*;

/// Make-before-break (`Join.prepare`): a client whose relay went silent
/// sends its media through a standby relay too. The room hears every frame
/// once, hears of no join while the client only prepares, and sees a move
/// when it does move there; a preparation ended by Leave forwards nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_standby_forwards_media_once_and_tells_nobody_until_the_move() {
    let lab = Lab::two_regions(&["--presence-grace", "3s"]).await;
    let identity = lab.identity("r", "alice");
    let mut alice = lab.connect(0, WebSocket, &identity).await;
    alice.join("r", 0, T).await.unwrap();
    let (mut bob, jb) = lab.participant(1, WebSocket, "r", "bob").await;
    wait_sees(&mut bob, &jb, &[alice.peer_id()]).await;

    // Alice's standby in bob's region forwards her media as well: bob's
    // relay gets each frame through both relays and passes it on once.
    let standby = lab.connect(1, WebTransport, &identity).await;
    standby.prepare("r");
    let mut standby = standby;
    tokio::time::sleep(Duration::from_millis(500)).await;
    const FRAMES: u64 = 30;
    tokio::join!(
        send_audio(&alice, 0..FRAMES, 200, Duration::from_millis(10)),
        send_audio(&standby, 0..FRAMES, 200, Duration::from_millis(10)),
        send_audio(&bob, 0..FRAMES, 100, Duration::from_millis(10)),
    );
    // And it hears the room's media (bob's, not its own echoed), nothing else.
    let mut heard = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(Some(received)) = tokio::time::timeout_at(deadline, standby.recv()).await {
        match received.frame.kind {
            Some(server_frame::Kind::Media(m)) => heard.push((m.sender, m.seq)),
            Some(server_frame::Kind::ProbeAck(_)) | None => {}
            Some(other) => panic!("a prepared standby got room traffic: {other:?}"),
        }
    }
    let bob_id = bob.peer_id().to_owned();
    assert!(
        heard.iter().all(|(sender, _)| *sender == bob_id),
        "{heard:?}"
    );
    assert_eq!(heard.len() as u64, FRAMES, "{heard:?}");
    let mut seqs = Vec::new();
    let mut presence = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(Some(received)) = tokio::time::timeout_at(deadline, bob.recv()).await {
        match received.frame.kind {
            Some(server_frame::Kind::Media(m)) => seqs.push(m.seq),
            Some(
                kind @ (server_frame::Kind::PeerJoined(_)
                | server_frame::Kind::PeerLeft(_)
                | server_frame::Kind::PeerMoved(_)),
            ) => presence.push(kind),
            _ => {}
        }
    }
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (0..FRAMES).collect::<Vec<_>>(),
        "every frame once, though sent through two relays"
    );
    assert!(
        presence.is_empty(),
        "the room was told of a preparation: {presence:?}"
    );
    let stats = lab.relays[1].stats().await.unwrap();
    assert!(
        stats["media_duplicates"].as_u64() >= Some(FRAMES / 2),
        "bob's relay counts the copies it dropped: {stats}"
    );
    assert_eq!(stats["moves_prepared"], 1, "{stats}");

    // Leave ends the preparation: media through it reaches nobody.
    standby.leave_moving();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_unheard(&standby, &mut bob, "after Leave").await;
    let stats = lab.relays[1].stats().await.unwrap();
    // Five, and any datagram of the first burst that overtook the Join.
    assert!(stats["media_not_in_room"].as_u64() >= Some(5), "{stats}");

    // A prepared standby that is joined is a move, seen as one.
    let mut mover = lab.connect(1, WebSocket, &identity).await;
    mover.prepare("r");
    alice.conn.abort();
    mover.join("r", 1, T).await.unwrap();
    let moved = bob
        .expect("PeerMoved", T, |kind| match kind {
            server_frame::Kind::PeerMoved(m) => Some(m.clone()),
            server_frame::Kind::PeerJoined(j) => panic!("saw a join instead of a move: {j:?}"),
            server_frame::Kind::PeerLeft(l) => panic!("saw a leave instead of a move: {l:?}"),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(moved.peer.unwrap().peer_id, alice.peer_id());
}

/// A prepared standby is an invisible listener, so only someone the room
/// can see may be one: a token for the room is not enough. Alice, in the
/// call through the other region, prepares on a relay that did not serve
/// the room yet and hears all of it once that relay has learnt the
/// roster. Carol, holding a token but in the call nowhere, hears only a
/// grace of a second — what a relay new to the room needs for the others'
/// answers — and, three graces a minute spent, nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_participant_of_the_room_hears_it_through_a_prepared_standby() {
    let lab = Lab::two_regions(&[]).await;
    // Alice and Bob are in the call through us-east; singapore does not
    // serve the room yet.
    let identity = lab.identity("r", "alice");
    let mut alice = lab.connect(0, WebSocket, &identity).await;
    let ja = alice.join("r", 0, T).await.unwrap();
    let (bob, _) = lab.participant(0, WebSocket, "r", "bob").await;
    wait_sees(&mut alice, &ja, &[bob.peer_id()]).await;
    let mut carols = lab.connect(1, WebSocket, &lab.identity("r", "carol")).await;
    let mut alices = lab.connect(1, WebSocket, &identity).await;
    assert_eq!(alices.peer_id(), alice.peer_id(), "one participant");
    alices.prepare("r");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Carol's grace starts at her preparation, and Bob talks from just after.
    carols.prepare("r");
    tokio::time::sleep(Duration::from_millis(150)).await;

    // Three seconds of Bob's audio, a frame every 50 ms, heard for twice
    // that (a loaded machine's sleeps overrun; the outsider's grace, not the
    // window, is what limits what she hears).
    const FRAMES: u64 = 60;
    let (_, alice_heard, carol_heard) = tokio::join!(
        send_audio(&bob, 0..FRAMES, 100, Duration::from_millis(50)),
        media_within(&mut alices, Duration::from_millis(6_000)),
        media_within(&mut carols, Duration::from_millis(6_000)),
    );
    assert_eq!(alice_heard.len() as u64, FRAMES, "{alice_heard:?}");
    let carol_seqs: Vec<u64> = carol_heard.iter().map(|m| m.seq).collect();
    assert!(
        !carol_seqs.is_empty() && carol_seqs.len() <= 22 && carol_seqs[0] < 3,
        "an outsider heard {carol_seqs:?} of {FRAMES} frames"
    );
    let stats = lab.relays[1].stats().await.unwrap();
    let withheld = stats["media_withheld"].as_u64().unwrap();
    let accounted = withheld + carol_seqs.len() as u64;
    assert!(
        (FRAMES - 3..=FRAMES).contains(&accounted),
        "{FRAMES} frames, {accounted} heard or withheld: {stats}"
    );

    // Preparing again and again spends the rest of her graces, then none.
    let mut heard = Vec::new();
    for round in 0..3u64 {
        carols.leave_moving();
        carols.prepare("r");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let seqs = 1_000 * (round + 1)..1_000 * (round + 1) + 5;
        let (_, got) = tokio::join!(
            send_audio(&bob, seqs, 100, Duration::from_millis(20)),
            media_within(&mut carols, Duration::from_millis(600)),
        );
        heard.push(got.len());
    }
    assert_eq!(heard, [5, 5, 0], "graces of later preparations");
}

/// The other way round: a standby is an invisible talker too, so its media
/// reaches the room only while the roster lists its client. Carol, holding
/// a token for the room but in the call nowhere, is heard for a grace of a
/// second at most; Alice, in the call through the other region, is heard
/// through her standby alone, every frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_participant_of_the_room_is_heard_through_a_prepared_standby() {
    let lab = Lab::two_regions(&[]).await;
    let (mut bob, jb) = lab.participant(1, WebSocket, "r", "bob").await;
    let identity = lab.identity("r", "alice");
    let mut alice = lab.connect(0, WebSocket, &identity).await;
    alice.join("r", 0, T).await.unwrap();
    wait_sees(&mut bob, &jb, &[alice.peer_id()]).await;
    let carols = lab.connect(1, WebSocket, &lab.identity("r", "carol")).await;
    let alices = lab.connect(1, WebSocket, &identity).await;
    carols.prepare("r");
    alices.prepare("r");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Three seconds of audio from each standby, a frame every 50 ms, heard
    // for twice that (Carol's grace, not the window, limits her).
    const FRAMES: u64 = 60;
    let gap = Duration::from_millis(50);
    let (_, _, heard) = tokio::join!(
        send_audio(&carols, 0..FRAMES, 100, gap),
        send_audio(&alices, 0..FRAMES, 100, gap),
        media_within(&mut bob, Duration::from_millis(6_000)),
    );
    let from = |who: &str| -> Vec<u64> {
        heard
            .iter()
            .filter(|m| m.sender == who)
            .map(|m| m.seq)
            .collect()
    };
    assert_eq!(
        from(alices.peer_id()),
        (0..FRAMES).collect::<Vec<_>>(),
        "a participant's standby is heard"
    );
    let carol = from(carols.peer_id());
    assert!(
        (5..=22).contains(&carol.len()),
        "an outsider was heard for {} of {FRAMES} frames: {carol:?}",
        carol.len()
    );
    let stats = lab.relays[1].stats().await.unwrap();
    assert_eq!(
        stats["media_unheard"].as_u64(),
        Some(FRAMES - carol.len() as u64),
        "{stats}"
    );
}

/// Preparing costs the room's task a command (and perhaps every relay a
/// roster beat), so it has a budget per user across connections. One over
/// it is not made, and the standby stays: it still answers probes, and the
/// client's move there is a plain Join, seen as a move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preparation_over_the_budget_is_not_made_and_the_standby_stays() {
    let lab = Lab::two_regions(&["--prepares-per-minute", "2"]).await;
    let (mut bob, jb) = lab.participant(1, WebSocket, "r", "bob").await;
    let identity = lab.identity("r", "alice");
    let mut alice = lab.connect(0, WebSocket, &identity).await;
    alice.join("r", 0, T).await.unwrap();
    wait_sees(&mut bob, &jb, &[alice.peer_id()]).await;
    let standby = lab.connect(1, WebSocket, &identity).await;
    // Two preparations (the budget), then a third, from another connection
    // of the same user: reconnecting does not refill the budget.
    for _ in 0..2 {
        standby.prepare("r");
        standby.leave_moving();
    }
    let mut other = lab.connect(1, WebSocket, &identity).await;
    other.prepare("r");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_unheard(&other, &mut bob, "through a refused preparation").await;
    let stats = lab.relays[1].stats().await.unwrap();
    assert_eq!(stats["moves_prepared"], 2, "{stats}");
    assert_eq!(stats["prepares_over_budget"], 1, "{stats}");

    // Still a standby: it answers a probe, and the move is a move.
    assert!(other.probe(7, 1));
    other
        .expect("ProbeAck", T, |kind| match kind {
            server_frame::Kind::ProbeAck(ack) => Some(ack.seq),
            server_frame::Kind::Error(e) => panic!("the standby was refused: {e:?}"),
            _ => None,
        })
        .await
        .unwrap();
    alice.conn.abort();
    other.join("r", 1, T).await.unwrap();
    bob.expect("PeerMoved", T, |kind| match kind {
        server_frame::Kind::PeerMoved(m) => Some(m.clone()),
        server_frame::Kind::PeerLeft(l) => panic!("saw a leave instead of a move: {l:?}"),
        _ => None,
    })
    .await
    .unwrap();
}

/// The failover a standby is prepared for: the client's relay dies, taking
/// its roster along, and the standby's relay did not serve the room. A
/// relay still in the room holds the clients until their presence grace
/// ends and vouches for them when asked, so their standbys are heard and
/// hear past the one-second grace an unknown client gets, until their
/// Joins — the second too, though it prepares after the first answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standbys_are_served_after_their_clients_relay_died_on_another_relays_word() {
    // A presence grace the test's steps cannot outlast on a loaded machine.
    let grace = ["--presence-grace", "10s"];
    let mut lab = Lab::two_regions(&grace).await;
    let third = lab.add_relay("us-east", "us-east-1", &grace).await;
    let (alice, dave) = (lab.identity("r", "alice"), lab.identity("r", "dave"));
    let mut alice_on_a = lab.connect(0, WebSocket, &alice).await;
    alice_on_a.join("r", 0, T).await.unwrap();
    let mut dave_on_a = lab.connect(0, WebSocket, &dave).await;
    dave_on_a.join("r", 0, T).await.unwrap();
    let (mut bob, jb) = lab.participant(third, WebSocket, "r", "bob").await;
    wait_sees(&mut bob, &jb, &[alice_on_a.peer_id(), dave_on_a.peer_id()]).await;

    lab.relays[0].signal(Signal::SIGKILL).unwrap();
    let mut alices = lab.connect(1, WebSocket, &alice).await;
    alices.prepare("r");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut daves = lab.connect(1, WebSocket, &dave).await;
    daves.prepare("r");
    // Past the grace an unknown client gets.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let bob_id = bob.peer_id().to_owned();
    let gap = Duration::from_millis(20);
    tokio::join!(
        send_audio(&alices, 0..10, 100, gap),
        send_audio(&daves, 0..10, 100, gap),
        send_audio(&bob, 0..10, 100, gap),
    );
    let wait = Duration::from_secs(2);
    let bob_heard = media_within(&mut bob, wait).await;
    for (standby, who) in [(&mut alices, "Alice"), (&mut daves, "Dave")] {
        let sender = standby.peer_id().to_owned();
        let mut heard: Vec<u64> = bob_heard
            .iter()
            .filter(|m| m.sender == sender)
            .map(|m| m.seq)
            .collect();
        heard.sort_unstable();
        assert_eq!(heard, (0..10).collect::<Vec<_>>(), "Bob hears {who}");
        let heard = media_seqs_from(standby, &bob_id, 0..10, wait).await;
        assert_eq!(heard, (0..10).collect::<Vec<_>>(), "{who} hears Bob");
    }
    let stats = lab.relays[1].stats().await.unwrap();
    assert_eq!(stats["media_withheld"], 0, "{stats}");
    assert_eq!(stats["media_unheard"], 0, "{stats}");
}

/// Another relay's word is no standing invitation: a participant that
/// hangs up is out of the call, and its standby, served while it was in,
/// goes quiet both ways after a grace at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_whose_client_hung_up_is_served_no_longer() {
    let mut lab = Lab::two_regions(&[]).await;
    let third = lab.add_relay("us-east", "us-east-1", &[]).await;
    let alice = lab.identity("r", "alice");
    let mut alice_on_a = lab.connect(0, WebSocket, &alice).await;
    alice_on_a.join("r", 0, T).await.unwrap();
    let (mut bob, jb) = lab.participant(third, WebSocket, "r", "bob").await;
    wait_sees(&mut bob, &jb, &[alice_on_a.peer_id()]).await;
    let mut standby = lab.connect(1, WebSocket, &alice).await;
    standby.prepare("r");
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_audio(&standby, 0..5, 100, Duration::from_millis(10)).await;
    let heard = media_seqs_from(&mut bob, standby.peer_id(), 0..5, T).await;
    assert_eq!(
        heard,
        (0..5).collect::<Vec<_>>(),
        "served while in the call"
    );

    alice_on_a.leave();
    bob.expect("PeerLeft", T, |kind| match kind {
        server_frame::Kind::PeerLeft(left) => Some(left.peer_id.clone()),
        _ => None,
    })
    .await
    .unwrap();
    // Past the grace a client the roster stops listing gets.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_unheard(&standby, &mut bob, "of a client that hung up").await;
    send_audio(&bob, 100..105, 100, Duration::from_millis(10)).await;
    let heard = media_within(&mut standby, Duration::from_millis(700)).await;
    let seqs: Vec<u64> = heard.iter().map(|m| m.seq).collect();
    assert!(seqs.is_empty(), "the standby still hears: {seqs:?}");
}

/// A grace is given back when the standby's connection joins — only if
/// the Join is accepted: a full room's refusal gives nothing back, or an
/// outsider could listen on a grace, be refused, and listen again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_refused_gives_no_grace_back() {
    let lab = Lab::two_regions(&["--max-room-size", "1"]).await;
    let (occupant, _) = lab.participant(1, WebSocket, "r", "occupant").await;
    let carol = lab.identity("r", "carol");
    for _ in 0..3 {
        let mut standby = lab.connect(1, WebSocket, &carol).await;
        standby.prepare("r");
        tokio::time::sleep(Duration::from_millis(100)).await;
        standby.join("r", 0, T).await.expect_err("the room is full");
    }
    let mut standby = lab.connect(1, WebSocket, &carol).await;
    standby.prepare("r");
    tokio::time::sleep(Duration::from_millis(200)).await;
    send_audio(&occupant, 0..5, 100, Duration::from_millis(10)).await;
    let heard = media_within(&mut standby, Duration::from_millis(700)).await;
    let seqs: Vec<u64> = heard.iter().map(|m| m.seq).collect();
    assert!(seqs.is_empty(), "a fourth grace in a minute: {seqs:?}");
}

/// Sends five audio frames through `standby` and asserts that `listener`
/// hears none of them.
async fn assert_unheard(
    standby: &rallypoint_client_native::Peer,
    listener: &mut rallypoint_client_native::Peer,
    when: &str,
) {
    send_audio(standby, 1000..1005, 200, Duration::from_millis(5)).await;
    let heard = media_within(listener, Duration::from_millis(700)).await;
    let seqs: Vec<u64> = heard.iter().map(|m| m.seq).collect();
    assert!(seqs.is_empty(), "media {when} reached the room: {seqs:?}");
}
