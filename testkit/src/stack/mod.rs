//! `rallypoint up`: the whole system on one machine.
//!
//! Two regions as in the reference deployment — `us-east` (3 NATS servers) and
//! `singapore` (2) with JetStream and a gateway between them — and, per region,
//! a WebSocket relay and a WebTransport relay. A small HTTP server (the
//! "stack server") serves what clients start from: the candidate list, the
//! development token issuer and the browser app.

mod dir_lock;
pub mod location;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rallypoint_client::{Candidate, CandidateList, TransportKind};

use crate::clickhouse::{ClickHouseRole, ClickHouseServer};
use crate::collector::{CollectorProcess, CollectorSpec};
use crate::nats::{NatsRole, SuperCluster, SuperClusterSpec};
use crate::proxy::Scenario;
use crate::relays::{RelayProcess, RelaySpec};
use crate::tokens::DevIssuer;
use location::Location;

/// What `rallypoint up` is asked to start.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Where configs, data and logs go.
    pub dir: PathBuf,
    /// The stack server's address.
    pub http: SocketAddr,
    /// Shared token secret; random per run when not given.
    pub jwt_secret: Option<String>,
    /// Serve the development token issuer at `/token`.
    pub dev_tokens: bool,
    /// Extra flags for every relay.
    pub relay_args: Vec<String>,
    /// Simulated client locations (latency lab); the first one's candidate
    /// list is also the default `/candidates.json`.
    pub scenarios: Vec<Scenario>,
    /// Start ClickHouse and a collector (election telemetry).
    pub telemetry: bool,
    /// Extra flags for every collector.
    pub collector_args: Vec<String>,
    /// Extra flags for `rallypoint-collector setup` (stream bounds, the
    /// duplicate window).
    pub stream_args: Vec<String>,
}

impl StackConfig {
    /// A test's stack in `dir`, telemetry included: the stack server on a
    /// free port, a random token secret, no development tokens, no latency
    /// lab, every part with its defaults.
    pub fn for_test(dir: &std::path::Path) -> StackConfig {
        StackConfig {
            dir: dir.to_path_buf(),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            jwt_secret: None,
            dev_tokens: false,
            relay_args: Vec::new(),
            scenarios: Vec::new(),
            telemetry: true,
            collector_args: Vec::new(),
            stream_args: Vec::new(),
        }
    }
}

pub struct Stack {
    pub config: StackConfig,
    pub nats: SuperCluster,
    pub relays: Vec<RelayProcess>,
    pub issuer: DevIssuer,
    pub secret: String,
    pub http: SocketAddr,
    pub locations: Vec<Location>,
    pub clickhouse: Option<ClickHouseServer>,
    pub collectors: Vec<CollectorProcess>,
    /// The dashboard, with telemetry.
    pub dashboard: Option<Dashboard>,
    server: tokio::task::JoinHandle<()>,
    /// This stack's claim on `config.dir`, for as long as it runs.
    _dir_lock: dir_lock::DirLock,
}

/// The regions of the local stack, as in the reference deployment.
pub const REGIONS: [&str; 2] = ["us-east", "singapore"];

impl Stack {
    pub async fn start(config: StackConfig) -> anyhow::Result<Stack> {
        let dir_lock = dir_lock::DirLock::take(&config.dir)?;
        let secret = config
            .jwt_secret
            .clone()
            .unwrap_or_else(|| format!("dev-{:032x}", rand::random::<u128>()));

        progress("starting NATS: us-east (3 servers) + singapore (2), JetStream, gateways");
        let nats = SuperCluster::start(SuperClusterSpec::reference(true), &config.dir.join("nats"))
            .await?;

        let mut relays = Vec::new();
        for region in REGIONS {
            for transport in [TransportKind::WebSocket, TransportKind::WebTransport] {
                let relay_id = format!("{region}-{}-0", transport.short());
                progress(&format!("starting relay {relay_id}"));
                let spec = RelaySpec {
                    region: region.into(),
                    relay_id,
                    transports: vec![transport],
                    nats: nats.access(NatsRole::Relay(region.into()), region),
                    jwt_secret: secret.clone(),
                    extra_args: config.relay_args.clone(),
                };
                relays.push(RelayProcess::start(spec, &config.dir.join("relays")).await?);
            }
        }

        let (clickhouse, collectors) = if config.telemetry {
            progress("starting ClickHouse");
            let clickhouse = ClickHouseServer::start(&config.dir.join("clickhouse")).await?;
            progress("starting the telemetry collector");
            let collector = CollectorProcess::start(
                collector_spec(
                    "collector-0",
                    &nats,
                    &clickhouse,
                    &config.collector_args,
                    &config.stream_args,
                ),
                &config.dir.join("collectors"),
            )
            .await?;
            (Some(clickhouse), vec![collector])
        } else {
            (None, Vec::new())
        };
        let dashboard = match &clickhouse {
            Some(clickhouse) => {
                progress("starting the dashboard");
                Some(start_dashboard(clickhouse, &config.dir).await?)
            }
            None => None,
        };

        let mut locations = Vec::new();
        for (i, scenario) in config.scenarios.iter().enumerate() {
            progress(&format!(
                "latency lab: placing delay proxies for {:?}",
                scenario.name
            ));
            locations.push(Location::new(scenario, &relays, i as u64 + 1)?);
        }
        let issuer = DevIssuer::new(&secret);
        let direct = CandidateList {
            candidates: relays.iter().flat_map(RelayProcess::candidates).collect(),
        };
        let mut lists: Vec<(String, CandidateList)> = locations
            .iter()
            .map(|l| {
                (
                    l.slug.clone(),
                    CandidateList {
                        candidates: l.candidates.clone(),
                    },
                )
            })
            .collect();
        lists.push(("direct".into(), direct.clone()));
        let default = locations
            .first()
            .map(|l| CandidateList {
                candidates: l.candidates.clone(),
            })
            .unwrap_or(direct);
        let (http, server) = server::start(
            config.http,
            server::StackState {
                web_dist: web_dist(),
                default,
                lists,
                issuer: config.dev_tokens.then(|| DevIssuer::new(&secret)),
            },
        )
        .await?;
        Ok(Stack {
            config,
            nats,
            relays,
            issuer,
            secret,
            http,
            locations,
            clickhouse,
            collectors,
            dashboard,
            server,
            _dir_lock: dir_lock,
        })
    }

