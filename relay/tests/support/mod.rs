//! A two-region lab for relay tests: a real NATS super-cluster and real relay
//! processes on loopback, plus helpers to make participants.

#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use rallypoint_client::{Candidate, TransportKind};
use rallypoint_client_native::{ClientIdentity, Peer};
use rallypoint_protocol::v1::{
    ClientFrame, Hello, Join, Joined, Media, client_frame, server_frame,
};
use rallypoint_testkit::nats::{NatsRole, SuperCluster, SuperClusterSpec};
use rallypoint_testkit::proxy::{LinkSpec, TcpDelayProxy, UdpDelayProxy};
use rallypoint_testkit::relays::{RelayProcess, RelaySpec};
use rallypoint_testkit::tokens::DevIssuer;

pub const SECRET: &str = "test-secret-shared-by-all-regions";
pub const T: Duration = Duration::from_secs(10);

/// Relay arguments lifting the per-sender media budgets far above what a
/// test's blast sends, so the relay itself drops nothing of it.
pub const UNMETERED_MEDIA: [&str; 4] = [
    "--media-bytes-per-second",
    "100000000",
    "--media-frames-per-second",
    "10000",
];

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub nats: SuperCluster,
    pub relays: Vec<RelayProcess>,
    pub issuer: DevIssuer,
}

impl Lab {
    /// us-east (3 NATS servers) + singapore (2), one relay per region serving
    /// both transports.
    pub async fn two_regions(extra_relay_args: &[&str]) -> Lab {
        Self::start(extra_relay_args, false, false).await
    }

    /// Like [`Lab::two_regions`], with JetStream, for telemetry tests (the
    /// test makes the stream it needs).
    pub async fn two_regions_with_jetstream(extra_relay_args: &[&str]) -> Lab {
        Self::start(extra_relay_args, false, true).await
    }

    /// Like [`Lab::two_regions`], with the gateways between the regions
    /// behind proxies, so `lab.nats.cut_gateways()` partitions them.
    pub async fn two_regions_partitionable(extra_relay_args: &[&str]) -> Lab {
        Self::start(extra_relay_args, true, false).await
    }

    async fn start(extra_relay_args: &[&str], partitionable: bool, jetstream: bool) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let (spec, nats_dir) = (
            SuperClusterSpec::reference(jetstream),
            dir.path().join("nats"),
        );
        let nats = if partitionable {
            SuperCluster::start_with_gateway_proxies(spec, &nats_dir).await
        } else {
            SuperCluster::start(spec, &nats_dir).await
        }
        .expect("NATS super-cluster starts");
        let mut lab = Lab {
            dir,
            nats,
            relays: Vec::new(),
            issuer: DevIssuer::new(SECRET),
        };
        for region in ["us-east", "singapore"] {
            lab.add_relay(region, &format!("{region}-0"), extra_relay_args)
                .await;
        }
        lab
    }

    pub async fn add_relay(&mut self, region: &str, relay_id: &str, extra: &[&str]) -> usize {
        let spec = RelaySpec {
            region: region.into(),
            relay_id: relay_id.into(),
            transports: vec![TransportKind::WebSocket, TransportKind::WebTransport],
            nats: self.nats.access(NatsRole::Relay(region.into()), region),
            jwt_secret: SECRET.into(),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
        };
        let relay = RelayProcess::start(spec, &self.dir.path().join("relays"))
            .await
            .expect("relay starts");
        self.relays.push(relay);
        self.relays.len() - 1
    }

    pub fn candidate(&self, relay: usize, transport: TransportKind) -> Candidate {
        self.relays[relay].candidate(transport)
    }

    pub fn identity(&self, room: &str, user: &str) -> ClientIdentity {
        rallypoint_client_native::identity(self.issuer.mint(
            room,
            user,
            user,
            Duration::from_secs(600),
        ))
    }

    /// Connects as `identity` through `relay` over `transport`, probe-only
    /// (one participant's connections share its identity).
    pub async fn connect(
        &self,
        relay: usize,
        transport: TransportKind,
        identity: &ClientIdentity,
    ) -> Peer {
        Peer::connect(&self.candidate(relay, transport), identity, T)
            .await
            .expect("connects")
    }

    /// Connects and joins `room` through `relay` over `transport`.
    pub async fn participant(
        &self,
        relay: usize,
        transport: TransportKind,
        room: &str,
        user: &str,
    ) -> (Peer, Joined) {
        let identity = self.identity(room, user);
        let mut peer = Peer::connect(&self.candidate(relay, transport), &identity, T)
            .await
            .expect("connects");
        let joined = peer.join(room, 0, T).await.expect("joins");
        (peer, joined)
    }
}

impl Lab {
    /// `user` in room "r" on the first relay over WebTransport, through a
    /// UDP delay proxy doing what `link` says; the proxy must live as long
    /// as the path should.
    pub async fn participant_behind(&self, user: &str, link: LinkSpec) -> (Peer, UdpDelayProxy) {
        let mut candidate = self.candidate(0, TransportKind::WebTransport);
        let relay = format!("127.0.0.1:{}", self.relays[0].wt_port);
        let proxy = UdpDelayProxy::start(
            "127.0.0.1:0".parse().unwrap(),
            relay.parse().unwrap(),
            link,
            1,
        )
        .unwrap();
        candidate.url = format!("https://{}/", proxy.local_addr());
        (self.joined_through(&candidate, user).await, proxy)
    }

