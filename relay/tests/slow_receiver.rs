//! One slow receiver must never slow a room.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rallypoint_client::TransportKind::WebSocket;
use rallypoint_protocol::v1::{ClientFrame, Join, TrackKind, client_frame, server_frame};
use rallypoint_protocol::{decode_server_frame, encode};
use support::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_stops_reading_loses_frames_alone_and_the_sender_is_asked_for_a_keyframe() {
    // This test blasts ~10 MB/s: far over the per-sender default budget.
    let lab = Lab::two_regions(&[&["--media-queue", "128"][..], &UNMETERED_MEDIA].concat()).await;
    let (mut alice, _) = lab.participant(0, WebSocket, "r", "alice").await;
    let (mut bob, jb) = lab.participant(0, WebSocket, "r", "bob").await;
    wait_sees(&mut bob, &jb, &[alice.peer_id()]).await;

    // A raw client that joins and then never reads again.
    let (mut stalled, _) = tokio_tungstenite::connect_async(lab.relays[0].ws_url())
        .await
        .unwrap();
    let hello = hello_frame(
        lab.issuer
            .mint("r", "stalled", "Stalled", Duration::from_secs(60)),
    );
    stalled.send(Message::Binary(hello)).await.unwrap();
    let join = ClientFrame::of(client_frame::Kind::Join(Join {
        room: "r".into(),
        join_seq: 0,
        ..Default::default()
    }));
    stalled.send(Message::Binary(encode(&join))).await.unwrap();
    loop {
        let Some(Ok(Message::Binary(bytes))) = stalled.next().await else {
            panic!("stalled client closed before Joined")
        };
        if matches!(
            decode_server_frame(bytes).unwrap().kind,
            Some(server_frame::Kind::Joined(_))
        ) {
            break;
        }
    }

    // ~19 MB of video: far more than the stalled client's queue (4 MB) and
    // socket buffers hold. Paced so that the healthy receiver has ~0.4 s of
    // queue to ride out a stall of its own on a loaded machine.
    const FRAMES: u64 = 600;
    let payload = Bytes::from(vec![7u8; 32 * 1024]);
    let receive = tokio::spawn(async move {
        let got = media_until(&mut bob, FRAMES as usize, Duration::from_secs(20)).await;
        got.iter().map(|m| m.seq).collect::<Vec<_>>()
    });
    for seq in 0..FRAMES {
        alice.send_media(TrackKind::Video, seq, 0, seq % 100 == 0, payload.clone());
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let bob_got = receive.await.unwrap();
    assert_eq!(
        bob_got,
        (0..FRAMES).collect::<Vec<_>>(),
        "the fast receiver lost frames"
    );

    let stats = lab.relays[0].stats().await.unwrap();
    let dropped = stats["media_dropped"].as_u64().unwrap();
    assert!(
        dropped > 0,
        "the stalled receiver's frames were never dropped: {stats}"
    );
    assert!(
        stats["keyframe_requests_sent"].as_u64().unwrap() > 0,
        "{stats}"
    );
    let asked = alice
        .expect("KeyframeRequest", T, |kind| match kind {
            server_frame::Kind::KeyframeRequest(k) => Some(k.kind),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(asked, TrackKind::Video as i32);
    drop(stalled);
}