    pub fn candidates(&self) -> Vec<Candidate> {
        self.relays
            .iter()
            .flat_map(RelayProcess::candidates)
            .collect()
    }

    /// What a client is offered: the first latency-lab location's
    /// candidates (through its delay proxies), as the browser app's default
    /// list, or the relays themselves on a stack without locations.
    pub fn client_candidates(&self) -> Vec<Candidate> {
        match self.locations.first() {
            Some(location) => location.candidates.clone(),
            None => self.candidates(),
        }
    }

    /// Prints every endpoint and a ready-to-use development token.
    pub fn print_endpoints(&self) {
        let base = format!("http://{}", self.http);
        println!();
        println!(
            "rallypoint is up (data and logs in {})",
            self.config.dir.display()
        );
        println!();
        if web_dist().is_some() {
            println!("  browser app      {base}/");
        } else {
            println!("  browser app      not built (scripts/build-web.sh builds client/web/dist)");
        }
        println!("  candidate list   {base}/candidates.json");
        for location in &self.locations {
            println!(
                "    as seen from {:?}: {base}/candidates/{}.json",
                location.name, location.slug
            );
        }
        if !self.locations.is_empty() {
            println!("    without delay proxies: {base}/candidates/direct.json");
        }
        if self.config.dev_tokens {
            println!("  dev tokens       {base}/token?room=<room>&name=<name>");
        }
        if let Some(dashboard) = &self.dashboard {
            println!("  dashboard        {}/", dashboard.url);
            println!(
                "    sign in as {}, password {} (development users file {})",
                dashboard.user,
                dashboard.password,
                dashboard.users_file.display()
            );
        }
        if let Some(clickhouse) = &self.clickhouse {
            println!(
                "  clickhouse       {} (TLS, CA {})",
                clickhouse.url(),
                clickhouse.ca().display()
            );
        }
        for collector in &self.collectors {
            println!("  collector        {}", collector.stats_url());
        }
        if let Some(security) = self.nats.security() {
            println!(
                "  nats access      TLS with CA {}; NKey users, one per role (admin: {})",
                security.ca.display(),
                security
                    .seed_file(&NatsRole::Admin)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
        }
        println!();
        for region in REGIONS {
            println!("  region {region}");
            for url in self.nats.urls(region) {
                println!("    nats           {url}");
            }
            for relay in self.relays.iter().filter(|r| r.spec.region == region) {
                for candidate in relay.candidates() {
                    println!(
                        "    relay {:<8} {}  (health {}/readyz)",
                        candidate.transport.short(),
                        candidate.url,
                        relay.admin_url()
                    );
                }
            }
        }
        let token = self.issuer.mint(
            "lobby",
            "dev-user",
            "Dev User",
            Duration::from_secs(12 * 3600),
        );
        println!();
        println!("  dev token (room \"lobby\", 12 h):");
        println!("    {token}");
        println!();
        println!("Ctrl-C stops everything.");
    }

    /// Another collector sharing the work (tests and benchmarks).
    pub async fn add_collector(&mut self) -> anyhow::Result<usize> {
        let clickhouse = self
            .clickhouse
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the stack runs without telemetry"))?;
        let name = format!("collector-{}", self.collectors.len());
        let spec = collector_spec(
            &name,
            &self.nats,
            clickhouse,
            &self.config.collector_args,
            &self.config.stream_args,
        );
        self.collectors
            .push(CollectorProcess::start(spec, &self.config.dir.join("collectors")).await?);
        Ok(self.collectors.len() - 1)
    }

    /// Stops everything: relays first (they drain), then collectors, ClickHouse and NATS.
    pub async fn stop(mut self) {
        progress("stopping relays");
        for relay in &mut self.relays {
            relay.stop(Duration::from_secs(3)).await;
        }
        for collector in &mut self.collectors {
            collector.stop().await;
        }
        if let Some(dashboard) = &mut self.dashboard {
            dashboard.process.stop(Duration::from_secs(3)).await;
        }
        if let Some(clickhouse) = &mut self.clickhouse {
            progress("stopping ClickHouse");
            clickhouse.stop().await;
        }
        progress("stopping NATS");
        self.nats.stop().await;
        self.server.abort();
        progress("stopped");
    }
}

/// A collector for the reference regions: telemetry streams R3 in us-east
/// (3 JetStream servers), R1 in singapore (2 servers: R2 would stop on either
/// failure), the central stream R3 in us-east next to ClickHouse.
fn collector_spec(
    name: &str,
    nats: &SuperCluster,
    clickhouse: &ClickHouseServer,
    extra_args: &[String],
    setup_args: &[String],
) -> CollectorSpec {
    CollectorSpec {
        name: name.to_owned(),
        nats: nats.access(NatsRole::Collector, "us-east"),
        admin: nats.access(NatsRole::Admin, "us-east"),
        regions: vec!["us-east:3".into(), "singapore:1".into()],
        central_region: "us-east".into(),
        central_replicas: 3,
        clickhouse: clickhouse.login(ClickHouseRole::Collector),
        clickhouse_admin: clickhouse.login(ClickHouseRole::Admin),
        extra_args: extra_args.to_vec(),
        setup_args: setup_args.to_vec(),
    }
}

/// The dashboard `rallypoint up` started, and how to sign in to it.
pub struct Dashboard {
    pub url: String,
    pub user: String,
    pub password: String,
    pub users_file: PathBuf,
    pub process: crate::process::Process,
}

impl Dashboard {
    /// `GET path` signed in as `user` with `password` (20 s deadline).
    pub async fn get_as(
        &self,
        path: &str,
        user: &str,
        password: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()?;
        Ok(client
            .get(format!("{}{path}", self.url))
            .basic_auth(user, Some(password))
            .send()
            .await?)
    }

