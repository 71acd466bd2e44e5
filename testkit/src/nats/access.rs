//! Who may do what on the lab's NATS: accounts, users, permissions and TLS,
//! made fresh for every super-cluster, the way a production deployment is
//! configured (see the README's trust model).
//!
//! One account, `RALLYPOINT`, holds the rooms and the telemetry streams.
//! Its users are NKeys, one per role, each with least privilege:
//!
//! | role               | publish                                        | subscribe |
//! |--------------------|------------------------------------------------|-----------|
//! | `relay-<region>`   | `rp.room.>`, `telemetry.election.<region>`, `rp.budget.<region>.reports` | `rp.room.>`, `rp.budget.<region>.reports`, its inbox |
//! | `collector`        | stream/consumer *info*, *next message*, acks   | its inbox |
//! | `admin`            | everything (streams and consumers are its job) | everything |
//!
//! Nobody is anonymous. Client ports, routes and gateways all run TLS with
//! certificates from the stack's own CA; routes and gateways verify each
//! other's certificates (mutual TLS).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rallypoint_protocol::subjects;
use rallypoint_service::nats::NatsArgs;

use crate::pki::{CertFiles, DevCa, write_private};

/// The account every rallypoint user lives in.
pub const ACCOUNT: &str = "RALLYPOINT";

/// A kind of NATS user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsRole {
    /// A relay of one region: rooms everywhere, telemetry of its own region.
    Relay(String),
    /// A collector: reads the telemetry consumer.
    Collector,
    /// Stream and consumer administration; tests and tools.
    Admin,
}

impl NatsRole {
    /// The user's name: where its seed is kept, how the README calls it.
    pub fn user_name(&self) -> String {
        match self {
            NatsRole::Relay(region) => format!("relay-{region}"),
            NatsRole::Collector => "collector".into(),
            NatsRole::Admin => "admin".into(),
        }
    }

    /// What the role's user may publish and subscribe to.
    pub fn permissions(&self) -> Permissions {
        let strings = |subjects: &[&str]| subjects.iter().map(|s| s.to_string()).collect();
        let inbox = format!("{}.>", self.inbox_prefix());
        match self {
            NatsRole::Relay(region) => Permissions {
                publish: vec![
                    "rp.room.>".into(),
                    subjects::telemetry_election(region),
                    subjects::report_budget(region),
                ],
                subscribe: vec!["rp.room.>".into(), subjects::report_budget(region), inbox],
            },
            NatsRole::Collector => Permissions {
                publish: strings(&[
                    "$JS.API.INFO",
                    "$JS.API.STREAM.INFO.*",
                    "$JS.API.CONSUMER.INFO.*.*",
                    "$JS.API.CONSUMER.MSG.NEXT.*.*",
                    "$JS.ACK.>",
                    // The collector lease (collector/src/lease.rs): its key's
                    // updates, and reading it back.
                    "$KV.RALLYPOINT_COLLECTORS.>",
                    "$JS.API.DIRECT.GET.KV_RALLYPOINT_COLLECTORS.>",
                    "$JS.API.STREAM.MSG.GET.KV_RALLYPOINT_COLLECTORS",
                ]),
                subscribe: vec![inbox],
            },
            NatsRole::Admin => Permissions {
                publish: strings(&[">"]),
                subscribe: strings(&[">"]),
            },
        }
    }

    /// The reply-subject prefix the role's binary uses.
    pub fn inbox_prefix(&self) -> &'static str {
        match self {
            NatsRole::Relay(_) => subjects::RELAY_INBOX_PREFIX,
            NatsRole::Collector => subjects::COLLECTOR_INBOX_PREFIX,
            NatsRole::Admin => subjects::ADMIN_INBOX_PREFIX,
        }
    }
}

/// Subjects a user may publish and subscribe to; nothing else is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

impl Permissions {
    /// As NATS configuration (JSON is a subset of its syntax, and of YAML's).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "publish": { "allow": self.publish },
            "subscribe": { "allow": self.subscribe },
        })
    }
}

/// The `accounts` block of every NATS server's configuration: one account,
/// [`ACCOUNT`], with JetStream and one NKey user per `(role, public key)`.
pub fn accounts_config(users: &[(NatsRole, String)]) -> serde_json::Value {
    let users: Vec<serde_json::Value> = users
        .iter()
        .map(|(role, public_key)| {
            serde_json::json!({
                "nkey": public_key,
                "permissions": role.permissions().to_json(),
            })
        })
        .collect();
    serde_json::json!({ ACCOUNT: { "jetstream": "enabled", "users": users } })
}

