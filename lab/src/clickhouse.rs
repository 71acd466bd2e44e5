//! A real ClickHouse server for the local stack and the tests: its own
//! config, data directory and free ports, started from the machine's
//! `clickhouse-server` (Debian's 18.16 here).

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
}

const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl ClickHouseServer {
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut server = ClickHouseServer {
            dir: dir.to_path_buf(),
            http_port: free_tcp(),
            tcp_port: free_tcp(),
            process: None,
        };
        server.write_config()?;
        server.launch().await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
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
        let response = reqwest::Client::new()
            .post(self.url())
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
        std::fs::write(
            self.dir.join("users.xml"),
            r#"<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>::1</ip><ip>127.0.0.1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
  </interval></default></quotas>
</yandex>
"#,
        )?;
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
