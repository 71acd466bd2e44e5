//! How the relay sends WebTransport media too large for a datagram: a
//! client that reads groups (`Hello.media_stream_groups`) gets each picture
//! track on one stream from a keyframe to the next; any other client, and
//! audio, one stream per frame (`rallypoint_protocol::media_streams`).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rallypoint_client::TransportKind::WebTransport;
use rallypoint_client_native::Peer;
use rallypoint_protocol::decode_server_frame;
use rallypoint_protocol::media_streams::StreamFrames;
use rallypoint_protocol::v1::{TrackKind, server_frame};
use rallypoint_testkit::proxy::{LinkSpec, UdpDelayProxy};
use support::*;
use tokio::io::AsyncReadExt;

/// Larger than a datagram: a 24 kB keyframe and 2.4 kB deltas, as the
/// capacity benchmark's video; and one 1.5 kB audio frame.
const KEYFRAME: usize = 24_000;
const DELTA: usize = 2_400;
const LARGE_AUDIO: usize = 1_500;

/// What one stream carried.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Carried {
    /// Length-prefixed frames (a group), not one bare frame.
    grouped: bool,
    /// (kind, seq) of each frame, in order.
    frames: Vec<(i32, u64)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reading_groups_gets_a_stream_per_group_of_pictures_and_others_a_stream_per_frame()
{
    let lab = Lab::two_regions(&UNMETERED_MEDIA).await;
    let (alice, _) = lab.participant(0, WebTransport, "r", "alice").await;
    let grouped = Receiver::join(&lab, "grouped", true).await;
    let single = Receiver::join(&lab, "single", false).await;

    // Two groups of pictures (keyframes at 0 and 5), then audio too large
    // for a datagram.
    for seq in 0..10 {
        let keyframe = seq % 5 == 0;
        let size = if keyframe { KEYFRAME } else { DELTA };
        alice.send_media(
            TrackKind::Video,
            seq,
            0,
            keyframe,
            Bytes::from(vec![seq as u8; size]),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    alice.send_media(
        TrackKind::Audio,
        0,
        0,
        false,
        Bytes::from(vec![0; LARGE_AUDIO]),
    );

    let video = TrackKind::Video as i32;
    let audio = TrackKind::Audio as i32;
    let group = |seqs: std::ops::Range<u64>| Carried {
        grouped: true,
        frames: seqs.map(|seq| (video, seq)).collect(),
    };
    let bare = |kind, seq| Carried {
        grouped: false,
        frames: vec![(kind, seq)],
    };
    assert_eq!(
        grouped.streams(11).await,
        [group(0..5), group(5..10), bare(audio, 0)],
        "a client that reads groups"
    );
    let mut one_each: Vec<Carried> = (0..10).map(|seq| bare(video, seq)).collect();
    one_each.push(bare(audio, 0));
    assert_eq!(
        single.streams(11).await,
        one_each,
        "a client that does not read groups"
    );
}

/// Each group holds a stream while its track sends, and a client grants a
/// hundred or so: a room with more picture tracks than the relay opens groups
/// for gets the rest a frame per stream instead of losing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picture_tracks_beyond_the_groups_a_connection_may_hold_go_a_frame_per_stream() {
    let lab = Lab::two_regions(&UNMETERED_MEDIA).await;
    // 33 senders with camera and screen: 66 picture tracks.
    const SENDERS: usize = 33;
    let senders = senders(&lab, SENDERS).await;
    let bob = Receiver::join(&lab, "bob", true).await;
    for seq in 0..2 {
        for sender in &senders {
            for kind in [TrackKind::Video, TrackKind::Screen] {
                sender.send_media(kind, seq, 0, seq == 0, Bytes::from(vec![1; DELTA]));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let streams = bob.streams(SENDERS * 2 * 2).await;
    let frames: usize = streams.iter().map(|c| c.frames.len()).sum();
    let groups = streams.iter().filter(|c| c.grouped).count();
    assert_eq!(frames, SENDERS * 2 * 2, "frames were lost: {streams:?}");
    assert!(
        groups < SENDERS * 2,
        "every track had a group of its own ({groups})"
    );
    let stats = lab.relays[0].stats().await.unwrap();
    assert_eq!(stats["media_dropped"].as_u64(), Some(0), "{stats}");
}

/// Before groups, each frame's stream held one of 32 permits until the
/// client acknowledged it: a receiver 100 ms away could be sent about 300
/// large frames a second, less than a room of 11 with cameras and screens
/// on sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_to_a_distant_receiver_is_not_held_back_by_acknowledgements() {
    let lab = Lab::two_regions(&UNMETERED_MEDIA).await;
    let senders = senders(&lab, SENDERS).await;
    let (mut bob, proxy) = far_participant(&lab, "bob", 100.0).await;

    // One second of 10 senders' cameras and screens at 30 fps (a keyframe
    // each to start): 600 frames of 2.4 kB.
    const SENDERS: usize = 10;
    const FPS: u64 = 30;
    const FRAMES: usize = SENDERS * 2 * FPS as usize;
    let receive = tokio::spawn(async move {
        media_until(&mut bob, FRAMES, Duration::from_secs(10))
            .await
            .len()
    });
    let mut pace = tokio::time::interval(Duration::from_micros(1_000_000 / FPS));
    for seq in 0..FPS {
        pace.tick().await;
        for sender in &senders {
            for kind in [TrackKind::Video, TrackKind::Screen] {
                sender.send_media(kind, seq, 0, seq == 0, Bytes::from(vec![seq as u8; DELTA]));
            }
        }
    }
    assert_eq!(
        receive.await.unwrap(),
        FRAMES,
        "frames were lost on the way to a receiver 100 ms away"
    );
    let stats = lab.relays[0].stats().await.unwrap();
    assert_eq!(stats["media_dropped"].as_u64(), Some(0), "{stats}");
    drop(proxy);
}

/// With nothing else bounding the frames in flight, a receiver whose path
/// died had everything sent to it buffered in QUIC until its connection
/// timed out (10 s; quinn's send window was 10 MB). The relay's send window
/// (1 MiB) makes its writes wait, and the waits give up within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_whose_path_dies_loses_frames_within_seconds_not_at_its_timeout() {
    let lab = Lab::two_regions(&UNMETERED_MEDIA).await;
    let (alice, _) = lab.participant(0, WebTransport, "r", "alice").await;
    let (_bob, mut proxy) = far_participant(&lab, "bob", 0.0).await;
    // Media reaches bob, then his path goes dead.
    alice.send_media(TrackKind::Video, 0, 0, true, Bytes::from(vec![0; KEYFRAME]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.stop();

    // 2.4 MB in 4 s, well under the connection's 10 s idle timeout, in
    // groups of 30 frames: no one stream reaches the client's stream window
    // (1.25 MB), so only the connection's send window can hold it back.
    let started = tokio::time::Instant::now();
    let mut pace = tokio::time::interval(Duration::from_millis(4));
    for seq in 1..1000 {
        pace.tick().await;
        let keyframe = seq % 30 == 0;
        alice.send_media(
            TrackKind::Video,
            seq,
            0,
            keyframe,
            Bytes::from(vec![0; DELTA]),
        );
    }
    // Before the idle timeout could drop it all at once.
    let within =
        (started + Duration::from_secs(6)).saturating_duration_since(tokio::time::Instant::now());
    // A frame is dropped, and its track's frames after it are skipped
    // until the next keyframe.
    if let Err(stats) = lab.relays[0]
        .stats_once(within, |stats| {
            stats["media_dropped"].as_u64().unwrap() > 0
                && stats["media_skipped_awaiting_keyframe"].as_u64().unwrap() > 0
        })
        .await
    {
        panic!(
            "a dead path's frames were not dropped and skipped within {:?}: {stats}",
            started.elapsed()
        );
    }
}

/// `n` participants of room "r" on the first relay, over WebTransport.
async fn senders(lab: &Lab, n: usize) -> Vec<Peer> {
    let mut senders = Vec::new();
    for i in 0..n {
        let (sender, _) = lab
            .participant(0, WebTransport, "r", &format!("sender-{i}"))
            .await;
        senders.push(sender);
    }
    senders
}

/// `user` in room "r" through a UDP delay proxy of `rtt_ms` in front of the
/// first relay; the proxy must live as long as the path should.
async fn far_participant(lab: &Lab, user: &str, rtt_ms: f64) -> (Peer, UdpDelayProxy) {
    lab.participant_behind(user, LinkSpec::new(rtt_ms, 0.0, 0.0))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_streams_loses_frames_alone() {
    let lab = Lab::two_regions(&UNMETERED_MEDIA).await;
    let (alice, _) = lab.participant(0, WebTransport, "r", "alice").await;
    let healthy = Receiver::join(&lab, "healthy", true).await;
    let stalled = Receiver::join_without_reading(&lab, "stalled", true).await;

    // Every frame a keyframe, so every frame starts a group: the stalled
    // client's unread streams use up its stream credit (100 in quinn), and
    // the relay's streams to it wait, then give up.
    const FRAMES: u64 = 200;
    for seq in 0..FRAMES {
        alice.send_media(
            TrackKind::Video,
            seq,
            0,
            true,
            Bytes::from(vec![seq as u8; 8_000]),
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let heard: Vec<u64> = healthy
        .streams(FRAMES as usize)
        .await
        .iter()
        .flat_map(|c| c.frames.iter().map(|&(_, seq)| seq))
        .collect();
    assert_eq!(
        heard,
        (0..FRAMES).collect::<Vec<_>>(),
        "the client that reads lost frames"
    );
    // The stalled client's streams give up within the relay's deadline.
    let dropped = lab.relays[0]
        .stats_once(T, |stats| stats["media_dropped"].as_u64().unwrap() > 0)
        .await
        .expect("the stalled client's frames were never dropped")["media_dropped"]
        .as_u64()
        .unwrap();
    assert!(dropped < FRAMES, "more dropped than it was sent: {dropped}");
    drop(stalled);
}

/// A hand-written WebTransport client in room "r" that records what each
/// unidirectional stream from the relay carries.
struct Receiver {
    streams: Arc<Mutex<Vec<Carried>>>,
    session: RawWtSession,
}

impl Receiver {
    async fn join(lab: &Lab, user: &str, reads_groups: bool) -> Receiver {
        let receiver = Self::join_without_reading(lab, user, reads_groups).await;
        tokio::spawn(record_streams(
            receiver.session.connection.clone(),
            receiver.streams.clone(),
        ));
        receiver
    }

    /// In the room, but never accepting a stream.
    async fn join_without_reading(lab: &Lab, user: &str, reads_groups: bool) -> Receiver {
        let session = RawWtSession::joined(lab, 0, "r", user, reads_groups).await;
        Receiver {
            streams: Arc::new(Mutex::new(Vec::new())),
            session,
        }
    }

    /// The streams finished so far once they carried `frames` frames (or
    /// after the deadline), ordered by their first frame (audio last).
    async fn streams(&self, frames: usize) -> Vec<Carried> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let carried = self.streams.lock().unwrap().clone();
            let total: usize = carried.iter().map(|c| c.frames.len()).sum();
            if total >= frames || tokio::time::Instant::now() >= deadline {
                let mut carried = carried;
                carried.sort_by_key(|c| {
                    let (kind, seq) = c.frames[0];
                    (kind == TrackKind::Audio as i32, seq)
                });
                return carried;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn record_streams(connection: wtransport::Connection, streams: Arc<Mutex<Vec<Carried>>>) {
    while let Ok(mut stream) = connection.accept_uni().await {
        let streams = streams.clone();
        tokio::spawn(async move {
            let mut wire = Vec::new();
            if stream.read_to_end(&mut wire).await.is_err() || wire.is_empty() {
                return;
            }
            let mut reader = StreamFrames::new();
            reader.push(&wire).unwrap();
            let mut frames = Vec::new();
            while let Some(frame) = reader.next_frame().unwrap() {
                frames.push(frame);
            }
            frames.extend(reader.finish().unwrap());
            let frames = frames
                .into_iter()
                .filter_map(|frame| match decode_server_frame(frame).unwrap().kind {
                    Some(server_frame::Kind::Media(m)) => Some((m.kind, m.seq)),
                    _ => None,
                })
                .collect();
            streams.lock().unwrap().push(Carried {
                grouped: wire[0] == 0,
                frames,
            });
        });
    }
}
