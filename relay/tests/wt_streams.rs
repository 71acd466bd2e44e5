//! A WebTransport client writes at most `MAX_STREAMS_IN_FLIGHT` uni streams
//! at once and gives up on stream frames beyond that; what it gives up on
//! it counts, so a load's drops are charged to the relay only when the
//! relay dropped them (and the relay counts those, by reason).

mod support;

use std::time::Duration;

use bytes::Bytes;
use rallypoint_client::TransportKind::WebTransport;
use rallypoint_client_native::connection::MAX_STREAMS_IN_FLIGHT;
use rallypoint_protocol::v1::TrackKind;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_frames_past_the_in_flight_limit_are_counted_not_lost_silently() {
    const FRAMES: u64 = 200;
    // The burst is far over the per-sender default budget: the relay must
    // drop nothing of it.
    let lab = Lab::two_regions(&UNMETERED_MEDIA).await;
    let (alice, _) = lab.participant(0, WebTransport, "burst", "alice").await;
    let (mut bob, joined) = lab.participant(0, WebTransport, "burst", "bob").await;
    wait_sees(&mut bob, &joined, &[alice.peer_id()]).await;

    // 4 KB frames are too large for a datagram: each needs a stream.
    for seq in 0..FRAMES {
        alice.send_media(TrackKind::Video, seq, 0, true, Bytes::from(vec![7; 4000]));
    }
    let arrived = media_seqs_from(&mut bob, alice.peer_id(), 0..FRAMES, Duration::from_secs(5))
        .await
        .len() as u64;
    let given_up = alice.conn.frames_given_up();
    assert!(
        given_up > 0,
        "a burst of {FRAMES} stream frames never had {MAX_STREAMS_IN_FLIGHT} streams in flight"
    );
    // Streams finish in any order: a frame that reaches the relay after
    // one far newer of the same track is too late to play, and the relay
    // drops it as stale — counted, under its own reason.
    let stats = lab.relays[0].stats().await.unwrap();
    let stale = stats["media_stale"].as_u64().unwrap();
    assert_eq!(stats["media_dropped"], 0, "{stats}");
    assert_eq!(stats["media_duplicates"], 0, "{stats}");
    assert_eq!(
        arrived + given_up + stale,
        FRAMES,
        "every frame arrived or was counted: {arrived} arrived, {given_up} given up by the client, \
         {stale} stale at the relay"
    );
}