    /// `GET path` signed in as the stack's user.
    pub async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        self.get_as(path, &self.user, &self.password).await
    }
}

/// Starts `rallypoint-dashboard` on a free port and waits for it to answer.
///
/// It asks who is there like any other deployment (the dashboard refuses
/// to start otherwise): one user, `dev`, with a random password printed with
/// its URL, in a users file readable only by the owner next to the stack's
/// data. `--no-auth` on loopback would not be enough: every local user, and
/// any web page through DNS rebinding, could read it; and the browser tests
/// sign in through the same path people do.
async fn start_dashboard(
    clickhouse: &ClickHouseServer,
    dir: &std::path::Path,
) -> anyhow::Result<Dashboard> {
    let port = crate::ports::free_tcp();
    let user = "dev".to_owned();
    let password = format!("{:032x}", rand::random::<u128>());
    let users_file = dir.join("dashboard-users");
    let line = hashed_users_line(&user, &password).await?;
    crate::pki::write_private(&users_file, format!("{line}\n").as_bytes())?;
    // The dashboard reads as its own read-only, limited ClickHouse user.
    let reader = clickhouse.login(ClickHouseRole::Dashboard);
    let mut args = vec!["--listen".to_owned(), format!("127.0.0.1:{port}")];
    args.extend(reader.cli_args());
    args.extend([
        "--auth-users-file".to_owned(),
        users_file.display().to_string(),
    ]);
    let process = crate::process::Process::spawn(
        "dashboard",
        &crate::bins::ours("rallypoint-dashboard")?,
        &args,
        &[reader.env()],
        &dir.join("dashboard.log"),
    )?;
    let url = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if reqwest::get(format!("{url}/healthz"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(Dashboard {
                url,
                user,
                password,
                users_file,
                process,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the dashboard did not start:\n{}", process.log_tail(20))
}

/// The users-file line for `user`, hashed by the dashboard binary itself
/// (`rallypoint-dashboard hash-password`, the command operators use), so the
/// stack needs no link to the dashboard's code.
async fn hashed_users_line(user: &str, password: &str) -> anyhow::Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(crate::bins::ours("rallypoint-dashboard")?)
        .args(["hash-password", user])
        // Nothing of the caller's environment (RALLYPOINT_* settings meant
        // for the stack's dashboard would be parsed, and could fail).
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(format!("{password}\n").as_bytes()).await?;
    drop(stdin);
    // Argon2 is slow on purpose (a second in debug builds).
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .map_err(|_| anyhow::anyhow!("rallypoint-dashboard hash-password took over 30 s"))??;
    anyhow::ensure!(
        output.status.success(),
        "rallypoint-dashboard hash-password failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// The built browser app: `$RALLYPOINT_WEB_DIST`, else `client/web/dist` of
/// the workspace this binary was built from, if it has an index.html.
fn web_dist() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("RALLYPOINT_WEB_DIST").map(PathBuf::from),
        Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../client/web/dist"
        ))),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|dir| dir.join("index.html").is_file())
}

fn progress(message: &str) {
    eprintln!("[rallypoint up] {message}");
}
