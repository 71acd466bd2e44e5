//! `rallypoint simulate`: realistic synthetic election reports through the
//! real path — relay intake (validation, enrichment) → JetStream → collector →
//! ClickHouse — for demos and load. Every report is labelled synthetic
//! (`client.synthetic`), so dashboards can tell it from real traffic.
//!
//! Relays accept synthetic reports (and the networks they invent) only from
//! tokens with the `synthetic` claim, which the stack's `/token` never grants
//! (browsers get their tokens there): the simulator mints its own with the
//! deployment's secret, or is given one with `--token`.

use std::time::{Duration, Instant};

use rallypoint_client_native::Peer;
use rallypoint_protocol::v1::{
    ClientFrame, TelemetryReport, client_frame, server_frame, telemetry_report,
};

use super::source::Source;
use crate::reports::ReportGenerator;
use crate::tokens::DevIssuer;

/// Lifetime of the simulator's own token (relays accept up to 24 h).
const SIMULATOR_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub source: Source,

    /// Reports to send.
    #[arg(long, default_value_t = 1000)]
    pub reports: u64,

    /// Reports per second.
    #[arg(long, default_value_t = 200)]
    pub rate: u64,

    /// Connections per relay candidate (relays rate-limit reports per token
    /// subject, so more connections spread the load, not the budget).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,

    /// The relays' token secret (`rallypoint up --jwt-secret`, or
    /// RALLYPOINT_JWT_SECRET in both shells): the simulator mints its own
    /// token with the `synthetic` claim. Without it, `--token` must carry
    /// that claim.
    #[arg(long, env = "RALLYPOINT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Seed of the generator (same seed, same reports).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let mut source = args.source.clone();
    match (&args.jwt_secret, &source.token) {
        (Some(secret), _) => {
            source.token = Some(DevIssuer::new(secret).mint_simulator(
                "lobby",
                "rallypoint-simulate",
                "rallypoint simulate",
                SIMULATOR_TOKEN_TTL,
            ));
        }
        (None, Some(_)) => {}
        (None, None) => anyhow::bail!(
            "synthetic reports need a token with the `synthetic` claim, which the stack's /token \
             never grants: pass --jwt-secret (the secret the relays verify with; start \
             `rallypoint up` with the same RALLYPOINT_JWT_SECRET) or --token"
        ),
    }
    let (candidates, token) = source.resolve("lobby", "rallypoint simulate").await?;
    let identity = rallypoint_client_native::identity(token);
    let mut peers = Vec::new();
    for candidate in &candidates {
        for _ in 0..args.connections {
            match Peer::connect(candidate, &identity, Duration::from_secs(5)).await {
                Ok(peer) => peers.push(peer),
                Err(e) => eprintln!("[simulate] skipping {}: {e}", candidate.label()),
            }
        }
    }
    anyhow::ensure!(
        !peers.is_empty(),
        "no relay could be reached; is `rallypoint up` running?"
    );
    eprintln!(
        "[simulate] sending {} synthetic reports at {}/s over {} connections",
        args.reports,
        args.rate,
        peers.len()
    );
    let outcome = send(
        peers,
        ReportGenerator::new(candidates, args.seed, true),
        args.reports,
        args.rate,
    )
    .await;
    eprintln!(
        "[simulate] {} accepted, {} refused{}",
        outcome.accepted,
        outcome.refused,
        outcome
            .first_refusal
            .map(|r| format!(" (first reason: {r})"))
            .unwrap_or_default()
    );
    anyhow::ensure!(outcome.refused == 0, "some reports were refused");
    Ok(())
}

/// Acknowledgements received for sent reports.
#[derive(Debug, Default)]
pub struct SendOutcome {
    pub accepted: u64,
    pub refused: u64,
    pub first_refusal: Option<String>,
}

impl SendOutcome {
    fn count(&mut self, accepted: bool, reason: String) {
        if accepted {
            self.accepted += 1;
        } else {
            self.refused += 1;
            self.first_refusal.get_or_insert(reason);
        }
    }
}

/// Sends `count` reports round-robin over `peers` at `rate` per second and
/// waits for every acknowledgement (or 30 s without one).
pub async fn send(
    peers: Vec<Peer>,
    mut generator: ReportGenerator,
    count: u64,
    rate: u64,
) -> SendOutcome {
    let (ack_tx, mut acks) = tokio::sync::mpsc::unbounded_channel();
    let senders: Vec<_> = peers
        .into_iter()
        .map(|peer| {
            let (sender, mut frames) = peer.conn.into_split();
            let ack_tx = ack_tx.clone();
            tokio::spawn(async move {
                while let Some(received) = frames.recv().await {
                    if let Some(server_frame::Kind::TelemetryAck(ack)) = received.frame.kind
                        && ack_tx.send((ack.accepted, ack.reason)).is_err()
                    {
                        return;
                    }
                }
            });
            sender
        })
        .collect();
    drop(ack_tx);
    let started = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut outcome = SendOutcome::default();
    let mut last_progress = Instant::now();
    for i in 0..count {
        let frame = ClientFrame::of(client_frame::Kind::Telemetry(TelemetryReport {
            kind: Some(telemetry_report::Kind::Election(generator.next_report())),
        }));
        senders[(i as usize) % senders.len()].send(&frame);
        while let Ok((accepted, reason)) = acks.try_recv() {
            outcome.count(accepted, reason);
        }
        if let Some(wait) = (started + gap * (i as u32 + 1)).checked_duration_since(Instant::now())
        {
            tokio::time::sleep(wait).await;
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "[simulate] sent {} of {count}, {} acknowledged",
                i + 1,
                outcome.accepted + outcome.refused
            );
            last_progress = Instant::now();
        }
    }
    while outcome.accepted + outcome.refused < count {
        match tokio::time::timeout(Duration::from_secs(30), acks.recv()).await {
            Ok(Some((accepted, reason))) => outcome.count(accepted, reason),
            _ => break,
        }
    }
    outcome
}
