//! `rallypoint-relay` processes for the local stack and the tests.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rallypoint_client::{Candidate, TransportKind};

use crate::bins;
use crate::ports::{free_tcp, free_udp, start_on_fresh_ports};
use crate::process::Process;

#[derive(Debug, Clone)]
pub struct RelaySpec {
    pub region: String,
    pub relay_id: String,
    pub transports: Vec<TransportKind>,
    /// This region's NATS, as the relay's user.
    pub nats: crate::nats::NatsAccess,
    pub jwt_secret: String,
    /// More `--flag value` arguments (limits, grace periods, …).
    pub extra_args: Vec<String>,
}

pub struct RelayProcess {
    pub spec: RelaySpec,
    pub http_port: u16,
    /// `/healthz`, `/readyz`, `/stats`: the admin listener.
    pub admin_port: u16,
    pub wt_port: u16,
    /// Hex SHA-256 of the development certificate (WebTransport relays).
    pub cert_hash: Option<String>,
    process: Process,
    log: std::path::PathBuf,
}

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Start-ups tried on fresh ports before giving up: a port found free can be
/// taken by another test's process before the relay binds it (see
/// [`crate::ports`]).
const START_ATTEMPTS: usize = 3;

impl RelayProcess {
    /// Starts a relay and waits until it is ready (NATS connected, serving).
    pub async fn start(spec: RelaySpec, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let log = dir.join(format!("{}.log", spec.relay_id));
        let what = format!("relay {}", spec.relay_id);
        start_on_fresh_ports(&what, START_ATTEMPTS, lost_a_port, |attempt| {
            let (spec, log) = (spec.clone(), log.clone());
            async move {
                if attempt > 1 {
                    // The log is appended to: keep the failed attempt's
                    // apart, so this one is judged by its own words.
                    let _ = std::fs::rename(
                        &log,
                        log.with_extension(format!("lost-port-{}.log", attempt - 1)),
                    );
                }
                let (http_port, admin_port, wt_port) = (free_tcp(), free_tcp(), free_udp());
                let process = spawn(&spec, [http_port, admin_port, wt_port], &log)?;
                let mut relay = RelayProcess {
                    spec,
                    http_port,
                    admin_port,
                    wt_port,
                    cert_hash: None,
                    process,
                    log,
                };
                relay.wait_ready(READY_TIMEOUT).await?;
                Ok(relay)
            }
        })
        .await
    }

