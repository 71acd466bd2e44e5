//! Hostile clients against the real relay binary. In each test a legitimate
//! two-person call (audio every 20 ms) runs on the attacked relay throughout;
//! the test reports the relay's peak RSS and the call's longest gap, and
//! holds them to a bound. Every attack is bounded in count and time and
//! targets loopback only.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use rallypoint_client::TransportKind::{WebSocket, WebTransport};
use rallypoint_client_native::{Peer, PeerError};
use rallypoint_protocol::v1::{
    ClientFrame, ErrorCode, Refresh, TrackKind, client_frame, server_frame,
};
use rallypoint_testkit::usage;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest silence the test accepts while the relay is under attack,
/// when the machine is quiet. The goal is 200 ms (BENCHMARKS.md records the
/// measured gaps); the bound is twice that, and grows with the silence of an
/// identical call on an unattacked relay measured at the same time
/// ([`allowed_gap`]): the attacker, both calls and the relays share the two
/// cores of a CI machine that runs other tests too, and that load is not the
/// attack's doing.
const MAX_GAP: Duration = Duration::from_millis(400);

/// The gap the attacked call may show, given the reference call's: never
/// more than a second, so an attack that starves the whole machine (and so
/// the reference call too) cannot pass by slowing its own yardstick.
fn allowed_gap(reference_gap: Duration) -> Duration {
    MAX_GAP.max(reference_gap * 2).min(Duration::from_secs(1))
}

/// Alice talks to Bob through relay 0 (the attacked one) and Carol to Dave
/// through relay 1 (the reference), both over WebSocket, until `finish`.
struct LegitCall {
    started: tokio::time::Instant,
    /// The attacked relay's CPU time when the attack began.
    cpu_at_start: f64,
    stop: Arc<AtomicBool>,
    attacked: Call,
    reference: Call,
}

/// One two-person call: audio every 20 ms one way.
struct Call {
    sender: tokio::task::JoinHandle<()>,
    receiver: tokio::task::JoinHandle<(u64, Duration)>,
}

/// What the attacked call carried, and the reference call's longest gap.
struct CallOutcome {
    /// The attacked relay's CPU time when the attack began, and the
    /// attack's length so far.
    cpu_at_start: f64,
    elapsed: Duration,
    frames: u64,
    gap: Duration,
    reference_gap: Duration,
}

