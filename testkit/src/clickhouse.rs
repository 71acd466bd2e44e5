//! A real ClickHouse server for the local stack and the tests: its own
//! config, data directory and free ports, started from the machine's
//! `clickhouse-server` (Debian's 18.16 here).
//!
//! Nobody logs in without a password, and each part has a user of its own
//! (random passwords per server, stored in `users.xml` only as SHA-256):
//!
//! | user                   | may |
//! |------------------------|-----|
//! | `default`              | everything: schema migrations (`collector setup`), retention, tests |
//! | `rallypoint_collector` | read and insert; no DDL (`allow_ddl = 0`) |
//! | `rallypoint_dashboard` | read only (`readonly = 1`: no writes, no changing its limits), with [`READER_LIMITS`] |
//! | `rallypoint_grafana`   | the same as the dashboard |
//!
//! It speaks HTTPS only (no plain HTTP or native TCP port), with a
//! certificate from a development CA of its own ([`ClickHouseServer::ca`]):
//! every part logs in over TLS, as in production.
//!
//! [`ClickHouseCluster`] starts several servers as the replicas of one shard
//! of a cluster, with a real ZooKeeper: what `--clickhouse-cluster` runs on.
//! Its servers also talk to each other — native TCP for `Distributed`
//! queries, the interserver HTTP port for replication — in plain text on
//! loopback (18.16's secure variants are not exercised here; a deployment
//! across machines sets `<secure>` and the `*_secure`/`https` ports).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rallypoint_service::clickhouse::ClickHouseArgs;
use rallypoint_service::secret::Secret;

use crate::bins;
use crate::pki::{CertFiles, DevCa};
use crate::ports::{PortKeeper, free_tcp};
use crate::process::Process;
use crate::zookeeper::ZooKeeper;

pub struct ClickHouseServer {
    dir: PathBuf,
    /// The HTTPS port, the only one it listens on.
    pub https_port: u16,
    ca: PathBuf,
    certificate: CertFiles,
    process: Option<Process>,
    /// Hold its ports while the server is stopped, for its restart.
    port_keepers: Vec<PortKeeper>,
    passwords: [String; 4],
    /// [`READER_LIMITS`] with these settings replaced.
    reader_limits: Vec<(String, String)>,
    membership: Option<Membership>,
}

/// What a server of a [`ClickHouseCluster`] knows of it.
#[derive(Clone)]
struct Membership {
    cluster: String,
    zookeeper_port: u16,
    /// Every server's native TCP port, by shard and then replica; this
    /// one's at `[shard][replica]`.
    ports: Vec<Vec<u16>>,
    shard: usize,
    replica: usize,
    interserver_port: u16,
}

impl Membership {
    fn tcp_port(&self) -> u16 {
        self.ports[self.shard][self.replica]
    }
}

/// Who logs in to ClickHouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClickHouseRole {
    Admin,
    Collector,
    Dashboard,
    Grafana,
}

impl ClickHouseRole {
    pub const ALL: [ClickHouseRole; 4] = [
        ClickHouseRole::Admin,
        ClickHouseRole::Collector,
        ClickHouseRole::Dashboard,
        ClickHouseRole::Grafana,
    ];

    pub fn user(self) -> &'static str {
        match self {
            ClickHouseRole::Admin => "default",
            ClickHouseRole::Collector => "rallypoint_collector",
            ClickHouseRole::Dashboard => "rallypoint_dashboard",
            ClickHouseRole::Grafana => "rallypoint_grafana",
        }
    }

    fn profile(self) -> &'static str {
        match self {
            ClickHouseRole::Admin => "default",
            ClickHouseRole::Collector => "writer",
            ClickHouseRole::Dashboard | ClickHouseRole::Grafana => "reader",
        }
    }
}

/// A user's login: what a binary gets as `--clickhouse-*`.
#[derive(Clone)]
pub struct ClickHouseLogin {
    pub url: String,
    pub user: String,
    pub password: String,
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// The cluster the schema spans (`--clickhouse-cluster`), if any.
    pub cluster: Option<String>,
}

