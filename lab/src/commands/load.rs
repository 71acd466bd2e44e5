//! `rallypoint load`: call-rate load against one relay (or straight over
//! NATS, the baseline), in a process of its own. Progress goes to stderr, a
//! one-line JSON summary to stdout (`rallypoint bench capacity` reads it).

use std::time::Duration;

use anyhow::Context as _;
use clap::ArgGroup;
use rallypoint_service::nats::NatsArgs;
use rallypoint_service::parse_duration;
use rallypoint_testkit::tokens::DevIssuer;

use crate::load::{LoadPlan, nats_path, relay_path};

#[derive(Debug, Clone, clap::Args)]
#[command(group(ArgGroup::new("target").required(true).args(["relay", "nats"])))]
pub struct LoadArgs {
    /// The relay to load: `ws://host:port/ws`, `wss://…`, or `https://host:port/`
    /// (WebTransport; add `#cert=<sha256 hex>` for a self-signed relay). The
    /// scheme picks the transport.
    #[arg(long, value_name = "URL")]
    pub relay: Option<String>,

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
        match &args.relay {
            Some(url) => {
                let secret = args.jwt_secret.as_deref().context(
                    "--relay needs --jwt-secret (or RALLYPOINT_JWT_SECRET): \
                     a token is minted for every participant",
                )?;
                let candidate = super::source::parse_urls(std::slice::from_ref(url))?
                    .pop()
                    .context("no relay URL")?;
                relay_path::run(&plan, &candidate, &DevIssuer::new(secret)).await
            }
            None => nats_path::run(&plan, &args.nats_args).await,
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

fn plan(args: &LoadArgs) -> anyhow::Result<LoadPlan> {
    anyhow::ensure!(args.rooms >= 1, "--rooms must be at least 1");
    anyhow::ensure!(
        args.participants >= 2,
        "--participants must be at least 2: someone has to receive"
    );
    anyhow::ensure!(!args.duration.is_zero(), "--duration must be above 0");
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
