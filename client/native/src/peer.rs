//! A participant's connection to one relay: Hello/Welcome, Join, media, and
//! waiting for frames. The election driver, `rallypoint join` and the
//! integration tests all talk to relays through this.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rallypoint_client::Candidate;
use rallypoint_client::session::handshake::{self, Answer};
use rallypoint_protocol::v1::{
    ClientFrame, ClientInfo, ErrorCode, Join, Joined, KeyframeRequest, Leave, Media, Probe,
    ServerFrame, TrackKind, Welcome, client_frame, server_frame,
};

use crate::connection::{ConnectError, Connection, Received};

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{relay}: refused with {code:?}: {message}")]
    Refused {
        relay: String,
        code: ErrorCode,
        message: String,
    },
    #[error("{relay}: connection closed before {waiting_for}")]
    Closed { relay: String, waiting_for: String },
    #[error("{relay}: no {waiting_for} within {timeout:?}")]
    Timeout {
        relay: String,
        waiting_for: String,
        timeout: Duration,
    },
}

/// Who the client is, the same on every relay it talks to.
pub use rallypoint_client::session::Identity as ClientIdentity;

/// A native client's identity for `token`: a fresh random session id (the
/// peer id derives from it) and this build's version.
pub fn identity(token: impl Into<String>) -> ClientIdentity {
    ClientIdentity {
        token: token.into(),
        session_id: Bytes::from(rand::random::<[u8; 16]>().to_vec()),
        info: ClientInfo {
            platform: "native".into(),
            client_version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        },
    }
}

/// An authenticated connection to one relay.
pub struct Peer {
    pub candidate: Candidate,
    pub conn: Connection,
    pub welcome: Welcome,
    /// When the connection attempt started and when Welcome arrived.
    pub connect_time: Duration,
}

impl Peer {
    /// Connects and authenticates (Hello → Welcome). The connection is probe-only.
    pub async fn connect(
        candidate: &Candidate,
        identity: &ClientIdentity,
        timeout: Duration,
    ) -> Result<Peer, PeerError> {
        let started = Instant::now();
        let mut conn = Connection::connect(candidate, timeout).await?;
        conn.send(&handshake::hello(
            &identity.token,
            &identity.session_id,
            &identity.info,
        ));
        let relay = candidate.label();
        let remaining = timeout.saturating_sub(started.elapsed());
        let welcome =
            wait_for(
                &mut conn,
                &relay,
                "Welcome",
                remaining,
                |kind| match handshake::answer(kind)? {
                    Answer::Welcome(welcome) => Some(welcome),
                    Answer::Refused { .. } => None,
                },
            )
            .await?;
        Ok(Peer {
            candidate: candidate.clone(),
            conn,
            welcome,
            connect_time: started.elapsed(),
        })
    }

    pub fn peer_id(&self) -> &str {
        &self.welcome.peer_id
    }

    /// Joins the token's room; returns who is already there.
    pub async fn join(
        &mut self,
        room: &str,
        join_seq: u64,
        timeout: Duration,
    ) -> Result<Joined, PeerError> {
        self.conn
            .send(&ClientFrame::of(client_frame::Kind::Join(Join {
                room: room.to_owned(),
                join_seq,
                ..Default::default()
            })));
        let relay = self.candidate.label();
        wait_for(
            &mut self.conn,
            &relay,
            "Joined",
            timeout,
            |kind| match kind {
                server_frame::Kind::Joined(j) => Some(j.clone()),
                _ => None,
            },
        )
        .await
    }

    /// Hangs up: the room is told at once.
    pub fn leave(&self) {
        self.conn
            .send(&ClientFrame::of(client_frame::Kind::Leave(Leave {
                moving: false,
            })));
    }

    /// Leaves the room on this connection because the participant moved to
    /// another relay; the connection stays open, probe-only.
    pub fn leave_moving(&self) {
        self.conn
            .send(&ClientFrame::of(client_frame::Kind::Leave(Leave {
                moving: true,
            })));
    }

    /// Prepares a move to this relay (`Join.prepare`, make-before-break):
    /// the relay forwards this connection's media into `room` and the
    /// room's media to it, telling nobody, until a Join or a Leave.
    pub fn prepare(&self, room: &str) {
        self.conn
            .send(&ClientFrame::of(client_frame::Kind::Join(Join {
                room: room.to_owned(),
                prepare: true,
                ..Default::default()
            })));
    }

    pub fn probe(&self, seq: u64, client_send_us: u64) -> bool {
        self.conn
            .send(&ClientFrame::of(client_frame::Kind::Probe(Probe {
                seq,
                client_send_us,
            })))
    }

    pub fn send_media(
        &self,
        kind: TrackKind,
        seq: u64,
        capture_us: u64,
        keyframe: bool,
        payload: Bytes,
    ) -> bool {
        self.conn
            .send(&media(kind, seq, capture_us, keyframe, payload))
    }

    pub fn request_keyframe(&self, from_peer: &str, kind: TrackKind) {
        self.conn
            .send(&ClientFrame::of(client_frame::Kind::KeyframeRequest(
                KeyframeRequest {
                    peer_id: from_peer.to_owned(),
                    kind: kind as i32,
                },
            )));
    }

    pub async fn recv(&mut self) -> Option<Received> {
        self.conn.recv().await
    }

    /// Waits for the first frame `pick` accepts, skipping others; an Error frame
    /// from the relay ends the wait with [`PeerError::Refused`].
    pub async fn expect<T>(
        &mut self,
        waiting_for: &str,
        timeout: Duration,
        pick: impl FnMut(&server_frame::Kind) -> Option<T>,
    ) -> Result<T, PeerError> {
        let relay = self.candidate.label();
        wait_for(&mut self.conn, &relay, waiting_for, timeout, pick).await
    }
}

async fn wait_for<T>(
    conn: &mut Connection,
    relay: &str,
    waiting_for: &str,
    timeout: Duration,
    mut pick: impl FnMut(&server_frame::Kind) -> Option<T>,
) -> Result<T, PeerError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let received = tokio::time::timeout_at(deadline, conn.recv())
            .await
            .map_err(|_| PeerError::Timeout {
                relay: relay.to_owned(),
                waiting_for: waiting_for.to_owned(),
                timeout,
            })?;
        let Some(Received {
            frame: ServerFrame { kind: Some(kind) },
            ..
        }) = received
        else {
            if received.is_none() {
                return Err(PeerError::Closed {
                    relay: relay.to_owned(),
                    waiting_for: waiting_for.to_owned(),
                });
            }
            continue;
        };
        if let Some(found) = pick(&kind) {
            return Ok(found);
        }
        if let Some((code, message)) = handshake::refusal(&kind) {
            return Err(PeerError::Refused {
                relay: relay.to_owned(),
                code,
                message,
            });
        }
    }
}

/// A client's media frame (the relay fills in the sender): what
/// [`Peer::send_media`] sends, for a sender that hands it over otherwise
/// (`Sender::send_datagram_when_room`).
pub fn media(
    kind: TrackKind,
    seq: u64,
    capture_us: u64,
    keyframe: bool,
    payload: Bytes,
) -> ClientFrame {
    ClientFrame::of(client_frame::Kind::Media(Media {
        sender: String::new(),
        kind: kind as i32,
        seq,
        capture_us,
        keyframe,
        payload,
    }))
}
