//! What the relay does with WebTransport datagrams it cannot use, now that
//! it reads them straight from QUIC (`vendor/wtransport`, PATCHED.md: the
//! release's connection driver read them and passed them on).
//!
//! Each datagram of a WebTransport session starts with its session's quarter
//! stream id (RFC 9297). This client speaks the session through wtransport
//! but writes its datagrams' headers itself, through the QUIC connection
//! underneath, so it can name another session or break the header.

mod support;

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rallypoint_protocol::v1::{ClientFrame, Probe, client_frame, server_frame};
use rallypoint_protocol::{decode_server_frame, encode};
use support::*;

/// HTTP/3's error for a malformed datagram (RFC 9297 §5).
const H3_DATAGRAM_ERROR: u64 = 0x33;
/// The quarter stream id of the client's first bidirectional stream, which
/// carries the session's CONNECT; 1 names a session that does not exist.
const THIS_SESSION: u8 = 0x00;
const ANOTHER_SESSION: u8 = 0x01;
/// A two-byte varint with its second byte missing.
const BROKEN_HEADER: &[u8] = &[0x40];
const T: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datagram_for_another_session_is_dropped_and_a_broken_header_closes_only_its_connection()
{
    let lab = Lab::two_regions(&[]).await;

    let client = Session::open(&lab, "mallory").await;
    client.probe(THIS_SESSION, 1);
    assert_eq!(
        client.answer_within(T).await,
        Some(1),
        "the relay did not answer a well-formed probe datagram"
    );

    client.probe(ANOTHER_SESSION, 2);
    assert_eq!(
        client.answer_within(Duration::from_millis(700)).await,
        None,
        "the relay answered a datagram of a session this connection does not have"
    );
    client.probe(THIS_SESSION, 3);
    assert_eq!(
        client.answer_within(T).await,
        Some(3),
        "a datagram of another session broke the connection"
    );

    client
        .quic()
        .send_datagram(Bytes::from_static(BROKEN_HEADER))
        .unwrap();
    let closed = tokio::time::timeout(T, client.quic().closed())
        .await
        .expect("the relay kept a connection that sent a datagram with a broken header");
    match closed {
        wtransport::quinn::ConnectionError::ApplicationClosed(close) => assert_eq!(
            close.error_code.into_inner(),
            H3_DATAGRAM_ERROR,
            "closed with another code: {close:?}"
        ),
        other => panic!("closed otherwise than with H3_DATAGRAM_ERROR: {other:?}"),
    }

    // The relay serves the next client as before.
    let next = Session::open(&lab, "alice").await;
    next.probe(THIS_SESSION, 4);
    assert_eq!(next.answer_within(T).await, Some(4));
}

/// A WebTransport session that said Hello and was welcomed: from then on the
/// relay reads its datagrams.
struct Session(RawWtSession);

impl Session {
    async fn open(lab: &Lab, user: &str) -> Session {
        let hello = hello_frame(lab.issuer.mint("r", user, user, Duration::from_secs(60)));
        let session = RawWtSession::open(lab, 0, &[hello], |kind| {
            matches!(kind, server_frame::Kind::Welcome(_))
        })
        .await;
        Session(session)
    }

    fn quic(&self) -> &wtransport::quinn::Connection {
        self.0.connection.quic_connection()
    }

    /// Sends a probe as a datagram whose header names `session`.
    fn probe(&self, session: u8, seq: u64) {
        let probe = ClientFrame::of(client_frame::Kind::Probe(Probe {
            seq,
            client_send_us: 0,
        }));
        let mut datagram = BytesMut::new();
        datagram.put_u8(session);
        datagram.put_slice(&encode(&probe));
        self.quic().send_datagram(datagram.freeze()).unwrap();
    }

    /// The sequence number of the next probe answer that comes as a
    /// datagram within `within`.
    async fn answer_within(&self, within: Duration) -> Option<u64> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let datagram = tokio::time::timeout_at(deadline, self.0.connection.receive_datagram())
                .await
                .ok()?
                .ok()?;
            if let Ok(frame) = decode_server_frame(datagram.payload())
                && let Some(server_frame::Kind::ProbeAck(ack)) = frame.kind
            {
                return Some(ack.seq);
            }
        }
    }
}
