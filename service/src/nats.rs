//! How a binary reaches NATS: where, as whom, and whom to trust.
//!
//! Every binary that talks to NATS flattens [`NatsArgs`] into its settings and
//! calls [`connect`], so the relay and the collector log in, verify servers and
//! report failures the same way.
//!
//! **Identity is an NKey** (`--nats-nkey-file`): the file holds the process's
//! seed, the server configuration only its public key. Why NKeys rather than
//! a user and password: the servers' configuration (a Helm value, a ConfigMap)
//! then holds no secret at all, and the seed never crosses the wire — the
//! server sends a nonce and the client signs it. Why not decentralized JWT
//! accounts (an operator, a resolver): permissions here are few and fixed per
//! role, and static accounts keep them readable in one file.
//!
//! **TLS** turns on with `--nats-ca` (the CA that signed the servers'
//! certificates); `--nats-cert`/`--nats-key` add a client certificate for
//! servers that verify clients.
//!
//! A wrong credential or CA is not worth retrying: the first attempt runs on
//! its own, and an authentication or TLS failure stops the binary with an
//! error naming the flag to fix. A server that is merely not there yet is
//! retried in the background, as before, so relays may start before NATS.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::ConnectErrorKind;

/// NATS connection settings, the same flags and environment variables in
/// every binary.
#[derive(Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URLs, comma-separated; `tls://` when the servers require TLS.
    #[arg(
        id = "nats_urls",
        long = "nats-urls",
        env = "RALLYPOINT_NATS_URLS",
        value_delimiter = ',',
        default_value = "nats://127.0.0.1:4222"
    )]
    pub urls: Vec<String>,

    /// File holding this process's NKey seed (`SU…`, as `nk -gen user` writes
    /// it). The NATS server configuration lists the matching public key and
    /// its permissions. Without it the connection is anonymous.
    #[arg(
        id = "nats_nkey_file",
        long = "nats-nkey-file",
        value_name = "FILE",
        env = "RALLYPOINT_NATS_NKEY_FILE"
    )]
    pub nkey_file: Option<PathBuf>,

    /// PEM file with the CA certificate(s) that signed the NATS servers'
    /// certificates. Setting it requires TLS on every connection.
    #[arg(
        id = "nats_ca",
        long = "nats-ca",
        value_name = "FILE",
        env = "RALLYPOINT_NATS_CA"
    )]
    pub ca: Option<PathBuf>,

    /// PEM client certificate, for servers that verify clients (mutual TLS).
    #[arg(
        id = "nats_cert",
        long = "nats-cert",
        value_name = "FILE",
        env = "RALLYPOINT_NATS_CERT",
        requires = "nats_key"
    )]
    pub cert: Option<PathBuf>,

    /// PEM private key of `--nats-cert`.
    #[arg(
        id = "nats_key",
        long = "nats-key",
        value_name = "FILE",
        env = "RALLYPOINT_NATS_KEY",
        requires = "nats_cert"
    )]
    pub key: Option<PathBuf>,
}

impl NatsArgs {
    /// Plain settings for `urls`, anonymous and without TLS (tests, tools).
    pub fn plain(urls: Vec<String>) -> Self {
        NatsArgs {
            urls,
            nkey_file: None,
            ca: None,
            cert: None,
            key: None,
        }
    }

    /// The URLs as they may appear in logs and errors.
    pub fn redacted_urls(&self) -> String {
        self.urls
            .iter()
            .map(|url| redact_url(url))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Secrets stay out of `{:?}`: URLs lose their passwords; files are only paths.
impl fmt::Debug for NatsArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsArgs")
            .field("urls", &self.redacted_urls())
            .field("nkey_file", &self.nkey_file)
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

/// `scheme://user:secret@host` → `scheme://user:***@host`; a bare token
/// (`scheme://token@host`) becomes `***` too. Anything else is unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let redacted = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{scheme}://{redacted}{}", &rest[at..])
}

/// How the connection presents itself and where JetStream answers it.
pub struct ClientIdentity<'a> {
    /// Shown in the servers' connection lists (`connz`).
    pub name: &'a str,
    /// Prefix of reply subjects. Each role has its own, so that its
    /// permissions can allow its own replies and nothing else: a relay must
    /// not read the messages JetStream delivers to the collector.
    pub inbox_prefix: &'a str,
    /// Whether the servers deliver this client's own publications to its own
    /// subscriptions. A relay turns it off: it fans its clients' media out to
    /// its other clients itself, so an echo would be a second copy it pays
    /// to receive, parse and throw away.
    pub hears_itself: bool,
}

