//! A client whose uplink is slower than the media it sends: what reaches the
//! room must be recent, not seconds old.
//!
//! QUIC sends datagrams as its congestion window allows and keeps the rest,
//! up to quinn's datagram buffer (1 MiB). A client sending twice what its
//! uplink carries filled it, and everyone in the room heard it later and
//! later: the buffer's worth, 16 s at 500 kbit/s. The client now bounds its
//! queue by how long it takes to drain at the connection's rate, as the
//! relay does towards its receivers (`rallypoint_protocol::queue_age`).
//! A real relay and NATS server on loopback; a UDP proxy with a bottleneck
//! is the uplink.

use std::time::Duration;

use bytes::Bytes;
use rallypoint_client::TransportKind;
use rallypoint_protocol::v1::TrackKind;
use rallypoint_testkit::media_age::{Ages, now_us, quantile_ms};
use rallypoint_testkit::proxy::{LinkSpec, UdpDelayProxy};
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
    let (_nats, relay) = support::webtransport_relay(dir.path(), SECRET).await;
    let issuer = DevIssuer::new(SECRET);
    let near = relay.candidate(TransportKind::WebTransport);
    let link: LinkSpec = serde_json::from_str(UPLINK).unwrap();
    let proxy = UdpDelayProxy::start(
        "127.0.0.1:0".parse().unwrap(),
        format!("127.0.0.1:{}", relay.wt_port).parse().unwrap(),
        link,
        1,
    )
    .unwrap();
    let mut slow = near.clone();
    slow.url = format!("https://{}/", proxy.local_addr());
    let mut watcher = support::joined(&near, &issuer, ROOM, "watcher", T).await;
    let sender = support::joined(&slow, &issuer, ROOM, "slow-sender", T).await;
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
