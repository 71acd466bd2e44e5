//! Where ClickHouse is, how to log in and whom to trust: the same flags (and
//! environment variables) for every binary that reads or writes it, and the
//! one place that turns them into a [`clickhouse::Client`].
//!
//! **TLS** is on for an `https://` URL. `--clickhouse-ca` names the CA that
//! signed the server's certificate; it is then the only one trusted, and a
//! plain `http://` URL is refused rather than silently sending the password
//! in the clear. Without it, `https://` trusts the system's roots.
//!
//! **Every wait has a deadline**: connecting (TCP and TLS) gives up after
//! `--clickhouse-connect-timeout`, and a connection on which the server has
//! neither answered nor accepted bytes for `--clickhouse-io-timeout` is
//! closed. Without them a ClickHouse that stops answering (a stuck merge, a
//! dropped packet) would hold a collector batch or a dashboard page forever.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::nats::redact_url;
use crate::parse_duration;
use crate::secret::Secret;

/// ClickHouse connection settings.
#[derive(Clone, clap::Args)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP(S) URL; `https://` for TLS.
    #[arg(
        id = "clickhouse_url",
        long = "clickhouse-url",
        value_name = "CLICKHOUSE_URL",
        env = "RALLYPOINT_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    pub url: String,

    #[arg(
        id = "clickhouse_user",
        long = "clickhouse-user",
        value_name = "CLICKHOUSE_USER",
        env = "RALLYPOINT_CLICKHOUSE_USER",
        default_value = "default"
    )]
    pub user: String,

    #[arg(
        id = "clickhouse_password",
        long = "clickhouse-password",
        value_name = "CLICKHOUSE_PASSWORD",
        env = "RALLYPOINT_CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub password: Secret,

    #[arg(
        id = "clickhouse_database",
        long = "clickhouse-database",
        value_name = "CLICKHOUSE_DATABASE",
        env = "RALLYPOINT_CLICKHOUSE_DATABASE",
        default_value = "default"
    )]
    pub database: String,

    /// PEM file with the CA certificate(s) that signed ClickHouse's
    /// certificate. Setting it requires an `https://` URL.
    #[arg(
        id = "clickhouse_ca",
        long = "clickhouse-ca",
        value_name = "FILE",
        env = "RALLYPOINT_CLICKHOUSE_CA"
    )]
    pub ca: Option<PathBuf>,

    /// Longest wait for a connection to ClickHouse (TCP and TLS).
    #[arg(
        id = "clickhouse_connect_timeout",
        long = "clickhouse-connect-timeout",
        env = "RALLYPOINT_CLICKHOUSE_CONNECT_TIMEOUT",
        default_value = "5s",
        value_parser = parse_duration
    )]
    pub connect_timeout: Duration,

    /// Longest silence from ClickHouse on an open request (no answer byte,
    /// no progress sending) before the request fails. Longer than the
    /// readers' `max_execution_time`, so a slow query fails there first.
    /// (`rallypoint-collector setup` and `rebuild-rollups` use at least
    /// 10 min: their statements answer only when done.)
    #[arg(
        id = "clickhouse_io_timeout",
        long = "clickhouse-io-timeout",
        env = "RALLYPOINT_CLICKHOUSE_IO_TIMEOUT",
        default_value = "60s",
        value_parser = parse_duration
    )]
    pub io_timeout: Duration,
    /// The ClickHouse cluster (a `remote_servers` entry of every server's
    /// configuration) the schema spans: each table is replicated on every
    /// server of it (`Replicated*MergeTree`, `<table>_local`) and read and
    /// written through a `Distributed` table of the table's own name, and
    /// `setup` runs its DDL `ON CLUSTER`. Unset: one server.
    #[arg(
        id = "clickhouse_cluster",
        long = "clickhouse-cluster",
        value_name = "NAME",
        env = "RALLYPOINT_CLICKHOUSE_CLUSTER"
    )]
    pub cluster: Option<String>,
}

