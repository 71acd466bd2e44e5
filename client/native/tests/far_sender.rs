//! A client far from its relay sends video frames too large for a datagram,
//! each on a unidirectional stream of its own. How many it may have in
//! flight is set by the relay's stream credit and by the client's own
//! bound; if either waits a round trip per few frames (the relay reading
//! four streams at once, the client holding a stream until the relay
//! acknowledges it), a camera and a screen share from a distant client are
//! cut, every lost delta freezing a receiver's picture until a keyframe.
//! A real relay and NATS server on loopback; a UDP delay proxy is the
//! distance. With the relay reading 4 streams at once and the client holding
//! each until acknowledged, half the frames were given up; with either fixed
//! alone, a fifth to a half.

use std::time::Duration;

use bytes::Bytes;
use rallypoint_client::TransportKind;
use rallypoint_protocol::v1::{TrackKind, server_frame};
use rallypoint_testkit::proxy::{LinkSpec, UdpDelayProxy};
use rallypoint_testkit::tokens::DevIssuer;

mod support;

const SECRET: &str = "far-sender-test-secret";
const ROOM: &str = "far";
const T: Duration = Duration::from_secs(15);
/// A geostationary satellite's round trip, the longest path a call meets.
const RTT_MS: f64 = 600.0;
/// Three seconds of a camera and a screen share at 30 frames a second each.
const FRAMES_PER_TRACK: u64 = 90;
const FRAME_INTERVAL: Duration = Duration::from_micros(33_333);
/// A video delta of the capacity benchmark: two packets.
const DELTA: usize = 2_400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_600_ms_away_sends_its_camera_and_screen_share_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (_nats, relay) = support::webtransport_relay(dir.path(), SECRET).await;
    let issuer = DevIssuer::new(SECRET);
    let near = relay.candidate(TransportKind::WebTransport);
    let proxy = UdpDelayProxy::start(
        "127.0.0.1:0".parse().unwrap(),
        format!("127.0.0.1:{}", relay.wt_port).parse().unwrap(),
        LinkSpec::new(RTT_MS, 0.0, 0.0),
        1,
    )
    .unwrap();
    let mut far = near.clone();
    far.url = format!("https://{}/", proxy.local_addr());
    let mut watcher = support::joined(&near, &issuer, ROOM, "watcher", T).await;
    let sender = support::joined(&far, &issuer, ROOM, "far-sender", T).await;

    let sending = async {
        for seq in 0..FRAMES_PER_TRACK {
            for kind in [TrackKind::Video, TrackKind::Screen] {
                // Each track starts with a keyframe of the same size, so
                // nothing waits for one.
                assert!(sender.send_media(kind, seq, 0, seq == 0, Bytes::from(vec![7; DELTA])));
            }
            tokio::time::sleep(FRAME_INTERVAL).await;
        }
    };
    let receiving = async {
        let mut received = 0;
        let deadline = tokio::time::Instant::now() + T;
        while received < 2 * FRAMES_PER_TRACK {
            let Ok(Some(frame)) = tokio::time::timeout_at(deadline, watcher.recv()).await else {
                break;
            };
            if let Some(server_frame::Kind::Media(_)) = frame.frame.kind {
                received += 1;
            }
        }
        received
    };
    let ((), received) = tokio::join!(sending, receiving);

    assert_eq!(
        sender.conn.frames_given_up(),
        0,
        "the far sender gave up frames for want of a stream; the relay's log: {}",
        relay.log_tail(20)
    );
    assert_eq!(
        received,
        2 * FRAMES_PER_TRACK,
        "the watcher got {received} of the far sender's {} frames",
        2 * FRAMES_PER_TRACK
    );
    drop(proxy);
}
