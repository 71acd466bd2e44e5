//! What the native client's tests share.
//!
//! Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use rallypoint_client::session::Update;
use rallypoint_client::{Candidate, TransportKind};
use rallypoint_client_native::Peer;
use rallypoint_client_native::runner::Output;
use rallypoint_testkit::nats::{NatsRole, SuperCluster, SuperClusterSpec};
use rallypoint_testkit::relays::{RelayProcess, RelaySpec};
use rallypoint_testkit::tokens::DevIssuer;
use tokio::sync::mpsc;

/// The region every relay of these tests serves.
const REGION: &str = "us-east";

/// One NATS server of [`REGION`], with accounts and TLS.
pub async fn nats(dir: &Path) -> SuperCluster {
    SuperCluster::start(
        SuperClusterSpec::one_server(REGION, true),
        &dir.join("nats"),
    )
    .await
    .expect("NATS starts")
}

/// A relay process `relay_id` of [`REGION`] on `nats`, serving
/// `transports`, verifying tokens signed with `jwt_secret`.
pub async fn relay(
    nats: &SuperCluster,
    dir: &Path,
    relay_id: &str,
    transports: Vec<TransportKind>,
    jwt_secret: &str,
) -> RelayProcess {
    let spec = RelaySpec {
        region: REGION.into(),
        relay_id: relay_id.into(),
        transports,
        nats: nats.access(NatsRole::Relay(REGION.into()), REGION),
        jwt_secret: jwt_secret.into(),
        extra_args: Vec::new(),
    };
    RelayProcess::start(spec, &dir.join(relay_id))
        .await
        .expect("relay starts")
}

/// One NATS server and one relay serving WebTransport only, verifying
/// tokens signed with `jwt_secret`.
pub async fn webtransport_relay(dir: &Path, jwt_secret: &str) -> (SuperCluster, RelayProcess) {
    let nats = nats(dir).await;
    let relay = relay(
        &nats,
        dir,
        "us-east-0",
        vec![TransportKind::WebTransport],
        jwt_secret,
    )
    .await;
    (nats, relay)
}

/// `user`, with a token from `issuer`, connected to `candidate` and in
/// `room`, each step within `within`.
pub async fn joined(
    candidate: &Candidate,
    issuer: &DevIssuer,
    room: &str,
    user: &str,
    within: Duration,
) -> Peer {
    let identity = rallypoint_client_native::identity(issuer.mint(room, user, user, within * 60));
    let mut peer = Peer::connect(candidate, &identity, within)
        .await
        .expect("connects");
    peer.join(room, 0, within).await.expect("joins");
    peer
}

/// Waits up to `within` for the runner's first decision: it is in the room.
pub async fn decided(outputs: &mut mpsc::UnboundedReceiver<Output>, within: Duration) {
    tokio::time::timeout(within, async {
        while let Some(output) = outputs.recv().await {
            if let Output::Session(Update::Decided { .. }) = output {
                return;
            }
        }
        panic!("the runner stopped before deciding");
    })
    .await
    .expect("a decision");
}