/// The password never prints.
impl std::fmt::Debug for ClickHouseLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseLogin")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &"***")
            .field("ca", &self.ca)
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl ClickHouseLogin {
    /// `--clickhouse-url`, `--clickhouse-user` and `--clickhouse-ca`; the
    /// password goes in the environment ([`Self::env`]), never on a command
    /// line others can read.
    pub fn cli_args(&self) -> Vec<String> {
        let mut args = vec![
            "--clickhouse-url".into(),
            self.url.clone(),
            "--clickhouse-user".into(),
            self.user.clone(),
            "--clickhouse-ca".into(),
            self.ca.display().to_string(),
        ];
        if let Some(cluster) = &self.cluster {
            args.extend(["--clickhouse-cluster".into(), cluster.clone()]);
        }
        args
    }

    /// The same login as in-process settings (database `default`).
    pub fn args(&self) -> ClickHouseArgs {
        let args = ClickHouseArgs::new(&self.url, &self.user, Secret::new(&self.password))
            .with_ca(&self.ca);
        match &self.cluster {
            Some(cluster) => args.with_cluster(cluster),
            None => args,
        }
    }

    pub fn env(&self) -> (String, String) {
        (
            "RALLYPOINT_CLICKHOUSE_PASSWORD".into(),
            self.password.clone(),
        )
    }
}

/// What a reading user (dashboard, Grafana) may cost the server per query,
/// and how many of its queries run at once. A query past a limit fails
/// (the dashboard says "range too large") instead of scanning on.
pub const READER_LIMITS: &[(&str, &str)] = &[
    ("readonly", "1"),
    ("max_execution_time", "20"),
    ("max_rows_to_read", "200000000"),
    ("max_bytes_to_read", "20000000000"),
    ("max_result_rows", "1000000"),
    ("max_concurrent_queries_for_user", "32"),
];

/// ClickHouse's users file (`users.xml`) for rallypoint: a user per role
/// with its profile, passwords only as SHA-256. The local stack and
/// `rallypoint clickhouse-users` (a deployment's file) both write it here.
pub struct UsersConfig {
    /// (user name, role, password)
    pub users: Vec<(String, ClickHouseRole, String)>,
    /// Addresses or blocks the users may log in from (`<networks><ip>`).
    pub networks: Vec<String>,
    /// The reading users' limits ([`READER_LIMITS`], or lowered ones).
    pub reader_limits: Vec<(String, String)>,
}

impl UsersConfig {
    pub fn xml(&self) -> String {
        use sha2::Digest as _;
        let networks: String = self
            .networks
            .iter()
            .map(|ip| format!("<ip>{ip}</ip>"))
            .collect();
        let users: String = self
            .users
            .iter()
            .map(|(user, role, password)| {
                let hash = sha2::Sha256::digest(password.as_bytes());
                let hex = rallypoint_protocol::hex(&hash);
                format!(
                    "    <{user}><password_sha256_hex>{hex}</password_sha256_hex>\
<networks>{networks}</networks>\
<profile>{profile}</profile><quota>default</quota></{user}>\n",
                    profile = role.profile(),
                )
            })
            .collect();
        let reader_limits: String = self
            .reader_limits
            .iter()
            .map(|(name, value)| format!("<{name}>{value}</{name}>"))
            .collect();
        format!(
            r#"<?xml version="1.0"?>
<yandex>
  <profiles>
    <default><max_memory_usage>4000000000</max_memory_usage></default>
    <writer><max_memory_usage>4000000000</max_memory_usage><allow_ddl>0</allow_ddl></writer>
    <reader><max_memory_usage>2000000000</max_memory_usage>{reader_limits}</reader>
  </profiles>
  <users>
{users}  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
  </interval></default></quotas>
</yandex>
"#
        )
    }
}

