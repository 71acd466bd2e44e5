//! How the relay reads the media a WebTransport client sends on
//! unidirectional streams (one frame each, `transport::wt::client_streams`):
//! a stream left unfinished past its deadline costs its frame, not the
//! connection. (The many streams a distant client has in flight:
//! `client/native/tests/far_sender.rs`; a client hoarding unfinished streams:
//! `abuse.rs`.)

mod support;

use std::time::Duration;

use bytes::Bytes;
use rallypoint_client::TransportKind::WebTransport;
use rallypoint_client_native::media;
use rallypoint_protocol::encode;
use rallypoint_protocol::v1::{TrackKind, server_frame};
use support::*;

/// The relay's deadline for a media stream's end (`client_streams::DEADLINE`).
const STREAM_DEADLINE: Duration = Duration::from_secs(5);

/// A video frame too large for a datagram.
fn frame(seq: u64) -> Bytes {
    encode(&media(
        TrackKind::Video,
        seq,
        0,
        true,
        Bytes::from(vec![seq as u8; 2_400]),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_left_unfinished_costs_its_frame_not_the_connection() {
    let lab = Lab::two_regions(&UNMETERED_MEDIA).await;
    let (mut watcher, _) = lab.participant(0, WebTransport, "r", "watcher").await;
    let sender = RawWtSession::joined(&lab, 0, "r", "sender", false).await;

    // Frame 0: half of it, and the stream never finished (a client sending
    // faster than its uplink looks the same to the relay).
    let first = frame(0);
    let mut unfinished = sender.connection.open_uni().await.unwrap().await.unwrap();
    unfinished
        .write_all(&first[..first.len() / 2])
        .await
        .unwrap();
    tokio::time::sleep(STREAM_DEADLINE + Duration::from_secs(1)).await;

    // Frame 1, whole, after the deadline: the connection still carries it.
    let mut next = sender.connection.open_uni().await.unwrap().await.unwrap();
    next.write_all(&frame(1)).await.unwrap();
    next.quic_stream_mut().finish().unwrap();
    let seq = watcher
        .expect("the sender's next frame", T, |kind| match kind {
            server_frame::Kind::Media(m) => Some(m.seq),
            _ => None,
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}; the sender's connection did not carry its next frame. The relay's log: {}",
                lab.relays[0].log_tail(20)
            )
        });
    assert_eq!(seq, 1, "only the whole frame arrives");
    // Counted when the relay's timer fires, which a loaded machine delays.
    let stats = lab.relays[0]
        .stats_once(T, |stats| stats["media_streams_abandoned"] != 0)
        .await
        .unwrap_or_else(|stats| stats);
    assert_eq!(
        stats["media_streams_abandoned"], 1,
        "the unfinished frame is counted: {stats}"
    );
    assert_eq!(stats["frames_rejected"], 0, "and not as malformed: {stats}");
    drop(unfinished);
}