    /// Starts the relay again on the same ports (after a kill or a drain), so
    /// the candidate list stays valid. Its development certificate is new.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.process.stop(Duration::from_secs(3)).await;
        let ports = [self.http_port, self.admin_port, self.wt_port];
        self.process = spawn(&self.spec, ports, &self.log)?;
        self.wait_ready(READY_TIMEOUT).await
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The admin listener (`/healthz`, `/readyz`, `/stats`).
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// The relay process's id (to read its `/proc` entries).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn ws_url(&self) -> String {
        let scheme = if self.ws_tls() { "wss" } else { "ws" };
        format!("{scheme}://127.0.0.1:{}/ws", self.http_port)
    }

    /// Whether the relay serves its HTTP listener (and `/ws`) over TLS.
    pub fn ws_tls(&self) -> bool {
        self.spec.extra_args.iter().any(|a| a == "--ws-tls")
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
                // Pinned like WebTransport when `wss://` uses the
                // development certificate.
                cert_hash: match transport {
                    TransportKind::WebSocket if !self.ws_tls() => None,
                    _ => self.cert_hash.clone(),
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
        Ok(reqwest::get(format!("{}/stats", self.admin_url()))
            .await?
            .json()
            .await?)
    }

    /// The relay's counters as soon as `done` holds of them, read every
    /// 50 ms; `Err` with the last ones read if it did not within `within`.
    /// For a count the relay keeps on its own timers, which a loaded machine
    /// delays.
    pub async fn stats_once(
        &self,
        within: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value, serde_json::Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let stats = self.stats().await.expect("the relay's /stats answers");
            if done(&stats) {
                return Ok(stats);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(stats);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

    /// Readiness: `/readyz` on the admin listener, then the certificate hash
    /// the candidates carry — from the development certificate the relay
    /// saved (`--ws-tls`, where `/cert-hash` is behind TLS), else from
    /// `/cert-hash`.
    async fn ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let response = http
            .get(format!("{}/readyz", self.admin_url()))
            .send()
            .await?;
        if !response.status().is_success() {
            anyhow::bail!("{}", response.text().await.unwrap_or_default());
        }
        if self.ws_tls() {
            let hash = cert_hash(&self.identity_dir().join("cert.pem"))?;
            self.cert_hash = Some(rallypoint_protocol::hex(&hash));
        } else if self.spec.transports.contains(&TransportKind::WebTransport) {
            let hash: serde_json::Value = http
                .get(format!("{}/cert-hash", self.http_url()))
                .send()
                .await?
                .json()
                .await?;
            self.cert_hash = hash["hex"].as_str().map(str::to_owned);
        }
        Ok(())
    }

    fn identity_dir(&self) -> std::path::PathBuf {
        identity_dir(&self.log)
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
            match self.ready(&http).await {
                Ok(()) => return Ok(()),
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

/// SHA-256 of the certificate in `cert_pem` (DER), as candidates carry it.
fn cert_hash(cert_pem: &Path) -> anyhow::Result<[u8; 32]> {
    use anyhow::Context as _;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    use sha2::{Digest, Sha256};
    let der = CertificateDer::from_pem_file(cert_pem)
        .with_context(|| format!("cannot read the relay certificate {}", cert_pem.display()))?;
    Ok(Sha256::digest(der.as_ref()).into())
}

/// Where a relay keeps its development TLS identity: next to its log.
fn identity_dir(log: &Path) -> std::path::PathBuf {
    log.with_extension("identity")
}

/// The secret a region's relays share for their per-address report
/// tallies: the same for every relay of the region in one stack (derived
/// from the stack's token secret), different between regions and stacks.
fn report_address_key(spec: &RelaySpec) -> String {
    use sha2::{Digest, Sha256};
    let key = Sha256::new()
        .chain_update(b"rallypoint report address key\0")
        .chain_update(spec.jwt_secret.as_bytes())
        .chain_update(b"\0")
        .chain_update(spec.region.as_bytes())
        .finalize();
    rallypoint_protocol::hex(&key)
}

/// Whether a start-up failed because a port it was given was no longer free.
fn lost_a_port(error: &anyhow::Error) -> bool {
    format!("{error:#}").contains("Address already in use")
}

/// Starts the relay process on the given ports. The development TLS identity
/// lives next to the log, so a restarted relay keeps its certificate hash and
/// the candidate list stays valid.
fn spawn(spec: &RelaySpec, ports: [u16; 3], log: &Path) -> anyhow::Result<Process> {
    let [http_port, admin_port, wt_port] = ports;
    let binary = bins::ours("rallypoint-relay")?;
    let transports: Vec<&str> = spec.transports.iter().map(|t| t.short()).collect();
    let mut args = vec![
        "--region".into(),
        spec.region.clone(),
        "--relay-id".into(),
        spec.relay_id.clone(),
        "--transports".into(),
        transports.join(","),
        "--http-listen".into(),
        format!("127.0.0.1:{http_port}"),
        "--admin-listen".into(),
        format!("127.0.0.1:{admin_port}"),
        "--wt-listen".into(),
        format!("127.0.0.1:{wt_port}"),
        "--dev-identity-dir".into(),
        identity_dir(log).display().to_string(),
    ];
    args.extend(spec.nats.cli_args());
    args.extend(spec.extra_args.iter().cloned());
    let mut envs = vec![
        (
            "RALLYPOINT_REPORT_ADDRESS_KEY".to_owned(),
            report_address_key(spec),
        ),
        (
            "RUST_LOG".to_owned(),
            std::env::var("RALLYPOINT_RELAY_LOG").unwrap_or_else(|_| "info".into()),
        ),
    ];
    // A relay told to verify Ed25519 tokens must not hold a secret too (the
    // relay refuses both).
    let public_key = |a: &String| a == "--jwt-public-key" || a.starts_with("--jwt-public-key=");
    if !spec.extra_args.iter().any(public_key) {
        envs.push(("RALLYPOINT_JWT_SECRET".to_owned(), spec.jwt_secret.clone()));
    }
    Process::spawn(
        format!("relay {}", spec.relay_id),
        &binary,
        &args,
        &envs,
        log,
    )
}
