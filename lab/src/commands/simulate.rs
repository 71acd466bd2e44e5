//! `rallypoint simulate`: realistic synthetic election reports through the
//! real path — relay intake (validation, enrichment) → JetStream → collector →
//! ClickHouse — for demos and load. Every report is labelled synthetic
//! (`client.synthetic`), so dashboards can tell it from real traffic.
//!
//! Relays accept synthetic reports (and the networks they invent) only from
//! tokens with the `synthetic` claim, which the stack's `/token` never grants
//! (browsers get their tokens there): the simulator mints its own with the
//! deployment's secret, or is given one with `--token`.

use std::time::Duration;

use rallypoint_client_native::{Peer, PeerError};
use rallypoint_testkit::reports::{ReportGenerator, send};
use rallypoint_testkit::tokens::DevIssuer;

use super::outcome::{Failures, refusal_that_ends};
use super::source::Source;

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
    let mut failures = Failures::default();
    for candidate in &candidates {
        for _ in 0..args.connections {
            match Peer::connect(candidate, &identity, Duration::from_secs(5)).await {
                Ok(peer) => peers.push(peer),
                Err(PeerError::Refused { code, message, .. }) => {
                    if let Some(error) = refusal_that_ends(candidate, code, &message) {
                        return Err(error.context(
                            "the relays refuse the simulator's token: is --jwt-secret \
                             (RALLYPOINT_JWT_SECRET) the secret they verify tokens with?",
                        ));
                    }
                    eprintln!(
                        "[simulate] skipping {}: refused: {message}",
                        candidate.label()
                    );
                    failures.record(candidate, &format!("refused: {message}"));
                }
                Err(e) => {
                    eprintln!("[simulate] skipping {}: {e}", candidate.label());
                    failures.record(candidate, &e.to_string());
                }
            }
        }
    }
    if peers.is_empty() {
        return Err(failures.none_reachable());
    }
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