/// How long an idle pooled connection is kept: less than the server's
/// keep-alive (3 s before ClickHouse 23.11), so the server never closes one
/// under a request.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

impl ClickHouseArgs {
    /// `url` as `user` with `password`, database `default`, plain HTTP
    /// trust and the default deadlines (tests, tools).
    pub fn new(url: impl Into<String>, user: impl Into<String>, password: Secret) -> Self {
        ClickHouseArgs {
            url: url.into(),
            user: user.into(),
            password,
            database: "default".into(),
            ca: None,
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(60),
            cluster: None,
        }
    }

    /// The same settings with the schema spread over `cluster`.
    pub fn with_cluster(mut self, cluster: impl Into<String>) -> Self {
        self.cluster = Some(cluster.into());
        self
    }

    /// The same settings trusting only the CA in `ca`.
    pub fn with_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.ca = Some(ca.into());
        self
    }

    /// A client for these settings. Schema validation of rows is off: the
    /// caller turns it on once it knows the server supports it.
    pub fn client(&self) -> anyhow::Result<clickhouse::Client> {
        let tls = self.tls_config()?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(self.connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
        let https = if self.ca.is_some() {
            https.https_only()
        } else {
            https.https_or_http()
        }
        .enable_http1()
        .wrap_connector(http);
        let mut timed = hyper_timeout::TimeoutConnector::new(https);
        // The TLS handshake happens inside the wrapped connector's call.
        timed.set_connect_timeout(Some(self.connect_timeout));
        timed.set_read_timeout(Some(self.io_timeout));
        timed.set_write_timeout(Some(self.io_timeout));
        // A large insert is still being written while no answer can come.
        timed.set_reset_reader_on_write(true);
        let http_client = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(timed);
        Ok(clickhouse::Client::with_http_client(http_client)
            .with_url(&self.url)
            .with_user(&self.user)
            .with_password(self.password.expose())
            .with_database(&self.database)
            .with_validation(false))
    }

    /// The URL as it may appear in logs and errors.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    fn tls_config(&self) -> anyhow::Result<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(ca) => {
                if !self.url.starts_with("https://") {
                    anyhow::bail!(
                        "--clickhouse-ca is set but --clickhouse-url {} is not https://: \
                         the password would cross the network in the clear",
                        self.redacted_url()
                    );
                }
                let certs = CertificateDer::pem_file_iter(ca)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .with_context(|| {
                        format!(
                            "cannot read --clickhouse-ca {}: expected PEM certificates",
                            ca.display()
                        )
                    })?;
                if certs.is_empty() {
                    anyhow::bail!("--clickhouse-ca {} holds no certificate", ca.display());
                }
                for cert in certs {
                    roots.add(cert).with_context(|| {
                        format!(
                            "--clickhouse-ca {} holds an unusable certificate",
                            ca.display()
                        )
                    })?;
                }
            }
            None => {
                // Unreadable system roots only matter for https://, where
                // the handshake then fails naming the server.
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("rustls lacks TLS 1.2/1.3 support")?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}

/// The password never prints; the URL loses any userinfo.
impl fmt::Debug for ClickHouseArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseArgs")
            .field("url", &self.redacted_url())
            .field("user", &self.user)
            .field("password", &self.password)
            .field("database", &self.database)
            .field("ca", &self.ca)
            .field("connect_timeout", &self.connect_timeout)
            .field("io_timeout", &self.io_timeout)
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// The code of the ClickHouse exception an error carries ("Code: 158," on
/// 18.16, "Code: 158." on current servers), if any: what callers decide on
/// (a refusal of the data, a limit, an outage), never the wording.
pub fn error_code(error: &(impl std::fmt::Display + ?Sized)) -> Option<u32> {
    // `{:#}`: an anyhow error with its causes.
    let text = format!("{error:#}");
    let at = text.find("Code: ")?;
    let digits: String = text[at + 6..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}
