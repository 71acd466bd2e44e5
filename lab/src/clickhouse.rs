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

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bins;
use crate::ports::free_tcp;
use crate::process::Process;

pub struct ClickHouseServer {
    dir: PathBuf,
    pub http_port: u16,
    tcp_port: u16,
    process: Option<Process>,
    passwords: [String; 4],
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
    const ALL: [ClickHouseRole; 4] = [
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
}

/// The password never prints.
impl std::fmt::Debug for ClickHouseLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseLogin")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

impl ClickHouseLogin {
    /// `--clickhouse-url` and `--clickhouse-user`; the password goes in the
    /// environment ([`Self::env`]), never on a command line others can read.
    pub fn cli_args(&self) -> Vec<String> {
        vec![
            "--clickhouse-url".into(),
            self.url.clone(),
            "--clickhouse-user".into(),
            self.user.clone(),
        ]
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
pub const READER_LIMITS: &str = "<readonly>1</readonly>\
<max_execution_time>20</max_execution_time>\
<max_rows_to_read>200000000</max_rows_to_read>\
<max_bytes_to_read>20000000000</max_bytes_to_read>\
<max_result_rows>1000000</max_result_rows>\
<max_concurrent_queries_for_user>32</max_concurrent_queries_for_user>";

const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl ClickHouseServer {
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut server = ClickHouseServer {
            dir: dir.to_path_buf(),
            http_port: free_tcp(),
            tcp_port: free_tcp(),
            process: None,
            passwords: std::array::from_fn(|_| format!("{:032x}", rand::random::<u128>())),
        };
        server.write_config()?;
        server.launch().await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `role`'s login to this server.
    pub fn login(&self, role: ClickHouseRole) -> ClickHouseLogin {
        let index = ClickHouseRole::ALL.iter().position(|r| *r == role).unwrap();
        ClickHouseLogin {
            url: self.url(),
            user: role.user().to_owned(),
            password: self.passwords[index].clone(),
        }
    }

    /// The collector's store over this server, opened as the administrator
    /// (schema migrated), as `rallypoint-collector setup` would.
    pub async fn admin_store(
        &self,
        retention_days: u32,
    ) -> anyhow::Result<rallypoint_collector::store::Store> {
        let admin = self.login(ClickHouseRole::Admin);
        rallypoint_collector::store::Store::open(
            &admin.url,
            &admin.user,
            &admin.password,
            "default",
            retention_days,
        )
        .await
    }

    /// The dashboard's data access over this server, logged in as `role`.
    pub fn dashboard_db(&self, role: ClickHouseRole) -> rallypoint_dashboard::data::Db {
        let login = self.login(role);
        rallypoint_dashboard::data::Db::new(&login.url, &login.user, &login.password, "default")
    }

    /// The administrator's password (user `default`), for tests and tools.
    pub fn admin_password(&self) -> String {
        self.login(ClickHouseRole::Admin).password
    }

    /// Stops the server (SIGTERM, then SIGKILL); data stays for a restart.
    pub async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop(Duration::from_secs(10)).await;
        }
    }

    /// Starts it again on the same ports and data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        self.launch().await
    }

    /// Runs a query over HTTP and returns the body (TabSeparated).
    pub async fn query(&self, sql: &str) -> anyhow::Result<String> {
        let admin = self.login(ClickHouseRole::Admin);
        let response = reqwest::Client::new()
            .post(self.url())
            .header("X-ClickHouse-User", admin.user)
            .header("X-ClickHouse-Key", admin.password)
            .body(sql.to_owned())
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        if !status.is_success() {
            anyhow::bail!("ClickHouse refused {sql:?}: {body}");
        }
        Ok(body)
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
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()?;
        loop {
            let process = self.process.as_mut().expect("launched above");
            if !process.is_running() {
                anyhow::bail!(
                    "clickhouse-server exited during start-up; see {}",
                    self.dir.join("server.err.log").display()
                );
            }
            if let Ok(response) = http.get(format!("{}/ping", self.url())).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("ClickHouse not ready after {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every role's user with its profile; passwords only as SHA-256.
    fn users_xml(&self) -> String {
        use sha2::Digest as _;
        let users: String = ClickHouseRole::ALL
            .iter()
            .zip(&self.passwords)
            .map(|(role, password)| {
                let hash = sha2::Sha256::digest(password.as_bytes());
                let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
                format!(
                    "    <{user}><password_sha256_hex>{hex}</password_sha256_hex>\
<networks><ip>::1</ip><ip>127.0.0.1</ip></networks>\
<profile>{profile}</profile><quota>default</quota></{user}>\n",
                    user = role.user(),
                    profile = role.profile(),
                )
            })
            .collect();
        format!(
            r#"<?xml version="1.0"?>
<yandex>
  <profiles>
    <default><max_memory_usage>4000000000</max_memory_usage></default>
    <writer><max_memory_usage>4000000000</max_memory_usage><allow_ddl>0</allow_ddl></writer>
    <reader><max_memory_usage>2000000000</max_memory_usage>{READER_LIMITS}</reader>
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
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <path>{dir}/data/</path>
  <tmp_path>{dir}/tmp/</tmp_path>
  <user_files_path>{dir}/user_files/</user_files_path>
  <format_schema_path>{dir}/format_schemas/</format_schema_path>
  <users_config>{dir}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
"#,
                http = self.http_port,
                tcp = self.tcp_port,
            ),
        )?;
        crate::pki::write_private(&self.dir.join("users.xml"), self.users_xml().as_bytes())?;
        Ok(())
    }
}

fn clickhouse_binary() -> anyhow::Result<PathBuf> {
    let hint = "install it with `apt-get install clickhouse-server` (scripts/setup.sh does)";
    bins::external("clickhouse-server", "RALLYPOINT_CLICKHOUSE_SERVER", hint).or_else(|e| {
        let debian = PathBuf::from("/usr/sbin/clickhouse-server");
        if debian.is_file() { Ok(debian) } else { Err(e) }
    })
}