/// Time for one connection attempt, TLS and authentication included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Connects with `args`; fails at once, naming the flag, when the credential
/// or the CA is wrong; keeps retrying in the background when no server
/// answers yet (the client is returned and reconnects on its own).
pub async fn connect(
    args: &NatsArgs,
    identity: ClientIdentity<'_>,
) -> anyhow::Result<async_nats::Client> {
    // A lone first attempt tells "wrong credential or CA" apart from "no server yet".
    match options(args, &identity)?.connect(args.urls.clone()).await {
        Ok(client) => return Ok(client),
        Err(e) => match if tls_failure(&e) {
            ConnectErrorKind::Tls
        } else {
            e.kind()
        } {
            ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
                anyhow::bail!(
                    "NATS at {} refused {}'s credentials ({e}); check --nats-nkey-file{}",
                    args.redacted_urls(),
                    identity.name,
                    args.nkey_file
                        .as_ref()
                        .map(|f| format!(" ({})", f.display()))
                        .unwrap_or_else(|| " (none given: the servers require one)".into()),
                )
            }
            ConnectErrorKind::Tls => anyhow::bail!(
                "TLS with NATS at {} failed ({e}); check --nats-ca{} and that the URLs use tls://",
                args.redacted_urls(),
                args.ca
                    .as_ref()
                    .map(|f| format!(" ({})", f.display()))
                    .unwrap_or_default(),
            ),
            ConnectErrorKind::ServerParse => {
                anyhow::bail!("bad --nats-urls {}: {e}", args.redacted_urls())
            }
            _ => tracing::warn!(
                urls = %args.redacted_urls(),
                "NATS not reachable yet ({e}); retrying in the background"
            ),
        },
    }
    options(args, &identity)?
        .retry_on_initial_connect()
        .connect(args.urls.clone())
        .await
        .with_context(|| format!("cannot connect to NATS at {}", args.redacted_urls()))
}

/// The options [`connect`] uses, for callers that add their own (a larger
/// subscription buffer, say) and connect themselves.
pub fn options(
    args: &NatsArgs,
    identity: &ClientIdentity<'_>,
) -> anyhow::Result<async_nats::ConnectOptions> {
    let name = identity.name.to_owned();
    let mut options = async_nats::ConnectOptions::new()
        .name(identity.name)
        .custom_inbox_prefix(identity.inbox_prefix)
        .max_reconnects(None)
        .connection_timeout(CONNECT_TIMEOUT)
        .reconnect_delay_callback(|attempt| {
            Duration::from_millis((100 * 2u64.saturating_pow(attempt.min(5) as u32)).min(2_000))
        })
        .event_callback(move |event| {
            let name = name.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!(client = %name, "NATS connected")
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(client = %name, "NATS disconnected; reconnecting")
                    }
                    other => tracing::info!(client = %name, "NATS: {other}"),
                }
            }
        });
    if !identity.hears_itself {
        options = options.no_echo();
    }
    if let Some(file) = &args.nkey_file {
        options = options.nkey(read_seed(file)?);
    }
    if let Some(ca) = &args.ca {
        readable(ca, "--nats-ca")?;
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        readable(cert, "--nats-cert")?;
        readable(key, "--nats-key")?;
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options)
}

/// async-nats files a failed TLS handshake (an unknown CA, a name the
/// certificate does not cover) under I/O errors; the rustls error inside
/// tells it apart from a server that is simply not there.
fn tls_failure(error: &async_nats::ConnectError) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(current) = source {
        if current.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        source = current.source();
    }
    false
}

/// Reads an NKey seed file; warns when others may read it too.
fn read_seed(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file).with_context(|| {
        format!(
            "cannot read --nats-nkey-file {}; give the file holding this process's NKey seed",
            file.display()
        )
    })?;
    warn_if_shared(file);
    let seed = text
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("SU"))
        .with_context(|| {
            format!(
                "--nats-nkey-file {} holds no user seed (a line starting with SU)",
                file.display()
            )
        })?;
    Ok(seed.to_owned())
}

#[cfg(unix)]
fn warn_if_shared(file: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(file)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %file.display(),
            "the NATS seed file is readable by other users; chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_file: &Path) {}

fn readable(file: &Path, flag: &str) -> anyhow::Result<()> {
    std::fs::metadata(file)
        .map(|_| ())
        .with_context(|| format!("cannot read {flag} {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_text() {
        assert_eq!(
            redact_url("nats://relay:hunter2@nats-0:4222"),
            "nats://relay:***@nats-0:4222"
        );
        assert_eq!(redact_url("tls://s3cr3t@nats:4222"), "tls://***@nats:4222");
        assert_eq!(redact_url("nats://nats:4222"), "nats://nats:4222");
        assert_eq!(redact_url("nats:4222"), "nats:4222");
        // An `@` after the authority is a path, not userinfo.
        assert_eq!(redact_url("ws://host/a@b"), "ws://host/a@b");
        let args = NatsArgs::plain(vec!["nats://u:topsecret@h:1".into()]);
        let debug = format!("{args:?}");
        assert!(!debug.contains("topsecret"), "{debug}");
        assert!(args.redacted_urls().contains("u:***@h:1"));
    }

    #[test]
    fn a_seed_file_without_a_seed_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("rp-seed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("empty.nk");
        std::fs::write(&file, "not a seed\n").unwrap();
        let error = read_seed(&file).unwrap_err().to_string();
        assert!(
            error.contains("--nats-nkey-file") && error.contains("empty.nk"),
            "{error}"
        );
        let missing = read_seed(&dir.join("missing.nk")).unwrap_err().to_string();
        assert!(
            missing.contains("cannot read --nats-nkey-file"),
            "{missing}"
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
