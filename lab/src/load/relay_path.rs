//! The load through a relay: every participant is a real client connection
//! (WebSocket or WebTransport, as `rallypoint_client_native` routes frames:
//! on WebTransport small media as datagrams, frames too large for one — video
//! at these sizes, keyframes above all — on a unidirectional stream each to
//! the relay, and from it on one stream per track and group of pictures).
//! With several relays, each room is spread over them: participant `p` joins
//! the `p mod n`-th, so every frame reaches some of its receivers through
//! NATS and another relay, as a call whose members are on different relays
//! does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rallypoint_client::{Candidate, TransportKind};
use rallypoint_client_native::Peer;
use rallypoint_client_native::connection::{Received, Sender};
use rallypoint_protocol::v1::{ClientFrame, Media, client_frame, server_frame};
use rallypoint_testkit::tokens::DevIssuer;
use tokio::sync::mpsc;

use super::tally::{Clock, Tally};
use super::{LoadPlan, MediaOut, Participant, Schedule, Summary};

/// One connect plus join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the load waits for its connections to close at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long tokens are minted for (they only need to outlive the run).
const TOKEN_TTL: Duration = Duration::from_secs(3600);

impl MediaOut for Sender {
    async fn send_frame(&mut self, media: Media) -> bool {
        self.send(&ClientFrame::of(client_frame::Kind::Media(media)))
    }
}

/// Runs `plan` through the relays at `candidates` (one transport), minting a
/// token per participant with `issuer`.
pub async fn run(
    plan: &LoadPlan,
    candidates: &[Candidate],
    issuer: &DevIssuer,
) -> anyhow::Result<Summary> {
    let transport = one_transport(candidates)?;
    let started = Instant::now();
    let peers = join_everyone(plan, candidates, issuer).await?;
    let connect = super::everyone_in(plan, "joined", started);
    let (schedule, clock) = super::begin(plan);
    let participants = peers
        .into_iter()
        .map(|(room, peer)| {
            let (sender, incoming) = peer.conn.into_split();
            let keyframe_wanted = Arc::new(AtomicBool::new(false));
            Participant {
                room,
                out: sender,
                receive: receive(incoming, schedule, clock, keyframe_wanted.clone()),
                keyframe_wanted,
            }
        })
        .collect();
    let (mut outcome, open) = super::drive(plan, schedule, participants).await?;
    outcome.not_sent = open.iter().map(|sender| sender.frames_given_up()).sum();
    for sender in &open {
        sender.close();
    }
    // Let every connection finish closing before the process exits: tasks
    // of a WebTransport connection still running while the runtime shuts
    // down find its driver gone, and wtransport panics ("Driver worker
    // panic!") in the middle of the load's output.
    let closing = futures_util::future::join_all(open.iter().map(|sender| sender.closed()));
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        eprintln!("    [load] some connections were still closing after {CLOSE_TIMEOUT:?}");
    }
    let path = match transport {
        TransportKind::WebSocket => "relay-ws",
        TransportKind::WebTransport => "relay-wt",
    };
    super::summarize(path, plan, connect, outcome)
}

/// The transport all `candidates` share: a summary speaks of one.
fn one_transport(candidates: &[Candidate]) -> anyhow::Result<TransportKind> {
    let first = candidates.first().context("no relay to load")?.transport;
    anyhow::ensure!(
        candidates.iter().all(|c| c.transport == first),
        "the relays of one load must share a transport: give only ws(s):// URLs or only \
         https:// (WebTransport) ones"
    );
    Ok(first)
}

/// Connects and joins every participant; the first failure ends the run,
/// naming who and why.
async fn join_everyone(
    plan: &LoadPlan,
    candidates: &[Candidate],
    issuer: &DevIssuer,
) -> anyhow::Result<Vec<(usize, Peer)>> {
    super::connect_all(plan, |room, p| {
        let candidate = &candidates[p % candidates.len()];
        let room_name = plan.room_name(room);
        let user = plan.participant_name(room, p);
        let token = issuer.mint(&room_name, &user, &user, TOKEN_TTL);
        async move {
            let identity = rallypoint_client_native::identity(token);
            let mut peer = Peer::connect(candidate, &identity, JOIN_TIMEOUT)
                .await
                .with_context(|| format!("{user} could not connect to {}", candidate.url))?;
            peer.join(&room_name, 0, JOIN_TIMEOUT)
                .await
                .with_context(|| format!("{user} could not join {room_name}"))?;
            anyhow::Ok(peer)
        }
    })
    .await
    .context(
        "joining the load's participants failed; check the relay URL, the token key and issuer \
         and the relay's --max-connections",
    )
}

/// Reads one participant's connection until the run ends.
async fn receive(
    mut incoming: mpsc::Receiver<Received>,
    schedule: Schedule,
    clock: Clock,
    keyframe_wanted: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::new();
    let end = tokio::time::Instant::from_std(schedule.receive_end);
    while let Ok(Some(received)) = tokio::time::timeout_at(end, incoming.recv()).await {
        match &received.frame.kind {
            Some(server_frame::Kind::Media(media)) => {
                tally.record(media, received.at, &schedule, &clock)
            }
            Some(server_frame::Kind::KeyframeRequest(_)) => {
                keyframe_wanted.store(true, Ordering::Relaxed)
            }
            _ => {}
        }
    }
    tally
}