/// Makes a user NKey for `role`: its seed in `<dir>/<user>.nk` (owner-only),
/// its public key returned for the servers' configuration.
pub fn create_user(dir: &Path, role: &NatsRole) -> anyhow::Result<(PathBuf, String)> {
    let key = nkeys::KeyPair::new_user();
    let seed_file = dir.join(format!("{}.nk", role.user_name()));
    let seed = key.seed().context("cannot encode an NKey seed")?;
    write_private(&seed_file, format!("{seed}\n").as_bytes())?;
    Ok((seed_file, key.public_key()))
}

/// Every role of a deployment with `regions`: a relay user per region, the
/// collector, the administrator.
pub fn roles(regions: &[String]) -> Vec<NatsRole> {
    let mut roles: Vec<NatsRole> = regions.iter().cloned().map(NatsRole::Relay).collect();
    roles.extend([NatsRole::Collector, NatsRole::Admin]);
    roles
}

/// One user's credential on disk.
#[derive(Debug, Clone)]
struct User {
    role: NatsRole,
    public_key: String,
    seed_file: PathBuf,
}

/// The CA, the servers' certificate and every user's NKey of one super-cluster.
pub struct NatsSecurity {
    pub ca: PathBuf,
    pub server: CertFiles,
    users: Vec<User>,
}

impl NatsSecurity {
    /// Makes a CA, a loopback server certificate and one user per role (a
    /// relay user per region) under `dir`; seeds are readable by the owner only.
    pub fn create(dir: &Path, regions: &[String]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ca = DevCa::create(dir, "rallypoint NATS development CA")?;
        let server = ca.issue_loopback(dir, "nats-server")?;
        let users = roles(regions)
            .into_iter()
            .map(|role| {
                let (seed_file, public_key) = create_user(dir, &role)?;
                Ok(User {
                    role,
                    public_key,
                    seed_file,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(NatsSecurity {
            ca: ca.cert,
            server,
            users,
        })
    }

    /// The seed file of `role`'s user.
    pub fn seed_file(&self, role: &NatsRole) -> anyhow::Result<&Path> {
        self.users
            .iter()
            .find(|u| &u.role == role)
            .map(|u| u.seed_file.as_path())
            .with_context(|| format!("no NATS user for {role:?} in this super-cluster"))
    }

    /// Every user's seed file.
    pub fn seed_files(&self) -> impl Iterator<Item = &Path> {
        self.users.iter().map(|u| u.seed_file.as_path())
    }

    /// Server configuration: the account with its users, and TLS on the client port.
    pub fn server_config(&self) -> String {
        let users: Vec<(NatsRole, String)> = self
            .users
            .iter()
            .map(|u| (u.role.clone(), u.public_key.clone()))
            .collect();
        format!(
            "accounts: {}\n{}",
            accounts_config(&users),
            self.tls_block(false)
        )
    }

    /// A `tls { }` block; `verify` for links where both ends are servers.
    pub fn tls_block(&self, verify: bool) -> String {
        let quote = |p: &Path| format!("\"{}\"", p.display());
        format!(
            "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: {verify}\n  timeout: 5\n}}\n",
            quote(&self.server.cert),
            quote(&self.server.key),
            quote(&self.ca),
        )
    }
}

/// How one process reaches the super-cluster: what a binary gets as
/// `--nats-*` flags, and what an in-process client connects with.
#[derive(Debug, Clone)]
pub struct NatsAccess {
    pub args: NatsArgs,
    /// `None`: anonymous (a super-cluster without security).
    pub role: Option<NatsRole>,
}

impl NatsAccess {
    /// The `--nats-*` command-line arguments for a rallypoint binary.
    pub fn cli_args(&self) -> Vec<String> {
        let mut args = vec!["--nats-urls".to_owned(), self.args.urls.join(",")];
        if let Some(file) = &self.args.nkey_file {
            args.extend(["--nats-nkey-file".to_owned(), file.display().to_string()]);
        }
        if let Some(ca) = &self.args.ca {
            args.extend(["--nats-ca".to_owned(), ca.display().to_string()]);
        }
        args
    }

    pub fn urls(&self) -> &[String] {
        &self.args.urls
    }

    /// Connects in this process, as a binary given [`Self::cli_args`] would.
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        rallypoint_service::nats::connect(&self.args, self.identity()).await
    }

    /// Connection options with this access's credential, to extend.
    pub fn options(&self) -> anyhow::Result<async_nats::ConnectOptions> {
        rallypoint_service::nats::options(&self.args, &self.identity())
    }

    fn identity(&self) -> rallypoint_service::nats::ClientIdentity<'static> {
        rallypoint_service::nats::ClientIdentity {
            name: "rallypoint lab",
            inbox_prefix: self.role.as_ref().map_or("_INBOX", NatsRole::inbox_prefix),
            hears_itself: true,
        }
    }
}