    /// `user` joined to room "r" through `candidate` (a delay proxy's).
    async fn joined_through(&self, candidate: &Candidate, user: &str) -> Peer {
        let mut peer = Peer::connect(candidate, &self.identity("r", user), T)
            .await
            .expect("connects through the delay proxy");
        peer.join("r", 0, T).await.expect("joins");
        peer
    }
}

impl Lab {
    /// As [`Lab::participant_behind`] over WebSocket, through a TCP delay
    /// proxy.
    pub async fn participant_behind_websocket(
        &self,
        user: &str,
        link: LinkSpec,
    ) -> (Peer, TcpDelayProxy) {
        let mut candidate = self.candidate(0, TransportKind::WebSocket);
        let relay = format!("127.0.0.1:{}", self.relays[0].http_port);
        let proxy = TcpDelayProxy::start(
            "127.0.0.1:0".parse().unwrap(),
            relay.parse().unwrap(),
            link,
            1,
        )
        .unwrap();
        candidate.url = format!("ws://{}/ws", proxy.local_addr());
        (self.joined_through(&candidate, user).await, proxy)
    }
}

/// Media received by `peer` within `window`, in arrival order.
pub async fn media_within(peer: &mut Peer, window: Duration) -> Vec<Media> {
    let mut media = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(received)) = tokio::time::timeout_at(deadline, peer.recv()).await {
        if let Some(server_frame::Kind::Media(m)) = received.frame.kind {
            media.push(m);
        }
    }
    media
}

/// Media received by `peer` until `count` frames arrived or `timeout` passed.
pub async fn media_until(peer: &mut Peer, count: usize, timeout: Duration) -> Vec<Media> {
    let mut media = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while media.len() < count {
        match tokio::time::timeout_at(deadline, peer.recv()).await {
            Ok(Some(received)) => {
                if let Some(server_frame::Kind::Media(m)) = received.frame.kind {
                    media.push(m);
                }
            }
            _ => break,
        }
    }
    media
}

/// The sequence numbers in `seqs` of `sender`'s media that reach `peer`,
/// waiting until all of them arrived or `timeout` passed. Frames outside
/// `seqs` (late ones of an earlier burst) are skipped.
pub async fn media_seqs_from(
    peer: &mut Peer,
    sender: &str,
    seqs: std::ops::Range<u64>,
    timeout: Duration,
) -> Vec<u64> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while got.len() < seqs.clone().count() {
        match tokio::time::timeout_at(deadline, peer.recv()).await {
            Ok(Some(received)) => {
                if let Some(server_frame::Kind::Media(m)) = received.frame.kind
                    && m.sender == sender
                    && seqs.contains(&m.seq)
                {
                    got.push(m.seq);
                }
            }
            _ => break,
        }
    }
    got
}

/// Sends audio frames numbered `seqs`, of `size` bytes, `gap` apart.
pub async fn send_audio(peer: &Peer, seqs: std::ops::Range<u64>, size: usize, gap: Duration) {
    for seq in seqs {
        peer.send_media(
            rallypoint_protocol::v1::TrackKind::Audio,
            seq,
            0,
            false,
            Bytes::from(vec![seq as u8; size]),
        );
        tokio::time::sleep(gap).await;
    }
}

/// Sends audio frames numbered `seqs` from `from` (120 B, 5 ms apart) while
/// `to` listens: the sequence numbers of them it heard, as
/// [`media_seqs_from`] gives them.
pub async fn audio_heard(from: &Peer, to: &mut Peer, seqs: std::ops::Range<u64>) -> Vec<u64> {
    let sender = from.peer_id().to_owned();
    let (_, heard) = tokio::join!(
        send_audio(from, seqs.clone(), 120, Duration::from_millis(5)),
        media_seqs_from(to, &sender, seqs, T),
    );
    heard
}

/// Waits until `peer` knows that every one of `others` is in the room — from
/// its Joined snapshot or later PeerJoined frames — so media published now
/// reaches it through every gateway.
///
/// All of `others` are awaited at once: PeerJoined frames arrive in whatever
/// order the relays learn of the joins (a local join can overtake an earlier
/// remote one), and a frame read while waiting for one peer must still count
/// for the others.
pub async fn wait_sees(peer: &mut Peer, joined: &Joined, others: &[&str]) {
    let mut unseen: Vec<String> = others
        .iter()
        .filter(|other| !joined.participants.iter().any(|p| p.peer_id == **other))
        .map(|other| other.to_string())
        .collect();
    while !unseen.is_empty() {
        let waiting_for = format!("PeerJoined of {}", unseen.join(", "));
        let seen = peer
            .expect(&waiting_for, T, |kind| match kind {
                server_frame::Kind::PeerJoined(j) => j
                    .peer
                    .as_ref()
                    .and_then(|p| unseen.iter().position(|id| *id == p.peer_id)),
                _ => None,
            })
            .await
            .expect("sees the other participants");
        unseen.swap_remove(seen);
    }
}

