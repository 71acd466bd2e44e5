//! A sender that must not outrun its own WebTransport connection — the
//! relay benchmark's blast — waits for room in the connection's datagram
//! buffer. Handed to the connection as media is, a blast loses most of its
//! datagrams in the sender's own QUIC stack (the oldest are dropped for the
//! newest), and a benchmark would blame the relay for them. A real relay
//! and NATS server on loopback; what is counted is what the sender's QUIC
//! connection put on the wire.

use std::time::Duration;

use bytes::Bytes;
use rallypoint_client::TransportKind;
use rallypoint_client_native::{Peer, media};
use rallypoint_protocol::v1::TrackKind;
use rallypoint_testkit::tokens::DevIssuer;

mod support;

const SECRET: &str = "datagram-blast-test-secret";
const ROOM: &str = "blast";
const T: Duration = Duration::from_secs(10);
/// Ten times the connection's datagram buffer (1 MiB) in 1 KB frames.
const BLAST: u64 = 10_000;

/// One frame's audio payload: 1 KB.
fn payload() -> Bytes {
    Bytes::from(vec![7; 1024])
}

/// Waits up to `within` for `peer`'s connection to have sent `count`
/// datagrams since `from`; returns what it had sent by then.
async fn sent_since(peer: &Peer, from: u64, count: u64, within: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let sent = peer
            .conn
            .datagrams_sent()
            .expect("a WebTransport connection")
            - from;
        if sent >= count || tokio::time::Instant::now() >= deadline {
            return sent;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blast_sent_when_there_is_room_leaves_whole_and_one_sent_as_media_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let (_nats, relay) = support::webtransport_relay(dir.path(), SECRET).await;
    let candidate = relay.candidate(TransportKind::WebTransport);
    let issuer = DevIssuer::new(SECRET);
    let connect = |user| support::joined(&candidate, &issuer, ROOM, user, T);

    let paced = connect("paced").await;
    let before = paced.conn.datagrams_sent().unwrap();
    let paced_blast = async {
        for seq in 0..BLAST {
            let frame = media(TrackKind::Audio, seq, 0, false, payload());
            assert!(
                paced.conn.send_datagram_when_room(&frame).await,
                "frame {seq} refused; the relay's log: {}",
                relay.log_tail(20)
            );
        }
    };
    tokio::time::timeout(T * 3, paced_blast)
        .await
        .expect("the paced blast left within 30 s (10 MB on loopback)");
    let sent = sent_since(&paced, before, BLAST, T).await;
    assert_eq!(
        sent, BLAST,
        "the paced blast lost datagrams in its own connection"
    );

    // The reason the method exists: the same blast handed over as media.
    let unpaced = connect("unpaced").await;
    let before = unpaced.conn.datagrams_sent().unwrap();
    for seq in 0..BLAST {
        unpaced.send_media(TrackKind::Audio, seq, 0, false, payload());
    }
    let sent = sent_since(&unpaced, before, BLAST, Duration::from_secs(3)).await;
    assert!(
        sent < BLAST,
        "handed over as media, all {BLAST} datagrams left: the connection no longer drops \
         a blast's oldest datagrams, and the relay benchmark's pacing may be moot"
    );
}
