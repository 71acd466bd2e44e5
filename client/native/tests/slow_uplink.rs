//! A client whose uplink is slower than the media it sends: what reaches the
//! room must be recent, not seconds old.
//!
//! QUIC sends datagrams as its congestion window allows and keeps the rest,
//! up to quinn's datagram buffer (1 MiB). A client sending twice what its
//! uplink carries filled it, and everyone in the room heard it later and
//! later: the buffer's worth, 16 s at 500 kbit/s. The client now bounds its
//! queue by how long it takes to drain at the connection's rate, as the
//! relay does towards its receivers (`rallypoint_protocol::queue_age`).
//! And a frame the relay gave up on must not hold up the frames after it.
//! A real relay and NATS server on loopback; a UDP proxy with a bottleneck
//! is the uplink.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use rallypoint_client::TransportKind;
use rallypoint_client_native::Peer;
use rallypoint_protocol::v1::TrackKind;
use rallypoint_testkit::media_age::{Ages, now_us, quantile_ms};
use rallypoint_testkit::nats::SuperCluster;
use rallypoint_testkit::proxy::{LinkSpec, UdpDelayProxy};
use rallypoint_testkit::relays::RelayProcess;
use rallypoint_testkit::tokens::DevIssuer;

mod support;

const SECRET: &str = "slow-uplink-test-secret";
const ROOM: &str = "slow";
const T: Duration = Duration::from_secs(15);
/// The sender's uplink: 500 kbit/s behind a 100 ms queue, 40 ms away.
const UPLINK: &str = r#"{"rtt_ms": 40, "up": {"rate_kbit": 500, "queue_ms": 100}}"#;
/// 200 datagram-sized frames of 600 B a second, about 1 Mbit/s.
const FRAME: usize = 600;
const GAP: Duration = Duration::from_millis(5);
const SENDING: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_slower_than_its_media_sends_recent_datagrams_not_a_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let (_stack, mut watcher, sender) = Stack::behind(UPLINK, dir.path()).await;
    let sender_id = sender.peer_id().to_owned();

    let frames = (SENDING.as_micros() / GAP.as_micros()) as u64;
    let sending = async {
        let mut pace = tokio::time::interval(GAP);
        for seq in 0..frames {
            pace.tick().await;
            sender.send_media(
                TrackKind::Audio,
                seq,
                now_us(),
                false,
                Bytes::from(vec![0; FRAME]),
            );
        }
    };
    let deadline = tokio::time::Instant::now() + SENDING + Duration::from_secs(2);
    let ((), ages) = tokio::join!(sending, Ages::of(&mut watcher, &sender_id, deadline));

    // Frames sent in the second half, once any queue had long filled.
    let second_half = ages.sent_after(SENDING / 2);
    let (p50, p95) = (
        quantile_ms(&second_half, 0.5),
        quantile_ms(&second_half, 0.95),
    );
    println!(
        "a sender at 500 kbit/s sending twice that: {} of {frames} frames heard, second half {} \
         with age p50 {p50:.0} ms, p95 {p95:.0} ms; the sender gave up {}",
        ages.0.len(),
        second_half.len(),
        sender.conn.frames_given_up()
    );
    // The uplink carries ~95 frames a second: at least half of that must
    // arrive in the second half's 4 s, or the bound starves the room.
    assert!(
        second_half.len() >= 200,
        "only {} frames sent in the last 4 s were heard (~380 fit the uplink)",
        second_half.len()
    );
    // The path adds 20 ms and its queue up to 100 ms; the client's own
    // queue a few hundred at most. Before the bound: several seconds.
    assert!(
        p95 <= 600.0,
        "the room heard the slow sender {p95:.0} ms late (p95): a backlog, not a call"
    );
}

/// The sender's uplink for a frame the relay gives up on: 200 kbit/s behind
/// a 200 ms queue, 40 ms away.
const NARROW_UPLINK: &str = r#"{"rtt_ms": 40, "up": {"rate_kbit": 200, "queue_ms": 200}}"#;
/// A keyframe the narrow uplink needs 12 s for, more than twice the relay's
/// deadline for a media stream (5 s, `client_streams::DEADLINE`).
const HUGE_KEYFRAME: usize = 300_000;
/// A video frame too large for a datagram: it goes on a stream.
const KEYFRAME: usize = 2_400;
/// How long the test listens for that frame after the stop: behind the
/// stopped keyframe's rest it would take ~7 s.
const NEXT_WITHIN: Duration = Duration::from_secs(4);