/// The NATS server of `cluster` that a client named `client_name` is
/// connected to, and that connection as the server's `/connz` shows it
/// (`in_msgs`: what the client published; `out_msgs`: what the server
/// delivered to it).
pub async fn nats_connection(
    lab: &Lab,
    cluster: &str,
    client_name: &str,
) -> (String, serde_json::Value) {
    find_nats_connection(lab, cluster, client_name)
        .await
        .unwrap_or_else(|| panic!("no {cluster} NATS server has a client named {client_name}"))
}

/// Like [`nats_connection`], `None` when no server of `cluster` has the
/// client now (it is reconnecting, say); servers that do not answer (killed
/// ones) are skipped.
pub async fn find_nats_connection(
    lab: &Lab,
    cluster: &str,
    client_name: &str,
) -> Option<(String, serde_json::Value)> {
    for server in lab.nats.servers().iter().filter(|s| s.cluster == cluster) {
        let url = format!("{}/connz", server.monitor_url());
        let Ok(response) = reqwest::get(url).await else {
            continue;
        };
        let Ok(connz) = response.json::<serde_json::Value>().await else {
            continue;
        };
        let found = connz["connections"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == client_name));
        if let Some(connection) = found {
            return Some((server.name.clone(), connection.clone()));
        }
    }
    None
}

/// An encoded `Hello` with `token`, as a hand-written client sends it (tests
/// that speak the wire themselves, a frame at a time); it reads each
/// unidirectional stream as one frame.
pub fn hello_frame(token: String) -> Bytes {
    hello_frame_reading(token, false)
}

/// [`hello_frame`], saying whether the client reads groups of pictures on
/// one stream (`Hello.media_stream_groups`).
pub fn hello_frame_reading(token: String, media_stream_groups: bool) -> Bytes {
    rallypoint_protocol::encode(&ClientFrame::of(client_frame::Kind::Hello(Hello {
        protocol_version: rallypoint_protocol::PROTOCOL_VERSION,
        token,
        client: None,
        session_id: Bytes::from_static(b"0123456789abcdef"),
        media_stream_groups,
    })))
}

/// A bare WebTransport client endpoint that trusts the certificate `hash`
/// pins (a relay's development certificate).
pub fn wt_client(
    hash: [u8; 32],
) -> wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client> {
    let config = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(hash)])
        .build();
    wtransport::Endpoint::client(config).unwrap()
}

/// A WebTransport session spoken by hand: its connection and control stream.
pub struct RawWtSession {
    pub connection: wtransport::Connection,
    pub control: (wtransport::SendStream, wtransport::RecvStream),
}

impl RawWtSession {
    /// Connects to `relay`, sends `frames` on the control stream
    /// (length-prefixed) and reads control frames until `until` says one is
    /// the answer it waits for.
    pub async fn open(
        lab: &Lab,
        relay: usize,
        frames: &[Bytes],
        until: impl Fn(&server_frame::Kind) -> bool,
    ) -> RawWtSession {
        use tokio::io::AsyncReadExt;
        let candidate = lab.candidate(relay, TransportKind::WebTransport);
        let endpoint = wt_client(
            candidate
                .cert_hash_bytes()
                .expect("development certificate"),
        );
        let connection = tokio::time::timeout(T, endpoint.connect(&candidate.url))
            .await
            .expect("connect in time")
            .expect("connect");
        let (mut send, mut recv) = connection.open_bi().await.unwrap().await.unwrap();
        for frame in frames {
            send.write_all(&rallypoint_protocol::length_prefixed::encode(frame))
                .await
                .unwrap();
        }
        tokio::time::timeout(T, async {
            loop {
                let len = recv.read_u32().await.expect("a frame from the relay") as usize;
                let mut frame = vec![0; len];
                recv.read_exact(&mut frame).await.unwrap();
                let kind = rallypoint_protocol::decode_server_frame(Bytes::from(frame))
                    .unwrap()
                    .kind;
                if kind.as_ref().is_some_and(&until) {
                    break;
                }
            }
        })
        .await
        .expect("the relay answered in time");
        RawWtSession {
            connection,
            control: (send, recv),
        }
    }

    /// `user`, with a token for `room`, in `room` on `relay`; says whether it
    /// reads groups of pictures (`Hello.media_stream_groups`).
    pub async fn joined(
        lab: &Lab,
        relay: usize,
        room: &str,
        user: &str,
        reads_groups: bool,
    ) -> RawWtSession {
        let hello = hello_frame_reading(
            lab.issuer.mint(room, user, user, Duration::from_secs(60)),
            reads_groups,
        );
        let join = rallypoint_protocol::encode(&ClientFrame::of(client_frame::Kind::Join(Join {
            room: room.into(),
            join_seq: 0,
            ..Default::default()
        })));
        RawWtSession::open(lab, relay, &[hello, join], |kind| {
            matches!(kind, server_frame::Kind::Joined(_))
        })
        .await
    }
}
