//! `rallypoint load`: call-rate load against one relay, or several serving
//! the same rooms (or straight over NATS, the baseline), in a process of its
//! own. Progress goes to stderr, a one-line JSON summary to stdout
//! (`rallypoint bench capacity` reads it).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::ArgGroup;
use rallypoint_service::nats::NatsArgs;
use rallypoint_service::parse_duration;
use rallypoint_testkit::tokens::DevIssuer;

use crate::load::{LoadPlan, nats_path, relay_path};

#[derive(Debug, Clone, clap::Args)]
#[command(group(ArgGroup::new("target").required(true).args(["relays", "nats"])))]
pub struct LoadArgs {
    /// The relay to load: `ws://host:port/ws`, `wss://…`, or `https://host:port/`
    /// (WebTransport; add `#cert=<sha256 hex>` for a self-signed relay). The
    /// scheme picks the transport. Repeat it to spread every room over
    /// several relays (participant `p` of a room joins the `p mod n`-th), so
    /// that each frame also crosses NATS to the other relays; all of them must
    /// use the same transport.
    #[arg(long = "relay", value_name = "URL")]
    pub relays: Vec<String>,

    /// Instead of a relay, the same load straight over NATS (the ceiling a
    /// relay is measured against), with the `--nats-*` connection flags.
    #[arg(long)]
    pub nats: bool,

    #[command(flatten)]
    pub nats_args: NatsArgs,

    /// HS256 secret the relay verifies tokens with: one token is minted per
    /// participant (each its own user).
    #[arg(long, env = "RALLYPOINT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Instead of `--jwt-secret`: the Ed25519 private key (PKCS#8 PEM file)
    /// whose public key the relay verifies tokens with (its
    /// `--jwt-public-key`), as deployments run. Used even when
    /// `RALLYPOINT_JWT_SECRET` is set.
    #[arg(long, value_name = "PEM")]
    pub jwt_private_key: Option<PathBuf>,

    /// The issuer (`iss`) the minted tokens name: a relay with
    /// `--jwt-issuer` accepts only its own. Default: `rallypoint-dev`.
    #[arg(long)]
    pub jwt_issuer: Option<String>,

    /// Rooms.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,

    /// Participants per room; each sends and receives all the others.
    #[arg(long, default_value_t = 5)]
    pub participants: usize,

    /// Camera video too (30 fps, ~2.4 kB frames, a 24 kB keyframe every
    /// 2 s), not only audio (50 frames/s of ~120 B).
    #[arg(long)]
    pub video: bool,

    /// Sending before the measured window (participants start at random
    /// moments of it).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// The measured window.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Refuse plans with more connections than this (file descriptors,
    /// memory, and the relay's own --max-connections).
    #[arg(long, default_value_t = 4000)]
    pub max_connections: usize,

    /// Room names start with this (default: `load-` and a random suffix, so
    /// runs never meet each other or real rooms).
    #[arg(long)]
    pub room_prefix: Option<String>,
}

/// Connecting and joining everyone may take this long beyond the plan's time.
const SETUP_BUDGET: Duration = Duration::from_secs(120);

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let plan = plan(&args)?;
    let deadline = SETUP_BUDGET + plan.warmup + plan.window + Duration::from_secs(10);
    let run = async {
        if args.relays.is_empty() {
            nats_path::run(&plan, &args.nats_args).await
        } else {
            let issuer = token_issuer(&args)?;
            let candidates = super::source::parse_urls(&args.relays)?;
            relay_path::run(&plan, &candidates, &issuer).await
        }
    };
    let summary = tokio::time::timeout(deadline, run)
        .await
        .with_context(|| {
            format!(
                "the load did not finish within {deadline:?}; is the relay overloaded or stuck?"
            )
        })??;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// Who mints the participants' tokens: with the relay's HS256 secret, or
/// with the Ed25519 private key whose public key it verifies with.
fn token_issuer(args: &LoadArgs) -> anyhow::Result<DevIssuer> {
    let issuer = match (&args.jwt_private_key, &args.jwt_secret) {
        (Some(path), _) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read --jwt-private-key {}", path.display()))?;
            DevIssuer::from_ed25519_pem(&pem)
                .with_context(|| format!("--jwt-private-key {}", path.display()))?
        }
        (None, Some(secret)) => DevIssuer::new(secret),
        (None, None) => anyhow::bail!(
            "--relay needs a token key, since a token is minted for every participant: \
             --jwt-secret (or RALLYPOINT_JWT_SECRET) for a relay with an HS256 secret, \
             --jwt-private-key for one that verifies Ed25519 tokens"
        ),
    };
    Ok(match &args.jwt_issuer {
        Some(name) => issuer.with_issuer(name),
        None => issuer,
    })
}

fn plan(args: &LoadArgs) -> anyhow::Result<LoadPlan> {
    anyhow::ensure!(args.rooms >= 1, "--rooms must be at least 1");
    anyhow::ensure!(
        args.participants >= 2,
        "--participants must be at least 2: someone has to receive"
    );
    anyhow::ensure!(!args.duration.is_zero(), "--duration must be above 0");
    anyhow::ensure!(
        args.relays.len() <= args.participants,
        "{} relays but rooms of {}: every relay must get part of every room; give at most \
         --participants relays",
        args.relays.len(),
        args.participants
    );
    let connections = args.rooms.saturating_mul(args.participants);
    anyhow::ensure!(
        connections <= args.max_connections,
        "{} rooms x {} participants = {connections} connections, more than \
         --max-connections {}; raise it if the machine and the relay allow",
        args.rooms,
        args.participants,
        args.max_connections
    );
    Ok(LoadPlan {
        rooms: args.rooms,
        participants_per_room: args.participants,
        video: args.video,
        warmup: args.warmup,
        window: args.duration,
        room_prefix: args
            .room_prefix
            .clone()
            .unwrap_or_else(|| format!("load-{:08x}", rand::random::<u32>())),
    })
}