/// The relay stops a media stream it has not got whole by its deadline
/// (STOP_SENDING). QUIC keeps sending what the client wrote unless the
/// client resets the stream, and the client's stream handle was gone once
/// the frame was written: the rest of a frame nobody will read went on
/// taking the uplink, and the client's next frames waited behind it (its
/// streams leave in the order they were written). Now the stream's task
/// keeps the handle until the relay has the frame or stopped it, and resets
/// it when stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_the_relay_gave_up_on_does_not_hold_up_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, mut watcher, sender) = Stack::behind(NARROW_UPLINK, dir.path()).await;
    let sender_id = sender.peer_id().to_owned();

    // Written at once: the connection has seen no congestion event yet, so
    // its send window is the whole 512 KiB (`queue_age`'s bounds keep the
    // configured buffers until the first one). Checked below: had the write
    // waited, the stop would have failed it, and the stream's handle, still
    // held, would have reset it before and after the fix alike.
    assert!(sender.send_media(
        TrackKind::Video,
        0,
        now_us(),
        true,
        Bytes::from(vec![1; HUGE_KEYFRAME])
    ));
    if let Err(stats) = stack
        .relay
        .stats_once(T, |stats| stats["media_streams_abandoned"] != 0)
        .await
    {
        panic!("the relay did not give up on the huge keyframe within {T:?}: {stats}");
    }
    assert_eq!(
        sender.conn.frames_given_up(),
        0,
        "the huge keyframe was not written whole before the relay stopped it, so this run \
         cannot tell a reset stream from a dropped one"
    );

    let sent = now_us();
    assert!(sender.send_media(
        TrackKind::Video,
        1,
        sent,
        true,
        Bytes::from(vec![2; KEYFRAME])
    ));
    let heard = Ages::of(
        &mut watcher,
        &sender_id,
        tokio::time::Instant::now() + NEXT_WITHIN,
    )
    .await;
    let next = heard.0.iter().find(|(capture_us, _)| *capture_us == sent);
    println!(
        "after the relay stopped a {HUGE_KEYFRAME} B keyframe on a 200 kbit/s uplink, the next \
         frame ({KEYFRAME} B) arrived {}",
        next.map_or(format!("not within {NEXT_WITHIN:?}"), |(_, age)| format!(
            "{} ms after it was sent",
            age / 1000
        ))
    );
    assert_eq!(
        heard.0.len(),
        usize::from(next.is_some()),
        "only the next frame arrives, not the keyframe the relay stopped: {heard:?}"
    );
    // Its 2.4 kB take 0.1 s of this uplink, its queue up to 0.2 s more.
    // Behind the stopped keyframe's remaining ~180 kB: 7 s.
    let (_, age) = next.unwrap_or_else(|| {
        panic!("the frame after the stopped one did not arrive within {NEXT_WITHIN:?}")
    });
    assert!(
        *age <= 1_500_000,
        "the frame after the stopped one arrived {} ms after it was sent: it waited behind the rest of a frame the relay had given up on",
        age / 1000
    );
}

/// The processes and the proxy of a call through a slow uplink, for as long
/// as it lives.
struct Stack {
    _nats: SuperCluster,
    relay: RelayProcess,
    _uplink: UdpDelayProxy,
}

impl Stack {
    /// A relay, a watcher next to it and a sender behind `uplink` (a link of
    /// the latency lab, JSON), both in [`ROOM`].
    async fn behind(uplink: &str, dir: &Path) -> (Stack, Peer, Peer) {
        let (nats, relay) = support::webtransport_relay(dir, SECRET).await;
        let issuer = DevIssuer::new(SECRET);
        let near = relay.candidate(TransportKind::WebTransport);
        let link: LinkSpec = serde_json::from_str(uplink).unwrap();
        let proxy = UdpDelayProxy::start(
            "127.0.0.1:0".parse().unwrap(),
            format!("127.0.0.1:{}", relay.wt_port).parse().unwrap(),
            link,
            1,
        )
        .unwrap();
        let mut behind = near.clone();
        behind.url = format!("https://{}/", proxy.local_addr());
        let watcher = support::joined(&near, &issuer, ROOM, "watcher", T).await;
        let sender = support::joined(&behind, &issuer, ROOM, "sender", T).await;
        let stack = Stack {
            _nats: nats,
            relay,
            _uplink: proxy,
        };
        (stack, watcher, sender)
    }
}
