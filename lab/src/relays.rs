//! `rallypoint-relay` processes for the local stack and the tests.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rallypoint_client::{Candidate, TransportKind};

use crate::bins;
use crate::ports::{free_tcp, free_udp};
use crate::process::Process;

#[derive(Debug, Clone)]
pub struct RelaySpec {
    pub region: String,
    pub relay_id: String,
    pub transports: Vec<TransportKind>,
    pub nats_urls: Vec<String>,
    pub jwt_secret: String,
    /// More `--flag value` arguments (limits, grace periods, …).
    pub extra_args: Vec<String>,
}

pub struct RelayProcess {
    pub spec: RelaySpec,
    pub http_port: u16,
    pub wt_port: u16,
    /// Hex SHA-256 of the development certificate (WebTransport relays).
    pub cert_hash: Option<String>,
    process: Process,
}

const READY_TIMEOUT: Duration = Duration::from_secs(20);

impl RelayProcess {
    /// Starts a relay and waits until it is ready (NATS connected, serving).
    pub async fn start(spec: RelaySpec, dir: &Path) -> anyhow::Result<Self> {
        let binary = bins::ours("rallypoint-relay")?;
        std::fs::create_dir_all(dir)?;
        let http_port = free_tcp();
        let wt_port = free_udp();
        let transports: Vec<&str> = spec.transports.iter().map(|t| t.short()).collect();
        let mut args = vec![
            "--region".into(),
            spec.region.clone(),
            "--relay-id".into(),
            spec.relay_id.clone(),
            "--nats-urls".into(),
            spec.nats_urls.join(","),
            "--transports".into(),
            transports.join(","),
            "--http-listen".into(),
            format!("127.0.0.1:{http_port}"),
            "--wt-listen".into(),
            format!("127.0.0.1:{wt_port}"),
        ];
        args.extend(spec.extra_args.iter().cloned());
        let envs = vec![
            ("RALLYPOINT_JWT_SECRET".to_owned(), spec.jwt_secret.clone()),
            (
                "RUST_LOG".to_owned(),
                std::env::var("RALLYPOINT_RELAY_LOG").unwrap_or_else(|_| "info".into()),
            ),
        ];
        let log = dir.join(format!("{}.log", spec.relay_id));
        let process = Process::spawn(
            format!("relay {}", spec.relay_id),
            &binary,
            &args,
            &envs,
            &log,
        )?;
        let mut relay = RelayProcess {
            spec,
            http_port,
            wt_port,
            cert_hash: None,
            process,
        };
        relay.wait_ready(READY_TIMEOUT).await?;
        Ok(relay)
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.http_port)
    }

    pub fn wt_url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.wt_port)
    }

    /// The candidates this relay offers (one per transport it serves).
    pub fn candidates(&self) -> Vec<Candidate> {
        self.spec
            .transports
            .iter()
            .map(|&transport| Candidate {
                region: self.spec.region.clone(),
                relay_id: self.spec.relay_id.clone(),
                transport,
                url: match transport {
                    TransportKind::WebSocket => self.ws_url(),
                    TransportKind::WebTransport => self.wt_url(),
                },
                cert_hash: match transport {
                    TransportKind::WebSocket => None,
                    TransportKind::WebTransport => self.cert_hash.clone(),
                },
                shadow: false,
            })
            .collect()
    }

    /// The candidate for one transport.
    pub fn candidate(&self, transport: TransportKind) -> Candidate {
        self.candidates()
            .into_iter()
            .find(|c| c.transport == transport)
            .unwrap_or_else(|| panic!("relay {} does not serve {transport:?}", self.spec.relay_id))
    }

    /// The relay's counters (`/stats`).
    pub async fn stats(&self) -> anyhow::Result<serde_json::Value> {
        Ok(reqwest::get(format!("{}/stats", self.http_url()))
            .await?
            .json()
            .await?)
    }

    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        self.process.signal(signal)
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.process.wait(timeout).await
    }

    pub async fn stop(&mut self, grace: Duration) {
        self.process.stop(grace).await
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if !self.process.is_running() {
                anyhow::bail!(
                    "relay {} exited during start-up:\n{}",
                    self.spec.relay_id,
                    self.process.log_tail(20)
                );
            }
            match http.get(format!("{}/readyz", self.http_url())).send().await {
                Ok(response) if response.status().is_success() => {
                    if self.spec.transports.contains(&TransportKind::WebTransport) {
                        let hash: serde_json::Value = http
                            .get(format!("{}/cert-hash", self.http_url()))
                            .send()
                            .await?
                            .json()
                            .await?;
                        self.cert_hash = hash["hex"].as_str().map(str::to_owned);
                    }
                    return Ok(());
                }
                Ok(response) => last = response.text().await.unwrap_or_default(),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!(
            "relay {} not ready after {timeout:?} ({last}):\n{}",
            self.spec.relay_id,
            self.process.log_tail(20)
        )
    }
}