impl Call {
    async fn start(
        lab: &Lab,
        relay: usize,
        room: &str,
        names: [&str; 2],
        stop: &Arc<AtomicBool>,
    ) -> Call {
        let (speaker, _) = lab.participant(relay, WebSocket, room, names[0]).await;
        let (mut listener, joined) = lab.participant(relay, WebSocket, room, names[1]).await;
        wait_sees(&mut listener, &joined, &[speaker.peer_id()]).await;
        let speaker_id = speaker.peer_id().to_owned();
        let stopping = stop.clone();
        let sender = tokio::spawn(async move {
            let mut seq = 0;
            while !stopping.load(Ordering::Relaxed) {
                speaker.send_media(TrackKind::Audio, seq, 0, false, Bytes::from(vec![1; 100]));
                seq += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let stopping = stop.clone();
        let receiver = tokio::spawn(async move {
            let (mut frames, mut longest, mut last) = (0u64, Duration::ZERO, None::<Instant>);
            while !stopping.load(Ordering::Relaxed) {
                let Ok(received) =
                    tokio::time::timeout(Duration::from_millis(100), listener.recv()).await
                else {
                    continue;
                };
                let Some(received) = received else { break };
                if let Some(server_frame::Kind::Media(m)) = received.frame.kind
                    && m.sender == speaker_id
                {
                    let now = Instant::now();
                    if let Some(last) = last {
                        longest = longest.max(now - last);
                    }
                    last = Some(now);
                    frames += 1;
                }
            }
            (frames, longest)
        });
        Call { sender, receiver }
    }

    async fn finish(self) -> (u64, Duration) {
        self.sender.await.unwrap();
        self.receiver.await.unwrap()
    }
}

impl LegitCall {
    async fn start(lab: &Lab) -> LegitCall {
        let stop = Arc::new(AtomicBool::new(false));
        // Attackers that join a room join this one, "call".
        let attacked = Call::start(lab, 0, "call", ["alice", "bob"], &stop).await;
        let reference = Call::start(lab, 1, "reference", ["carol", "dave"], &stop).await;
        // Let the calls settle before the attack.
        tokio::time::sleep(Duration::from_millis(500)).await;
        LegitCall {
            started: tokio::time::Instant::now(),
            cpu_at_start: relay_cpu_seconds(lab),
            stop,
            attacked,
            reference,
        }
    }

    /// Ends the calls, after at least 3 s of them, so there is a call to
    /// judge.
    async fn finish(self) -> CallOutcome {
        tokio::time::sleep_until(self.started + Duration::from_secs(3)).await;
        self.stop.store(true, Ordering::Relaxed);
        let (frames, gap) = self.attacked.finish().await;
        let (_, reference_gap) = self.reference.finish().await;
        CallOutcome {
            cpu_at_start: self.cpu_at_start,
            elapsed: self.started.elapsed(),
            frames,
            gap,
            reference_gap,
        }
    }
}

fn relay_pid(lab: &Lab) -> u32 {
    lab.relays[0].pid().expect("relay runs")
}

/// The relay's peak resident memory so far (VmHWM), in MiB.
fn peak_rss_mib(lab: &Lab) -> f64 {
    usage::peak_rss_bytes(relay_pid(lab)).expect("the relay runs") as f64 / MIB
}

/// The relay's CPU time so far, in seconds.
fn relay_cpu_seconds(lab: &Lab) -> f64 {
    usage::cpu_seconds(relay_pid(lab)).expect("the relay runs")
}

const MIB: f64 = 1024.0 * 1024.0;

fn report(attack: &str, lab: &Lab, call: CallOutcome) {
    let CallOutcome {
        cpu_at_start,
        elapsed,
        frames,
        gap,
        reference_gap,
    } = call;
    let cpu = relay_cpu_seconds(lab) - cpu_at_start;
    eprintln!(
        "[abuse] {attack}: relay peak RSS {:.1} MiB, CPU {cpu:.2} s in {:.1} s ({:.0}% of a core); \
         call got {frames} frames, longest gap {} ms (unattacked reference call: {} ms)",
        peak_rss_mib(lab),
        elapsed.as_secs_f64(),
        100.0 * cpu / elapsed.as_secs_f64(),
        gap.as_millis(),
        reference_gap.as_millis()
    );
    assert!(
        frames > 100,
        "{attack}: the call carried only {frames} frames"
    );
    assert!(
        gap < allowed_gap(reference_gap),
        "{attack}: the call went silent for {gap:?} (the unattacked one at most {reference_gap:?})"
    );
}

/// Raises this process's soft limit of open files to at least `wanted`
/// (within the hard limit): the attacks hold thousands of sockets, more than
/// the common default of 1 024. Fails clearly when the hard limit is lower.
fn raise_open_file_limit(wanted: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let wanted = wanted as u64;
    if soft >= wanted {
        return;
    }
    assert!(
        hard >= wanted,
        "this test needs {wanted} open files; the hard limit is {hard} (raise it: ulimit -Hn)"
    );
    setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).expect("setrlimit");
}

/// Whether the relay closes `socket` within `deadline` (EOF or reset).
async fn closed_within(mut socket: TcpStream, deadline: Duration) -> bool {
    let mut buf = [0u8; 64];
    let until = tokio::time::Instant::now() + deadline;
    loop {
        match tokio::time::timeout_at(until, socket.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue, // a 408 or an error page: read on to the close
        }
    }
}

/// A lab whose relays hold at most `limit` connections and give handshakes
/// one second, with the legitimate call running.
async fn capped_lab(limit: usize) -> (Lab, LegitCall) {
    let limit = limit.to_string();
    let lab = Lab::two_regions(&["--max-connections", &limit, "--handshake-timeout", "1s"]).await;
    let call = LegitCall::start(&lab).await;
    (lab, call)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_sent_connections_are_capped_and_closed() {
    const LIMIT: usize = 200;
    const ATTEMPTS: usize = 2_000;
    raise_open_file_limit(ATTEMPTS + 1_000);
    let (lab, call) = capped_lab(LIMIT).await;
    let port = lab.relays[0].http_port;
    let mut sockets = Vec::new();
    for i in 0..ATTEMPTS {
        let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        if i % 3 == 0 {
            let _ = socket.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").await;
        }
        sockets.push(socket);
    }
    // Over the limit, a socket is closed at once, long before any deadline
    // (the 1 s handshake deadline has not passed for any socket here).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut first_closed = 0;
    for socket in &mut sockets {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), socket.peek(&mut byte)).await
        {
            first_closed += 1;
        }
    }
    let over = ATTEMPTS - (LIMIT - 2); // the call holds two slots
    assert!(
        first_closed >= over,
        "only {first_closed} of {ATTEMPTS} closed at once; {over} were over the limit"
    );

    let closed = join_all(
        sockets
            .into_iter()
            .map(|s| closed_within(s, Duration::from_secs(4))),
    )
    .await;
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(open, 0, "{open} silent connections still open after 4 s");
    report(
        &format!("{ATTEMPTS} silent/half-sent TCP connections"),
        &lab,
        call.finish().await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_handshakes_that_never_send_connect_are_capped_and_closed() {
    use wtransport::quinn;

    const LIMIT: usize = 150;
    const ATTEMPTS: usize = 1_000;
    let (lab, call) = capped_lab(LIMIT).await;
    let candidate = lab.candidate(0, WebTransport);
    let hash = candidate
        .cert_hash_bytes()
        .expect("development certificate");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", lab.relays[0].wt_port)
        .parse()
        .unwrap();
    let tls = rallypoint_client_native::tls::client_config(Some(hash)).unwrap();
    let mut tls = (*tls).clone();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let client_config = quinn::ClientConfig::new(Arc::new(crypto));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();

    // QUIC handshakes that then say nothing: no HTTP/3 SETTINGS, no CONNECT.
    // 100 a second for 10 s: the attacker's handshakes share these two cores
    // with the relay and the call.
    let mut connections: Vec<quinn::Connection> = Vec::new();
    for _ in 0..ATTEMPTS / 25 {
        let attempts = (0..25).map(|_| {
            let connecting = endpoint.connect_with(client_config.clone(), addr, "localhost");
            async move {
                let connecting = connecting.ok()?;
                tokio::time::timeout(Duration::from_secs(3), connecting)
                    .await
                    .ok()?
                    .ok()
            }
        });
        connections.extend(join_all(attempts).await.into_iter().flatten());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let stats = lab.relays[0].stats().await.unwrap();
    let in_use = stats["connection_slots_in_use"].as_u64().unwrap() as usize;
    eprintln!(
        "[abuse] {} of {ATTEMPTS} QUIC handshakes completed; {in_use} slots in use",
        connections.len()
    );
    assert!(in_use <= LIMIT, "{in_use} slots in use, limit {LIMIT}");
    let closed = join_all(
        connections
            .iter()
            .map(|c| tokio::time::timeout(Duration::from_secs(4), c.closed())),
    )
    .await;
    let open = closed.iter().filter(|c| c.is_err()).count();
    assert_eq!(
        open, 0,
        "{open} QUIC connections without CONNECT still open after 4 s"
    );
    report(
        &format!("{ATTEMPTS} QUIC handshakes without CONNECT"),
        &lab,
        call.finish().await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webtransport_streams_without_fin_cannot_hoard_memory() {
    let lab = Lab::two_regions(&[]).await;
    let call = LegitCall::start(&lab).await;
    let before = peak_rss_mib(&lab);
    let candidate = lab.candidate(0, WebTransport);
    let hash = candidate
        .cert_hash_bytes()
        .expect("development certificate");
    // Ten connections, half of them authenticated, each trying to park 160
    // unfinished streams (more than the 128 a connection may have read at
    // once): of 1 MiB each on six of them (flow control and the relay's
    // budget stop those after a few), of 16 KiB on four (about 130 opened).
    // 1.6 GiB if the relay buffered what they send.
    let attacks = (0..10).map(|i| {
        let chunk = if i < 6 { 1 << 20 } else { 16 << 10 };
        let url = candidate.url.clone();
        let token = (i % 2 == 0).then(|| {
            lab.issuer.mint(
                "hoard",
                &format!("mallory{i}"),
                "M",
                Duration::from_secs(60),
            )
        });
        async move { hoard_streams(&url, hash, token, 160, chunk).await }
    });
    let opened: Vec<usize> = join_all(attacks).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = peak_rss_mib(&lab);
    eprintln!(
        "[abuse] streams opened per connection: {opened:?}; RSS {before:.1} -> {after:.1} MiB"
    );
    assert!(
        after - before < 100.0,
        "the relay grew by {:.1} MiB",
        after - before
    );
    report("WebTransport stream hoarding", &lab, call.finish().await);
}

/// Opens up to `streams` unidirectional streams on a WebTransport session
/// and writes `chunk` bytes to each without finishing it, giving up on any
/// step after a short deadline. Returns how many streams got that far.
async fn hoard_streams(
    url: &str,
    hash: [u8; 32],
    token: Option<String>,
    streams: usize,
    chunk: usize,
) -> usize {
    let endpoint = wt_client(hash);
    let Ok(Ok(connection)) =
        tokio::time::timeout(Duration::from_secs(3), endpoint.connect(url)).await
    else {
        return 0;
    };
    let mut held = Vec::new();
    if let Some(token) = token {
        let Ok(Ok(opening)) =
            tokio::time::timeout(Duration::from_secs(1), connection.open_bi()).await
        else {
            return 0;
        };
        let (mut control, recv) = opening.await.unwrap();
        let _ = control
            .write_all(&rallypoint_protocol::length_prefixed::encode(&hello_frame(
                token,
            )))
            .await;
        held.push((control, recv));
    }
    let chunk = vec![0u8; chunk];
    let mut opened = Vec::new();
    let started = Instant::now();
    for _ in 0..streams {
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
        let Ok(Ok(opening)) =
            tokio::time::timeout(Duration::from_millis(300), connection.open_uni()).await
        else {
            break;
        };
        let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_millis(300), opening).await
        else {
            break;
        };
        let _ = tokio::time::timeout(Duration::from_millis(300), stream.write_all(&chunk)).await;
        opened.push(stream);
    }
    opened.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_inside_the_room_are_held_to_their_budgets() {
    // Keyframe requests get a budget large enough that only the room
    // membership check can keep requests for nobody off the bus.
    let lab = Lab::two_regions(&["--keyframe-requests-per-second", "1000000"]).await;
    let call = LegitCall::start(&lab).await;
    let (mallory, _) = lab.participant(0, WebSocket, "call", "mallory").await;

    // Keyframe requests for random, made-up participants, and probes.
    for i in 0..5_000u64 {
        let target = format!("{:024x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        mallory.request_keyframe(&target, TrackKind::Video);
        mallory.probe(i, 0);
        if i % 500 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Media far over the per-sender budget.
    for seq in 0..400 {
        mallory.send_media(
            TrackKind::Video,
            seq,
            0,
            false,
            Bytes::from(vec![0; 60_000]),
        );
        if seq % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Wait until the relay has read every probe and most of the media (on
    // a busy machine it can be seconds behind the sender), under a deadline.
    let stats = lab.relays[0]
        .stats_once(Duration::from_secs(20), |stats| {
            let probes_read = ["probes_answered", "probes_over_budget", "probes_withheld"]
                .iter()
                .map(|k| stats[*k].as_u64().unwrap())
                .sum::<u64>();
            probes_read >= 5_000 && stats["media_over_budget"].as_u64().unwrap() > 300
        })
        .await
        .unwrap_or_else(|stats| stats);
    eprintln!("[abuse] after the floods: {stats}");
    assert!(
        stats["keyframe_requests_sent"].as_u64().unwrap() < 100,
        "requests for nobody were published: {stats}"
    );
    // The budget's burst (300) and what 100 a second refill while the
    // relay reads the flood, seconds on a busy machine: most are refused.
    assert!(stats["probes_over_budget"].as_u64().unwrap() > 3_000);
    assert!(stats["media_over_budget"].as_u64().unwrap() > 300);
    report(
        "keyframe, probe and media floods",
        &lab,
        call.finish().await,
    );
}

/// A WebSocket stalled by TCP retransmissions delivers every probe its
/// client sent meanwhile at once: a talker's 20 a second for up to 2 s
/// (then the client leaves the stream). The relay answers such a bunch
/// whole — with a burst of one second's worth it left 15 of 40 unanswered,
/// which the client counts as lost — and a flood still meets the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_websockets_bunch_of_probes_is_answered_whole() {
    let lab = Lab::two_regions(&[]).await;
    let (mut talker, _) = lab.participant(0, WebSocket, "stall", "talker").await;
    let answered = probes_answered(&mut talker, 40).await;
    assert_eq!(answered, 40, "a 2 s stall's probes answered");
    // The bucket holds three seconds' worth (300): of a flood of 800 at
    // once, what is beyond it is refused (a few more are answered as the
    // bucket refills while the flood is read).
    let answered = probes_answered(&mut talker, 800).await;
    assert!(answered < 400, "{answered} of a flood of 800 answered");
}

/// A relay says in its Welcome how many probes a second it answers
/// (`--probes-per-second`), and answers no more: a client paces its probes
/// below what it says (the client's side is tested in its session and in
/// `client/core/tests/election_sim.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_welcome_says_how_many_probes_the_relay_answers() {
    use futures_util::{SinkExt, StreamExt};
    use rallypoint_protocol::decode_server_frame;
    use tokio_tungstenite::tungstenite::Message;

    let lab = Lab::two_regions(&["--probes-per-second", "40"]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(lab.relays[0].ws_url())
        .await
        .unwrap();
    let token = lab
        .issuer
        .mint("r", "prober", "Prober", Duration::from_secs(60));
    ws.send(Message::Binary(hello_frame(token))).await.unwrap();
    let welcome = loop {
        let Some(Ok(Message::Binary(bytes))) = ws.next().await else {
            panic!("the relay closed before Welcome")
        };
        if let Some(server_frame::Kind::Welcome(welcome)) = decode_server_frame(bytes).unwrap().kind
        {
            break welcome;
        }
    };
    assert_eq!(welcome.probes_per_second, 40);
    drop(ws);

    let (mut prober, _) = lab.participant(0, WebSocket, "r", "prober").await;
    let answered = probes_answered(&mut prober, 300).await;
    // Three seconds' worth, and what two more seconds refill at most.
    assert!(
        (120..=200).contains(&answered),
        "{answered} of 300 probes at once answered by a relay saying 40 a second"
    );
}

/// Sends `sent` probes at once; how many were answered within 2 s.
async fn probes_answered(peer: &mut Peer, sent: u64) -> usize {
    for seq in 0..sent {
        assert!(peer.probe(seq, 0));
    }
    let mut answered = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(received)) = tokio::time::timeout_at(deadline, peer.recv()).await {
        if let Some(server_frame::Kind::ProbeAck(_)) = received.frame.kind {
            answered += 1;
        }
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_churn_is_refused_once_over_budget() {
    let lab = Lab::two_regions(&[]).await;
    let call = LegitCall::start(&lab).await;
    let (mut mallory, _) = lab.participant(0, WebSocket, "call", "mallory").await;
    let mut refused = None;
    for join_seq in 1..100 {
        mallory.leave();
        match mallory.join("call", join_seq, T).await {
            Ok(_) => {}
            Err(PeerError::Refused { code, .. }) => {
                refused = Some((join_seq, code));
                break;
            }
            Err(other) => panic!("unexpected: {other}"),
        }
    }
    let (after, code) = refused.expect("the churn was never refused");
    assert_eq!(code, ErrorCode::RateLimited);
    assert!(after <= 20, "refused only after {after} rounds");
    // A new connection of the same user does not get a fresh budget.
    let mut again = Peer::connect(
        &lab.candidate(0, WebSocket),
        &lab.identity("call", "mallory"),
        T,
    )
    .await
    .unwrap();
    match again.join("call", 0, T).await {
        Err(PeerError::Refused { code, .. }) => assert_eq!(code, ErrorCode::RateLimited),
        other => panic!("reconnecting refilled the budget: {:?}", other.is_ok()),
    }
    report("Join/Leave churn", &lab, call.finish().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_and_tokens_have_limits() {
    let lab = Lab::two_regions(&["--max-room-size", "3", "--max-connections-per-token", "2"]).await;
    let (_a, _) = lab.participant(0, WebSocket, "small", "a").await;
    let (_b, _) = lab.participant(1, WebSocket, "small", "b").await;
    let (_c, _) = lab.participant(0, WebTransport, "small", "c").await;
    // Presence crosses the gateway with the next beat at the latest.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let identity = lab.identity("small", "d");
    let mut d = Peer::connect(&lab.candidate(1, WebSocket), &identity, T)
        .await
        .unwrap();
    match d.join("small", 0, T).await {
        Err(PeerError::Refused { code, message, .. }) => {
            assert_eq!(code, ErrorCode::RoomFull, "{message}");
        }
        other => panic!("a fourth participant got in: {other:?}"),
    }
    // Refused means gone: the relay closes the connection, so nothing the
    // refused client sends reaches the room.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while d.recv().await.is_some() {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "the refused participant's connection stayed open"
    );

    let identity = lab.identity("other", "mallory");
    let candidate = lab.candidate(0, WebSocket);
    let _first = Peer::connect(&candidate, &identity, T).await.unwrap();
    let _second = Peer::connect(&candidate, &identity, T).await.unwrap();
    match Peer::connect(&candidate, &identity, T).await {
        Err(PeerError::Refused { code, .. }) => assert_eq!(code, ErrorCode::RateLimited),
        other => panic!(
            "a third connection of one token got in: {:?}",
            other.is_ok()
        ),
    }
}

/// A client the room refuses (`RoomFull`) is gone even when its connection
/// cannot take the refusal: Mallory stops reading, so the relay's writer
/// is stuck behind her unread probe answers and the `Error` frame waits
/// behind them. Her session used to stay in the room all the same, and her
/// media went to everyone in it (the room fans out whatever its sessions
/// give it): a way past the room's size, talking unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_that_stops_reading_cannot_talk_into_the_room() {
    use futures_util::SinkExt;
    use rallypoint_protocol::encode;
    use rallypoint_protocol::v1::{Join, Media, Probe};
    use tokio_tungstenite::tungstenite::Message;

    let lab = Lab::two_regions(&["--max-room-size", "1"]).await;
    let (mut alice, _) = lab.participant(0, WebSocket, "small", "alice").await;

    // A receive buffer far smaller than the relay's answers to come, never
    // read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let address = format!("127.0.0.1:{}", lab.relays[0].http_port)
        .parse()
        .unwrap();
    let stream = socket.connect(address).await.unwrap();
    let (mut mallory, _) = tokio_tungstenite::client_async(lab.relays[0].ws_url(), stream)
        .await
        .unwrap();
    let token = lab
        .issuer
        .mint("small", "mallory", "Mallory", Duration::from_secs(60));
    mallory
        .send(Message::Binary(hello_frame(token)))
        .await
        .unwrap();
    // Each answered (within the relay's burst of probes): ~25 KB of answers
    // stall the relay's writer.
    for seq in 0..250 {
        let probe = ClientFrame::of(client_frame::Kind::Probe(Probe {
            seq,
            client_send_us: 0,
        }));
        mallory.feed(Message::Binary(encode(&probe))).await.unwrap();
    }
    mallory.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let join = ClientFrame::of(client_frame::Kind::Join(Join {
        room: "small".into(),
        join_seq: 0,
        ..Default::default()
    }));
    mallory.send(Message::Binary(encode(&join))).await.unwrap();
    // Then audio for two seconds, as long as the relay takes it.
    let talking = tokio::spawn(async move {
        for seq in 0..100u64 {
            let media = ClientFrame::of(client_frame::Kind::Media(Media {
                kind: TrackKind::Audio as i32,
                seq,
                payload: Bytes::from_static(&[1; 100]),
                ..Default::default()
            }));
            if mallory.send(Message::Binary(encode(&media))).await.is_err() {
                return seq;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        100
    });
    let heard = media_until(&mut alice, 1, Duration::from_secs(3)).await;
    let sent = talking.await.unwrap();
    assert!(
        heard.is_empty(),
        "Alice heard the refused client ({} frame(s) within 3 s; it sent {sent})",
        heard.len()
    );
    let stats = lab.relays[0].stats().await.unwrap();
    assert_eq!(stats["room_full_refusals"], 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_outlives_its_token_only_with_a_refresh() {
    let lab = Lab::two_regions(&[]).await;
    let short = |user: &str| {
        rallypoint_client_native::identity(lab.issuer.mint(
            "call",
            user,
            user,
            Duration::from_secs(2),
        ))
    };
    let candidate = lab.candidate(0, WebSocket);
    let mut expiring = Peer::connect(&candidate, &short("e"), T).await.unwrap();
    expiring.join("call", 0, T).await.unwrap();
    let mut refreshed = Peer::connect(&candidate, &short("r"), T).await.unwrap();
    refreshed.join("call", 0, T).await.unwrap();
    refreshed
        .conn
        .send(&ClientFrame::of(client_frame::Kind::Refresh(Refresh {
            token: lab.issuer.mint("call", "r", "r", Duration::from_secs(600)),
        })));
    refreshed
        .expect("TokenRefreshed", T, |kind| match kind {
            server_frame::Kind::TokenRefreshed(r) => Some(r.token_expires_unix),
            _ => None,
        })
        .await
        .unwrap();

    // Expiry (2 s) plus the 5 s leeway: the unrefreshed call is closed.
    let ended = expiring
        .expect("the token's end", Duration::from_secs(12), |_| None::<()>)
        .await;
    match ended {
        Err(PeerError::Refused { code, .. }) => assert_eq!(code, ErrorCode::TokenExpired),
        other => panic!("the expired call went on: {other:?}"),
    }
    // The refreshed one is still served: it gets its probe answered.
    refreshed.probe(1, 0);
    refreshed
        .expect("ProbeAck", T, |kind| match kind {
            server_frame::Kind::ProbeAck(_) => Some(()),
            _ => None,
        })
        .await
        .expect("the refreshed call lives on");
}

/// The relay's resident memory now (VmRSS), in KiB.
fn rss_kib(lab: &Lab) -> f64 {
    usage::rss_bytes(relay_pid(lab)).expect("the relay runs") as f64 / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_websocket_before_hello_costs_little_memory() {
    const CONNECTIONS: usize = 400;
    let lab = Lab::two_regions(&["--hello-timeout", "60s"]).await;
    // Warm up: the first connections allocate pools that stay.
    let mut warm = Vec::new();
    for _ in 0..20 {
        warm.push(
            tokio_tungstenite::connect_async(lab.relays[0].ws_url())
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(&lab);
    let mut idle = Vec::new();
    for _ in 0..CONNECTIONS {
        idle.push(
            tokio_tungstenite::connect_async(lab.relays[0].ws_url())
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_connection = (rss_kib(&lab) - before) / CONNECTIONS as f64;
    eprintln!(
        "[abuse] {CONNECTIONS} idle WebSocket connections before Hello: {per_connection:.1} KiB each"
    );
    assert!(
        per_connection <= 32.0,
        "{per_connection:.1} KiB per idle connection"
    );
    drop((warm, idle));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_cannot_flood_telemetry_by_reconnecting() {
    use rallypoint_protocol::v1::{TelemetryReport, telemetry_report};

    const CONNECTIONS: usize = 20;
    const PER_CONNECTION: usize = 10;
    let lab = Lab::two_regions(&["--reports-per-minute", "30"]).await;
    let call = LegitCall::start(&lab).await;
    let candidate = lab.candidate(0, WebSocket);
    let identity = lab.identity("lobby", "flooder");
    let mut reports =
        rallypoint_testkit::reports::ReportGenerator::new(lab.relays[0].candidates(), 7, false);
    let (mut limited, mut passed) = (0, 0);
    let started = Instant::now();
    for _ in 0..CONNECTIONS {
        // A new connection each round, as a flooder resetting a
        // per-connection budget would.
        let mut peer = Peer::connect(&candidate, &identity, T).await.unwrap();
        for _ in 0..PER_CONNECTION {
            peer.conn
                .send(&ClientFrame::of(client_frame::Kind::Telemetry(
                    TelemetryReport {
                        kind: Some(telemetry_report::Kind::Election(reports.next_report())),
                    },
                )));
        }
        for _ in 0..PER_CONNECTION {
            let ack = peer
                .expect("TelemetryAck", T, |kind| match kind {
                    server_frame::Kind::TelemetryAck(ack) => Some(ack.clone()),
                    _ => None,
                })
                .await
                .unwrap();
            // Without JetStream in this lab, reports past the budget are
            // refused for storage, not for rate: only the rate counts here.
            if ack.refusal() == rallypoint_protocol::v1::TelemetryRefusal::RateLimited {
                limited += 1;
            } else {
                passed += 1;
            }
        }
    }
    eprintln!("[abuse] telemetry flood: {passed} past the budget check, {limited} rate limited");
    // A burst of 30, then half a report a second.
    let budget = 30 + (started.elapsed().as_secs_f64() / 2.0).ceil() as usize;
    assert!(
        passed <= budget,
        "{passed} reports of one token passed a 30/min budget (at most {budget} by now) over {CONNECTIONS} connections"
    );
    assert_eq!(passed + limited, CONNECTIONS * PER_CONNECTION);
    report(
        "telemetry flood from one token over 20 connections",
        &lab,
        call.finish().await,
    );
}

/// Sockets the relay process holds open (its file descriptors that are sockets).
fn open_sockets(lab: &Lab) -> usize {
    let pid = lab.relays[0].pid().expect("relay runs");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Clients that stop reading while the relay has much to tell them are
/// disconnected — their sockets closed, not merely forgotten — while they
/// still hold their end open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_are_disconnected_not_forgotten() {
    use futures_util::SinkExt;
    use rallypoint_protocol::v1::Probe;
    use tokio_tungstenite::tungstenite::Message;

    const STALLED: usize = 5;
    let lab = Lab::two_regions(&["--control-queue", "8", "--probes-per-second", "1000000"]).await;
    let call = LegitCall::start(&lab).await;
    let before = open_sockets(&lab);
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        let (mut ws, _) = tokio_tungstenite::connect_async(lab.relays[0].ws_url())
            .await
            .unwrap();
        let hello = hello_frame(lab.issuer.mint(
            "lobby",
            &format!("stalled{i}"),
            "S",
            Duration::from_secs(60),
        ));
        ws.send(Message::Binary(hello)).await.unwrap();
        // Far more probe answers than kernel buffers hold, never read.
        for seq in 0..60_000u64 {
            let probe = ClientFrame::of(client_frame::Kind::Probe(Probe {
                seq,
                client_send_us: 0,
            }));
            if tokio::time::timeout(
                Duration::from_secs(1),
                ws.feed(Message::Binary(rallypoint_protocol::encode(&probe))),
            )
            .await
            .is_err()
            {
                break;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.flush()).await;
        stalled.push(ws);
    }
    // The relay drops them (control queue full) and must then let go of
    // their sockets within its flush grace.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut held = open_sockets(&lab).saturating_sub(before);
    while held > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        held = open_sockets(&lab).saturating_sub(before);
    }
    assert_eq!(
        held, 0,
        "the relay still holds {held} sockets of clients it dropped"
    );
    report("5 clients that stop reading", &lab, call.finish().await);
    drop(stalled);
}
