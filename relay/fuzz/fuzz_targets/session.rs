//! The relay's per-connection session, driven with arbitrary frame
//! sequences after a valid Hello (a fuzzer cannot forge a token): no input
//! may panic the session, and every session must end once its connection
//! does. NATS is configured but unreachable, so rooms, presence and
//! telemetry run their "NATS is slow" paths; time is virtual.
#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser as _;
use libfuzzer_sys::fuzz_target;
use rallypoint_protocol::token::Claims;
use rallypoint_protocol::v1::{ClientFrame, Hello, client_frame};
use rallypoint_protocol::{PROTOCOL_VERSION, decode_client_frame, length_prefixed, limits};
use rallypoint_relay::config::{RelayConfig, TransportKind};
use rallypoint_relay::metrics::Stats;
use rallypoint_relay::outbox::outbox;
use rallypoint_relay::session::{self, ConnectionInfo, Inbound};
use rallypoint_relay::state::RelayState;
use rallypoint_service::clock::unix_micros;
use tokio::sync::{mpsc, watch};

const SECRET: &str = "fuzz-secret";

struct World {
    runtime: tokio::runtime::Runtime,
    relay: Arc<RelayState>,
    hello: ClientFrame,
    _flags: (watch::Sender<bool>, watch::Sender<bool>),
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let (relay, flags) = runtime.block_on(relay());
    let now = unix_micros() / 1_000_000;
    let claims = Claims {
        sub: "fuzzer".into(),
        name: "Fuzzer".into(),
        room: "fuzz".into(),
        // Just under the relay's 24 h maximum lifetime: long fuzz runs keep
        // exercising a valid session, not only the expiry refusal.
        exp: now + 23 * 3600,
        iat: Some(now),
        ..Default::default()
    };
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let hello = ClientFrame::of(client_frame::Kind::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        token,
        client: None,
        session_id: Bytes::from_static(b"0123456789abcdef"),
        media_stream_groups: false,
    }));
    World {
        runtime,
        relay,
        hello,
        _flags: flags,
    }
});

async fn relay() -> (Arc<RelayState>, (watch::Sender<bool>, watch::Sender<bool>)) {
    let config = RelayConfig::parse_from([
        "rallypoint-relay",
        "--region",
        "fuzz",
        "--relay-id",
        "fuzz-0",
        "--jwt-secret",
        SECRET,
        // Port 1: nothing listens, the client keeps trying in the background.
        "--nats-urls",
        "nats://127.0.0.1:1",
    ]);
    let nats = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect("nats://127.0.0.1:1")
        .await
        .unwrap();
    let (draining_tx, draining) = watch::channel(false);
    // Never cut off: the fuzzer explores the in-room paths too.
    let (cut_off_tx, cut_off) = watch::channel(false);
    let stats = Arc::new(Stats::default());
    let relay = RelayState::assemble(config, nats, stats, draining, None, cut_off).unwrap();
    (Arc::new(relay), (draining_tx, cut_off_tx))
}

/// The input as length-prefixed frames (each decoded as a client frame);
/// whatever does not parse ends the sequence.
fn frames(data: &[u8]) -> Vec<Inbound> {
    let mut decoder = length_prefixed::Decoder::new(limits::MAX_FRAME);
    decoder.push(data);
    let mut items = Vec::new();
    while let Ok(Some(bytes)) = decoder.next_frame() {
        let datagram = bytes.len() % 2 == 0;
        items.push(match decode_client_frame(bytes) {
            Ok(frame) => Inbound::Frame {
                frame,
                datagram,
                received_us: unix_micros(),
            },
            Err(e) => Inbound::Invalid(e),
        });
    }
    items
}

fuzz_target!(|data: &[u8]| {
    let world = &*WORLD;
    let items = frames(data);
    world.runtime.block_on(async {
        let (tx, rx) = mpsc::channel(items.len() + 1);
        let (outbox, mut outgoing) = outbox(64, 64);
        let info = ConnectionInfo {
            transport: TransportKind::WebSocket,
            client_ip: None,
            max_datagram_size: 1200,
            welcomed: tokio_util::sync::CancellationToken::new(),
            media_stream_groups: Default::default(),
        };
        let session = tokio::spawn(session::run(world.relay.clone(), info, rx, outbox));
        let writer = tokio::spawn(async move { while outgoing.next().await.is_some() {} });
        let hello = Inbound::Frame {
            frame: world.hello.clone(),
            datagram: false,
            received_us: unix_micros(),
        };
        let _ = tx.send(hello).await;
        for item in items {
            if tx.send(item).await.is_err() {
                break;
            }
        }
        drop(tx);
        tokio::time::timeout(Duration::from_secs(60), session)
            .await
            .expect("a session outlived its connection")
            .expect("the session panicked");
        writer.abort();
    });
});
