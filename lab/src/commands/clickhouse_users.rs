//! `rallypoint clickhouse-users`: a deployment's ClickHouse users, made once
//! by an operator.
//!
//! Writes `users.xml` for the ClickHouse servers (the same users, profiles
//! and reader limits the local stack and the tests run with:
//! `rallypoint_testkit::clickhouse::UsersConfig`; passwords only as SHA-256) and one
//! random password per user (`<user>.password`), all readable by the owner
//! only, for the Kubernetes Secret the chart reads (`clickhouse.users.*`).

use std::path::PathBuf;

use anyhow::Context as _;

use rallypoint_testkit::clickhouse::{ClickHouseRole, READER_LIMITS, UsersConfig};
use rallypoint_testkit::pki::{create_private_dir, write_private};

#[derive(Debug, Clone, clap::Args)]
pub struct ClickHouseUsersArgs {
    /// Where the files go; must not exist yet (passwords are never overwritten).
    #[arg(long)]
    pub dir: PathBuf,

    /// Addresses or blocks the users may log in from, comma-separated: the
    /// pods' network (NetworkPolicies narrow it further). No default: `::/0`
    /// (anywhere) has to be asked for.
    #[arg(long, value_delimiter = ',', required = true)]
    pub networks: Vec<String>,
}

/// The users of a deployment, by role: the chart's `clickhouse.users.*`
/// names (helm/examples/us-east.yaml), and Grafana's read-only user.
pub const DEPLOYMENT_USERS: [(&str, ClickHouseRole); 4] = [
    ("rallypoint_admin", ClickHouseRole::Admin),
    ("rallypoint_collector", ClickHouseRole::Collector),
    ("rallypoint_dashboard", ClickHouseRole::Dashboard),
    ("rallypoint_grafana", ClickHouseRole::Grafana),
];

pub fn run(args: ClickHouseUsersArgs) -> anyhow::Result<()> {
    create_private_dir(&args.dir).with_context(|| {
        format!(
            "cannot create --dir {} (it must not exist: passwords are never overwritten)",
            args.dir.display()
        )
    })?;
    let users: Vec<(String, ClickHouseRole, String)> = DEPLOYMENT_USERS
        .iter()
        .map(|(user, role)| {
            let password = format!("{:032x}", rand::random::<u128>());
            (user.to_string(), *role, password)
        })
        .collect();
    for (user, _, password) in &users {
        let file = args.dir.join(format!("{user}.password"));
        write_private(&file, password.as_bytes())?;
        eprintln!("[clickhouse-users] {user} → {}", file.display());
    }
    let config = UsersConfig {
        users,
        networks: args.networks.clone(),
        reader_limits: READER_LIMITS
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
    };
    let xml = args.dir.join("users.xml");
    write_private(&xml, config.xml().as_bytes())?;
    eprintln!(
        "[clickhouse-users] {} → ClickHouse's users_config (passwords as SHA-256 only)",
        xml.display()
    );
    let file = |user: &str| {
        args.dir
            .join(format!("{user}.password"))
            .display()
            .to_string()
    };
    eprintln!(
        "[clickhouse-users] the chart's Secret (helm/examples/us-east.yaml):\n  \
         kubectl create secret generic rallypoint-clickhouse \\\n    \
         --from-file=admin-password={} \\\n    \
         --from-file=collector-password={} \\\n    \
         --from-file=dashboard-password={}\n  \
         Grafana's datasource reads {} as RALLYPOINT_GRAFANA_CLICKHOUSE_PASSWORD.",
        file("rallypoint_admin"),
        file("rallypoint_collector"),
        file("rallypoint_dashboard"),
        file("rallypoint_grafana"),
    );
    Ok(())
}
