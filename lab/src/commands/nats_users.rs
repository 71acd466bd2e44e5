//! `rallypoint nats-users`: the NKey users of a deployment, made once by an
//! operator.
//!
//! Writes one seed per role (`relay-<region>.nk`, `collector.nk`,
//! `admin.nk`, readable by the owner only) for the Kubernetes Secrets the
//! chart mounts, and prints the `accounts` block for the NATS servers'
//! configuration (`config.merge.accounts` in the official chart's values):
//! public keys and the same least-privilege permissions the local stack and
//! the tests run with (`rallypoint_testkit::nats::access`).

use std::path::PathBuf;

use anyhow::Context as _;

use rallypoint_testkit::nats::access::{accounts_config, create_user, roles};
use rallypoint_testkit::pki::create_private_dir;

#[derive(Debug, Clone, clap::Args)]
pub struct NatsUsersArgs {
    /// Regions of the deployment, comma-separated: a relay user each.
    #[arg(long, value_delimiter = ',', required = true)]
    pub regions: Vec<String>,

    /// Where the seed files go; must not exist yet (seeds are never overwritten).
    #[arg(long)]
    pub dir: PathBuf,
}

pub fn run(args: NatsUsersArgs) -> anyhow::Result<()> {
    for region in &args.regions {
        rallypoint_protocol::subjects::validate_region(region)
            .map_err(|e| anyhow::anyhow!("--regions {region}: {e}"))?;
    }
    create_private_dir(&args.dir).with_context(|| {
        format!(
            "cannot create --dir {} (it must not exist: seeds are never overwritten)",
            args.dir.display()
        )
    })?;
    let mut users = Vec::new();
    for role in roles(&args.regions) {
        let (seed_file, public_key) = create_user(&args.dir, &role)?;
        eprintln!(
            "[nats-users] {} → {}",
            role.user_name(),
            seed_file.display()
        );
        users.push((role, public_key));
    }
    let accounts = accounts_config(&users);
    println!("# NATS accounts for regions {}:", args.regions.join(", "));
    println!("# paste under `config.merge.accounts` of every region's NATS values.");
    println!("{}", serde_json::to_string_pretty(&accounts)?);
    eprintln!(
        "[nats-users] make a Secret per seed (key `seed`), e.g.\n  kubectl create secret generic rallypoint-nats-relay --from-file=seed={}",
        args.dir
            .join(format!("relay-{}.nk", args.regions[0]))
            .display()
    );
    Ok(())
}
