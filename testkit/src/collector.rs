//! `rallypoint-collector` processes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::bins;
use crate::ports::{PortKeeper, free_tcp};
use crate::process::Process;

#[derive(Debug, Clone)]
pub struct CollectorSpec {
    pub name: String,
    /// NATS as the collector's user.
    pub nats: crate::nats::NatsAccess,
    /// NATS as an administrator, for `rallypoint-collector setup`.
    pub admin: crate::nats::NatsAccess,
    /// `region:replicas` of every region's telemetry stream.
    pub regions: Vec<String>,
    pub central_region: String,
    pub central_replicas: usize,
    /// ClickHouse as the collector's user (read and insert).
    pub clickhouse: crate::clickhouse::ClickHouseLogin,
    /// ClickHouse as its administrator, for `setup` (migrations, retention).
    pub clickhouse_admin: crate::clickhouse::ClickHouseLogin,
    /// Flags for the collector process.
    pub extra_args: Vec<String>,
    /// Flags for `rallypoint-collector setup` only: stream bounds, the
    /// duplicate window.
    pub setup_args: Vec<String>,
}

pub struct CollectorProcess {
    pub spec: CollectorSpec,
    pub http_port: u16,
    log: PathBuf,
    process: Process,
    /// Holds `http_port` while the collector is stopped or killed, so that
    /// another test's server cannot take it before
    /// [`CollectorProcess::restart`].
    port_keeper: Option<PortKeeper>,
}

impl CollectorProcess {
    /// Starts a collector and waits until it serves its HTTP endpoints.
    /// The streams and the consumer are made first, by `rallypoint-collector
    /// setup` with administrator credentials, as an operator would.
    pub async fn start(spec: CollectorSpec, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        setup(&spec, dir).await?;
        let log = dir.join(format!("{}.log", spec.name));
        let http_port = free_tcp();
        let process = spawn(&spec, http_port, &log)?;
        let mut collector = CollectorProcess {
            spec,
            http_port,
            log,
            process,
            port_keeper: None,
        };
        collector.wait_ready(Duration::from_secs(60)).await?;
        Ok(collector)
    }

    pub fn stats_url(&self) -> String {
        format!("http://127.0.0.1:{}/stats", self.http_port)
    }

    pub async fn stats(&self) -> anyhow::Result<serde_json::Value> {
        Ok(reqwest::get(self.stats_url()).await?.json().await?)
    }

    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        self.process.signal(signal)
    }

    /// Crashes the collector (SIGKILL) and waits until it is gone. Its HTTP
    /// port is kept while it is down, so it can be restarted on that port
    /// however long it stays down (tests run in parallel processes that all
    /// pick free ports).
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.process.kill().await?;
        self.keep_port();
        Ok(())
    }

    /// Starts the collector again on the same HTTP port (stopping it first
    /// if it still runs).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.process.stop(Duration::from_secs(5)).await;
        self.port_keeper = None;
        self.process = spawn(&self.spec, self.http_port, &self.log)?;
        self.wait_ready(Duration::from_secs(60)).await
    }

    /// Stops the collector (SIGTERM, then SIGKILL); its HTTP port is kept
    /// for a restart, as after [`CollectorProcess::kill`].
    pub async fn stop(&mut self) {
        self.process.stop(Duration::from_secs(5)).await;
        self.keep_port();
    }

    /// Keeps the stopped collector's port (once: a second keeper could not
    /// bind it). Not keeping it only risks a failed restart, which says why.
    fn keep_port(&mut self) {
        if self.port_keeper.is_none() {
            self.port_keeper = PortKeeper::keep_tcp(self.http_port).ok();
        }
    }

    /// The running process's id (for reading its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Peak resident memory so far (Linux `VmHWM`), in bytes.
    pub fn peak_memory(&self) -> Option<u64> {
        crate::usage::peak_rss_bytes(self.process.pid()?)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.process.is_running() {
                anyhow::bail!(
                    "collector {} exited:\n{}",
                    self.spec.name,
                    self.log_tail(20)
                );
            }
            if let Ok(response) =
                reqwest::get(format!("http://127.0.0.1:{}/readyz", self.http_port)).await
                && response.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!(
            "collector {} not ready after {timeout:?}:\n{}",
            self.spec.name,
            self.log_tail(20)
        )
    }
}

/// How long `rallypoint-collector setup` may take (it waits for JetStream
/// leaders itself, up to a minute).
const SETUP_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs `rallypoint-collector setup` for `spec`'s layout, as the administrator.
pub async fn setup(spec: &CollectorSpec, dir: &Path) -> anyhow::Result<()> {
    let binary = bins::ours("rallypoint-collector")?;
    let mut args = vec!["setup".to_owned()];
    args.extend(spec.admin.cli_args());
    args.extend([
        "--regions".into(),
        spec.regions.join(","),
        "--central-region".into(),
        spec.central_region.clone(),
        "--central-replicas".into(),
        spec.central_replicas.to_string(),
    ]);
    args.extend(spec.clickhouse_admin.cli_args());
    args.extend(spec.setup_args.iter().cloned());
    let log = dir.join(format!("{}-setup.log", spec.name));
    let mut process = Process::spawn(
        format!("collector setup {}", spec.name),
        &binary,
        &args,
        &[
            ("RUST_LOG".to_owned(), "info".to_owned()),
            spec.clickhouse_admin.env(),
        ],
        &log,
    )?;
    match process.wait(SETUP_TIMEOUT).await {
        Some(status) if status.success() => Ok(()),
        Some(status) => anyhow::bail!(
            "rallypoint-collector setup failed ({status}):\n{}",
            process.log_tail(20)
        ),
        None => {
            process.stop(Duration::from_secs(2)).await;
            anyhow::bail!(
                "rallypoint-collector setup did not finish in {SETUP_TIMEOUT:?}:\n{}",
                process.log_tail(20)
            )
        }
    }
}

fn spawn(spec: &CollectorSpec, http_port: u16, log: &Path) -> anyhow::Result<Process> {
    let binary = bins::ours("rallypoint-collector")?;
    let mut args = spec.nats.cli_args();
    args.extend(spec.clickhouse.cli_args());
    args.extend(["--http-listen".into(), format!("127.0.0.1:{http_port}")]);
    args.extend(spec.extra_args.iter().cloned());
    let envs = vec![
        (
            "RUST_LOG".to_owned(),
            std::env::var("RALLYPOINT_COLLECTOR_LOG").unwrap_or_else(|_| "info".into()),
        ),
        spec.clickhouse.env(),
    ];
    Process::spawn(
        format!("collector {}", spec.name),
        &binary,
        &args,
        &envs,
        log,
    )
}