const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl ClickHouseServer {
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_with_reader_limits(dir, &[]).await
    }

    /// A server whose reading users have `overrides` in place of some of
    /// [`READER_LIMITS`]: a test can reach a limit with a few rows.
    pub async fn start_with_reader_limits(
        dir: &Path,
        overrides: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let reader_limits = reader_limits(overrides)?;
        let ca = DevCa::create(&create_tls_dir(dir)?, "clickhouse-ca")?;
        let mut server = Self::prepare(dir, &ca, random_passwords(), reader_limits, None)?;
        server.launch().await?;
        Ok(server)
    }

    /// A server's certificate, users and configuration in `dir`, not
    /// started.
    fn prepare(
        dir: &Path,
        ca: &DevCa,
        passwords: [String; 4],
        reader_limits: Vec<(String, String)>,
        membership: Option<Membership>,
    ) -> anyhow::Result<Self> {
        let certificate = ca.issue_loopback(&create_tls_dir(dir)?, "clickhouse")?;
        let server = ClickHouseServer {
            dir: dir.to_path_buf(),
            https_port: free_tcp(),
            ca: ca.cert.clone(),
            certificate,
            process: None,
            port_keepers: Vec::new(),
            passwords,
            reader_limits,
            membership,
        };
        server.write_config()?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.https_port)
    }

    /// The CA certificate (PEM) clients trust for this server.
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// `role`'s login to this server.
    pub fn login(&self, role: ClickHouseRole) -> ClickHouseLogin {
        let index = ClickHouseRole::ALL.iter().position(|r| *r == role).unwrap();
        ClickHouseLogin {
            url: self.url(),
            user: role.user().to_owned(),
            password: self.passwords[index].clone(),
            ca: self.ca.clone(),
            cluster: self.membership.as_ref().map(|m| m.cluster.clone()),
        }
    }

    /// The administrator's password (user `default`), for tests and tools.
    pub fn admin_password(&self) -> String {
        self.login(ClickHouseRole::Admin).password
    }

    /// The running server's process id (for reading its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(|p| p.pid())
    }

    /// Stops the server (SIGTERM, then SIGKILL); data and port stay for a
    /// restart. While it is down, connections to its port fail.
    pub async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop(Duration::from_secs(10)).await;
            self.port_keepers = PortKeeper::keep_all(self.listening_ports());
        }
    }

    /// Starts it again on the same ports and data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        self.launch().await?;
        if self.membership.is_some() {
            self.connected_to_zookeeper().await?;
        }
        Ok(())
    }

    /// Runs a query as the administrator and returns the body
    /// (TabSeparated). `?` in `sql` is a bind placeholder: avoid it.
    pub async fn query(&self, sql: &str) -> anyhow::Result<String> {
        self.query_as(ClickHouseRole::Admin, sql).await
    }

    /// Runs a query as `role` and returns the body (TabSeparated).
    pub async fn query_as(&self, role: ClickHouseRole, sql: &str) -> anyhow::Result<String> {
        let body = self
            .login(role)
            .args()
            .client()?
            .query(sql)
            .fetch_bytes("TabSeparated")?
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("ClickHouse refused {sql:?} as {}: {e}", role.user()))?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// A query returning one number.
    pub async fn count(&self, sql: &str) -> anyhow::Result<u64> {
        let body = self.query(sql).await?;
        body.trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{sql:?} returned {body:?}, not a number"))
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let binary = clickhouse_binary()?;
        self.port_keepers.clear();
        let args = vec![format!(
            "--config-file={}",
            self.dir.join("config.xml").display()
        )];
        self.process = Some(Process::spawn(
            "clickhouse",
            &binary,
            &args,
            &[],
            &self.dir.join("stdout.log"),
        )?);
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut probe = self.login(ClickHouseRole::Admin).args();
        probe.connect_timeout = Duration::from_secs(1);
        probe.io_timeout = Duration::from_secs(1);
        let probe = probe.client()?;
        loop {
            let process = self.process.as_mut().expect("launched above");
            if !process.is_running() {
                anyhow::bail!(
                    "clickhouse-server exited during start-up; the end of {}:\n{}",
                    self.dir.join("server.err.log").display(),
                    self.error_log_tail()
                );
            }
            let last_error = match probe.query("SELECT 1").fetch_one::<u8>().await {
                Ok(_) => return Ok(()),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                anyhow::bail!(
                    "ClickHouse not ready over HTTPS after {READY_TIMEOUT:?} ({last_error}); the end of {}:\n{}",
                    self.dir.join("server.err.log").display(),
                    self.error_log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every port the server listens on: HTTPS, and a cluster member's
    /// native TCP and interserver ports.
    fn listening_ports(&self) -> Vec<u16> {
        let mut ports = vec![self.https_port];
        if let Some(m) = &self.membership {
            ports.extend([m.tcp_port(), m.interserver_port]);
        }
        ports
    }

    /// The last lines of the server's error log, for an error that must
    /// say why before the test's directory goes.
    pub fn error_log_tail(&self) -> String {
        crate::process::file_tail(&self.dir.join("server.err.log"), 20)
    }

    /// The last `lines` lines of the server's log that mention `what` (a
    /// component such as `DDLWorker`), for a test that fails inside
    /// ClickHouse to say what the server was doing before its directory goes.
    pub fn log_lines_mentioning(&self, what: &str, lines: usize) -> String {
        crate::process::file_tail_mentioning(&self.dir.join("server.log"), what, lines)
    }

    /// A cluster member's ports, its cluster (every shard and its replicas,
    /// reached as the administrator), ZooKeeper and its macros.
    fn cluster_xml(&self) -> String {
        let Some(member) = &self.membership else {
            return String::new();
        };
        let admin = &self.passwords[0];
        let shards: String = member
            .ports
            .iter()
            .map(|replicas| {
                let replicas: String = replicas
                    .iter()
                    .map(|port| {
                        format!(
                            "<replica><host>127.0.0.1</host><port>{port}</port>\
                             <user>default</user><password>{admin}</password></replica>"
                        )
                    })
                    .collect();
                format!(
                    "<shard><internal_replication>true</internal_replication>{replicas}</shard>"
                )
            })
            .collect();
        format!(
            r#"  <tcp_port>{tcp}</tcp_port>
  <interserver_http_port>{interserver}</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <remote_servers><{name}>{shards}</{name}></remote_servers>
  <zookeeper><node><host>127.0.0.1</host><port>{zookeeper}</port></node></zookeeper>
  <macros><shard>{shard:02}</shard><replica>replica{index}</replica></macros>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
"#,
            tcp = member.tcp_port(),
            interserver = member.interserver_port,
            name = member.cluster,
            zookeeper = member.zookeeper_port,
            shard = member.shard + 1,
            index = member.replica + 1,
        )
    }

    /// Waits until a cluster member's ZooKeeper session is up: until then
    /// replicated tables are read-only and `ON CLUSTER` queries wait.
    async fn connected_to_zookeeper(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let last_error = match self
                .query("SELECT count() FROM system.zookeeper WHERE path = '/'")
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                anyhow::bail!(
                    "ClickHouse has no ZooKeeper session after {READY_TIMEOUT:?} ({last_error}); see {}",
                    self.dir.join("server.err.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every role's user with its profile; passwords only as SHA-256.
    fn users_xml(&self) -> String {
        UsersConfig {
            users: ClickHouseRole::ALL
                .iter()
                .zip(&self.passwords)
                .map(|(role, password)| (role.user().to_owned(), *role, password.clone()))
                .collect(),
            networks: vec!["::1".into(), "127.0.0.1".into()],
            reader_limits: self.reader_limits.clone(),
        }
        .xml()
    }

    fn write_config(&self) -> anyhow::Result<()> {
        let dir = self.dir.display();
        std::fs::write(
            self.dir.join("config.xml"),
            format!(
                r#"<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>{dir}/server.log</log>
    <errorlog>{dir}/server.err.log</errorlog>
    <size>100M</size>
    <count>1</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <https_port>{https}</https_port>
  <openSSL>
    <server>
      <certificateFile>{cert}</certificateFile>
      <privateKeyFile>{key}</privateKeyFile>
      <verificationMode>none</verificationMode>
      <loadDefaultCAFile>false</loadDefaultCAFile>
      <cacheSessions>true</cacheSessions>
      <disableProtocols>sslv2,sslv3,tlsv1,tlsv1_1</disableProtocols>
      <preferServerCiphers>true</preferServerCiphers>
    </server>
  </openSSL>
  <path>{dir}/data/</path>
  <tmp_path>{dir}/tmp/</tmp_path>
  <user_files_path>{dir}/user_files/</user_files_path>
  <format_schema_path>{dir}/format_schemas/</format_schema_path>
  <users_config>{dir}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
{cluster}</yandex>
"#,
                https = self.https_port,
                cert = self.certificate.cert.display(),
                key = self.certificate.key.display(),
                cluster = self.cluster_xml(),
            ),
        )?;
        crate::pki::write_private(&self.dir.join("users.xml"), self.users_xml().as_bytes())?;
        Ok(())
    }
}

/// [`READER_LIMITS`] with `overrides` in place.
fn reader_limits(overrides: &[(&str, &str)]) -> anyhow::Result<Vec<(String, String)>> {
    if let Some((unknown, _)) = overrides
        .iter()
        .find(|(o, _)| !READER_LIMITS.iter().any(|(name, _)| name == o))
    {
        anyhow::bail!("{unknown} is not one of the reader limits");
    }
    Ok(READER_LIMITS
        .iter()
        .map(|(name, default)| {
            let value = overrides
                .iter()
                .find(|(o, _)| o == name)
                .map_or(*default, |(_, v)| *v);
            (name.to_string(), value.to_string())
        })
        .collect())
}

fn random_passwords() -> [String; 4] {
    std::array::from_fn(|_| format!("{:032x}", rand::random::<u128>()))
}

fn create_tls_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls)?;
    Ok(tls)
}

/// Servers holding the shards of a cluster and their replicas, with a
/// ZooKeeper; every server has the same users and passwords and trusts the
/// same CA, so a login works on any of them.
pub struct ClickHouseCluster {
    pub name: String,
    /// Every server, by shard and then replica (one shard: its replicas).
    pub replicas: Vec<ClickHouseServer>,
    pub zookeeper: ZooKeeper,
}

impl ClickHouseCluster {
    /// One shard held by `replicas` servers.
    pub async fn start(dir: &Path, name: &str, replicas: usize) -> anyhow::Result<Self> {
        Self::start_sharded(dir, name, 1, replicas).await
    }

    /// `shards` shards, each held by `replicas` servers.
    pub async fn start_sharded(
        dir: &Path,
        name: &str,
        shards: usize,
        replicas: usize,
    ) -> anyhow::Result<Self> {
        let zookeeper = ZooKeeper::start(&dir.join("zookeeper")).await?;
        let ca = DevCa::create(&create_tls_dir(dir)?, "clickhouse-ca")?;
        let passwords = random_passwords();
        let ports: Vec<Vec<u16>> = (0..shards)
            .map(|_| (0..replicas).map(|_| free_tcp()).collect())
            .collect();
        let mut servers = Vec::with_capacity(shards * replicas);
        for (shard, replica) in (0..shards).flat_map(|s| (0..replicas).map(move |r| (s, r))) {
            let member_dir = if shards == 1 {
                dir.join(format!("replica{}", replica + 1))
            } else {
                dir.join(format!("shard{}-replica{}", shard + 1, replica + 1))
            };
            std::fs::create_dir_all(&member_dir)?;
            let membership = Membership {
                cluster: name.to_owned(),
                zookeeper_port: zookeeper.port,
                ports: ports.clone(),
                shard,
                replica,
                interserver_port: free_tcp(),
            };
            let mut server = ClickHouseServer::prepare(
                &member_dir,
                &ca,
                passwords.clone(),
                reader_limits(&[])?,
                Some(membership),
            )?;
            server.launch().await?;
            server.connected_to_zookeeper().await?;
            servers.push(server);
        }
        Ok(ClickHouseCluster {
            name: name.to_owned(),
            replicas: servers,
            zookeeper,
        })
    }
}

fn clickhouse_binary() -> anyhow::Result<PathBuf> {
    let hint = "install it with `apt-get install clickhouse-server` (scripts/setup.sh does)";
    bins::external("clickhouse-server", "RALLYPOINT_CLICKHOUSE_SERVER", hint).or_else(|e| {
        let debian = PathBuf::from("/usr/sbin/clickhouse-server");
        if debian.is_file() { Ok(debian) } else { Err(e) }
    })
}
