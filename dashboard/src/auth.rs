//! Who may see the dashboard. The dashboard is fronted the way SRE tools
//! usually are, in one or both of two ways:
//!
//! * a users file (`--auth-users-file`): lines `name:$argon2id$…` (PHC
//!   strings; `rallypoint-dashboard hash-password NAME` makes one), and
//!   people sign in with HTTP basic authentication;
//! * an authenticating reverse proxy (oauth2-proxy and the like) that names
//!   the signed-in user in a header (`--trusted-proxy-header
//!   X-Forwarded-User`), believed only on connections from the proxies'
//!   addresses (`--trusted-proxies`): from anyone else it is ignored.
//!
//! `--allowed-users` narrows either to some names (others get a 403), and
//! `--no-auth` serves everyone, for local development. With none of these
//! the dashboard does not start ([`AuthArgs::build`] says what to set).
//!
//! Everything but `/healthz` needs an identity: without one the answer is a
//! 401 with `WWW-Authenticate: Basic realm="rallypoint"`. The user is
//! recorded in the request's span; passwords and the `Authorization`
//! header are never logged.
//!
//! Checking an Argon2 hash is deliberately slow (tens of milliseconds, more
//! in debug builds) and a page loads a stylesheet and a script and refreshes
//! itself, all with the same credentials: a verified `Authorization` is
//! remembered for [`REMEMBERED_FOR`] under a keyed SHA-256 digest (never the
//! password itself), and at most [`CONCURRENT_CHECKS`] hashes are checked at
//! once so that a flood of guesses cannot take every core and megabytes of
//! memory each.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use axum::extract::{ConnectInfo, Request};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64ct::Encoding as _;
use ipnet::IpNet;
use sha2::Digest as _;

/// How the dashboard knows who is asking.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthArgs {
    /// Users who sign in with HTTP basic authentication: a file of
    /// `name:$argon2id$…` lines (`rallypoint-dashboard hash-password NAME`
    /// makes one; plaintext passwords are refused). Keep it readable by the
    /// dashboard only.
    #[arg(
        long,
        env = "RALLYPOINT_DASHBOARD_AUTH_USERS_FILE",
        value_name = "FILE"
    )]
    pub auth_users_file: Option<PathBuf>,
    /// A header in which an authenticating reverse proxy names the signed-in
    /// user (oauth2-proxy: X-Forwarded-User or X-Forwarded-Email); believed
    /// only on connections from --trusted-proxies.
    #[arg(
        long,
        env = "RALLYPOINT_DASHBOARD_TRUSTED_PROXY_HEADER",
        value_name = "HEADER"
    )]
    pub trusted_proxy_header: Option<HeaderName>,
    /// The proxies whose --trusted-proxy-header is believed: addresses or
    /// networks, comma-separated (10.0.0.7,10.1.0.0/16).
    #[arg(
        long,
        env = "RALLYPOINT_DASHBOARD_TRUSTED_PROXIES",
        value_name = "IP[/BITS],…",
        value_delimiter = ',',
        value_parser = parse_network
    )]
    pub trusted_proxies: Vec<IpNet>,
    /// Only these users (comma-separated), however they signed in; anyone
    /// else gets a 403. Default: every user the file or the proxy names.
    #[arg(
        long,
        env = "RALLYPOINT_DASHBOARD_ALLOWED_USERS",
        value_name = "NAME,…",
        value_delimiter = ','
    )]
    pub allowed_users: Vec<String>,
    /// Serve everyone without authentication: for local development only.
    #[arg(
        long,
        env = "RALLYPOINT_DASHBOARD_NO_AUTH",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub no_auth: bool,
}

/// An address (a network of one) or a network.
fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if text.contains('/') {
        text.parse::<IpNet>().map_err(|e| e.to_string())
    } else {
        text.parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|e| e.to_string())
    }
}

/// What --help and the refusal to start tell people to set.
const HOW_TO: &str = "set --auth-users-file FILE (RALLYPOINT_DASHBOARD_AUTH_USERS_FILE; lines \
     name:$argon2id$…, made by `rallypoint-dashboard hash-password NAME`), or \
     --trusted-proxy-header HEADER with --trusted-proxies IP,… \
     (RALLYPOINT_DASHBOARD_TRUSTED_PROXY_HEADER, RALLYPOINT_DASHBOARD_TRUSTED_PROXIES) \
     for an authenticating reverse proxy, or --no-auth (RALLYPOINT_DASHBOARD_NO_AUTH=true) \
     for local development";

impl AuthArgs {
    /// The settings checked and the users file read, or why the dashboard
    /// cannot start with them.
    pub fn build(&self) -> anyhow::Result<Auth> {
        let proxy = match (&self.trusted_proxy_header, self.trusted_proxies.is_empty()) {
            (Some(header), false) => Some(Proxy {
                header: header.clone(),
                trusted: self.trusted_proxies.clone(),
            }),
            (Some(header), true) => bail!(
                "--trusted-proxy-header {header} needs --trusted-proxies (the proxies' \
                 addresses): from anyone else the header could be forged"
            ),
            (None, false) => bail!("--trusted-proxies needs --trusted-proxy-header"),
            (None, true) => None,
        };
        if self.no_auth {
            if self.auth_users_file.is_some() || proxy.is_some() || !self.allowed_users.is_empty() {
                bail!(
                    "--no-auth serves everyone: it cannot be combined with --auth-users-file, \
                     --trusted-proxy-header or --allowed-users"
                );
            }
            return Ok(Auth::none());
        }
        let users = match &self.auth_users_file {
            Some(path) => Some(Users::read(path)?),
            None => None,
        };
        if users.is_none() && proxy.is_none() {
            bail!("the dashboard needs authentication: {HOW_TO}");
        }
        let allowed: HashSet<String> = self
            .allowed_users
            .iter()
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        if !self.allowed_users.is_empty() && allowed.is_empty() {
            bail!("--allowed-users names no user");
        }
        Ok(Auth {
            required: Some(Required {
                users,
                proxy,
                allowed: (!allowed.is_empty()).then_some(allowed),
            }),
            remembered: Mutex::new(HashMap::new()),
            key: rand::random(),
            checks: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_CHECKS)),
            waiting: AtomicUsize::new(0),
        })
    }
}

/// A verified `Authorization` is remembered this long.
pub const REMEMBERED_FOR: Duration = Duration::from_secs(300);
/// At most this many remembered; past it the memory starts afresh.
const REMEMBERED_AT_MOST: usize = 1024;
/// Password hashes checked at once.
pub const CONCURRENT_CHECKS: usize = 2;
/// Sign-ins that may wait for a check ([`Auth::check_turn`]): about a
/// second and a half of checks.
const CHECK_WAITING: usize = 64;
/// The longest a sign-in waits for a check.
const CHECK_WAIT: Duration = Duration::from_secs(2);
/// The longest user name believed from a header or a users file.
const NAME_AT_MOST: usize = 256;

/// Who may see the dashboard, and what has been verified lately.
pub struct Auth {
    /// `None`: everyone (`--no-auth`).
    required: Option<Required>,
    /// keyed digest of a verified `Authorization` value → (user, when).
    remembered: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    key: [u8; 32],
    checks: Arc<tokio::sync::Semaphore>,
    /// Sign-ins waiting for a check.
    waiting: AtomicUsize,
}

struct Required {
    users: Option<Users>,
    proxy: Option<Proxy>,
    allowed: Option<HashSet<String>>,
}

struct Proxy {
    header: HeaderName,
    trusted: Vec<IpNet>,
}

impl Proxy {
    fn trusts(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted.iter().any(|net| net.contains(&peer))
    }
}

/// The users file: each name and its Argon2 hash.
struct Users {
    hashes: HashMap<String, PasswordHash>,
    /// Checked for names that are not in the file, so that a wrong name
    /// takes as long as a wrong password (the costliest hash in the file).
    decoy: PasswordHash,
}

impl Users {
    fn read(path: &Path) -> anyhow::Result<Users> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --auth-users-file {}", path.display()))?;
        warn_if_readable_by_others(path);
        let mut hashes = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // Errors name the file and line, never the line's text: it may be
            // someone's password.
            let at = format!("--auth-users-file {} line {}", path.display(), i + 1);
            let Some((name, hash)) = line.split_once(':') else {
                bail!("{at}: not name:$argon2id$…");
            };
            let name = name.trim();
            if name.is_empty() || name.len() > NAME_AT_MOST {
                bail!("{at}: a user name of 1 to {NAME_AT_MOST} bytes comes before the ':'");
            }
            if !hash.starts_with("$argon2") {
                bail!(
                    "{at}: the password is not an Argon2 hash ($argon2id$…); plaintext and \
                     other hashes are refused (`rallypoint-dashboard hash-password {name}` \
                     makes the line)"
                );
            }
            let hash = PasswordHash::new(hash.trim())
                .ok()
                .filter(|h| {
                    h.algorithm.as_str().parse::<argon2::Algorithm>().is_ok()
                        && argon2::Params::try_from(h).is_ok()
                        && h.hash.is_some()
                })
                .with_context(|| format!("{at}: not a valid Argon2 PHC string"))?;
            if hashes.insert(name.to_owned(), hash).is_some() {
                bail!("{at}: {name} is already in the file");
            }
        }
        let decoy = hashes
            .values()
            .max_by_key(|h| {
                argon2::Params::try_from(*h)
                    .map_or(0, |p| u64::from(p.m_cost()) * u64::from(p.t_cost()))
            })
            .cloned()
            .with_context(|| format!("--auth-users-file {} has no users", path.display()))?;
        Ok(Users { hashes, decoy })
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the users file can be read by other users: chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path) {}

/// A users-file line for `name` with `password`: Argon2id with the
/// recommended parameters and a random salt.
pub fn users_line(name: &str, password: &str) -> anyhow::Result<String> {
    if name.is_empty() || name.contains(':') || name.contains(char::is_whitespace) {
        bail!("a user name is not empty and has no ':' or spaces");
    }
    if password.is_empty() {
        bail!("an empty password is refused");
    }
    let hash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
    Ok(format!("{name}:{hash}"))
}

/// Who is asking, once known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User(pub String);

/// Why a request gets no page.
enum Refusal {
    /// No identity (or a wrong password): 401.
    Unknown,
    /// Someone the allow-list does not name: 403.
    NotAllowed(String),
}

impl Auth {
    /// Everyone may see the dashboard (`--no-auth`).
    pub fn none() -> Auth {
        Auth {
            required: None,
            remembered: Mutex::new(HashMap::new()),
            key: [0; 32],
            checks: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_CHECKS)),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Whether every request is answered without asking who.
    pub fn is_open(&self) -> bool {
        self.required.is_none()
    }

    /// A description for the start-up log line.
    pub fn describe(&self) -> String {
        let Some(required) = &self.required else {
            return "none (--no-auth)".into();
        };
        let mut ways = Vec::new();
        if let Some(users) = &required.users {
            ways.push(format!("basic, users: {}", users.hashes.len()));
        }
        if let Some(proxy) = &required.proxy {
            let trusted: Vec<String> = proxy.trusted.iter().map(ToString::to_string).collect();
            ways.push(format!(
                "proxy header {} from {}",
                proxy.header,
                trusted.join(",")
            ));
        }
        if let Some(allowed) = &required.allowed {
            ways.push(format!("{} allowed users", allowed.len()));
        }
        ways.join(", ")
    }

    async fn identify(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Result<User, Refusal> {
        let Some(required) = &self.required else {
            return Ok(User("-".into()));
        };
        let user = self
            .identify_required(required, headers, peer)
            .await
            .ok_or(Refusal::Unknown)?;
        match &required.allowed {
            Some(allowed) if !allowed.contains(&user.0) => Err(Refusal::NotAllowed(user.0)),
            _ => Ok(user),
        }
    }

    async fn identify_required(
        &self,
        required: &Required,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) -> Option<User> {
        if let Some(proxy) = &required.proxy
            && let Some(value) = headers.get(&proxy.header)
        {
            match peer {
                Some(peer) if proxy.trusts(peer) => {
                    let name = value.to_str().ok().map(str::trim).filter(|n| {
                        !n.is_empty() && n.len() <= NAME_AT_MOST && !n.contains(char::is_control)
                    });
                    match name {
                        Some(name) => return Some(User(name.to_owned())),
                        None => tracing::warn!(
                            header = %proxy.header,
                            "a trusted proxy sent an unusable user name"
                        ),
                    }
                }
                _ => tracing::info!(
                    header = %proxy.header,
                    peer = %peer.map_or_else(|| "unknown".into(), |p| p.to_string()),
                    "ignored the proxy header from a peer not in --trusted-proxies"
                ),
            }
        }
        let users = required.users.as_ref()?;
        let value = headers.get(AUTHORIZATION)?.as_bytes();
        self.basic(users, value).await
    }

    /// A turn to check a password hash, for a sign-in not remembered. At
    /// most [`CHECK_WAITING`] sign-ins wait for one, each at most
    /// [`CHECK_WAIT`]; past either the sign-in fails as a wrong password
    /// does. Without them a flood of wrong passwords (each check costs tens
    /// of milliseconds) built a queue that only grew, and everyone's first
    /// sign-in waited behind it for as long as the flood lasted.
    async fn check_turn(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Relaxed);
            }
        }
        let waiting = Waiting(&self.waiting);
        if self.waiting.fetch_add(1, Relaxed) >= CHECK_WAITING {
            tracing::warn!(
                "sign-in refused: {CHECK_WAITING} sign-ins already wait for a password check"
            );
            return None;
        }
        let turn = tokio::time::timeout(CHECK_WAIT, self.checks.clone().acquire_owned()).await;
        drop(waiting);
        match turn {
            Ok(permit) => permit.ok(),
            Err(_) => {
                tracing::warn!("sign-in refused: no password check free within {CHECK_WAIT:?}");
                None
            }
        }
    }

    /// The user an `Authorization: Basic …` value names, if its password is
    /// right.
    async fn basic(&self, users: &Users, value: &[u8]) -> Option<User> {
        let digest: [u8; 32] = sha2::Sha256::new()
            .chain_update(self.key)
            .chain_update(value)
            .finalize()
            .into();
        if let Some((user, at)) = self.remembered.lock().unwrap().get(&digest)
            && at.elapsed() < REMEMBERED_FOR
        {
            return Some(User(user.clone()));
        }
        let (name, password) = decode_basic(value)?;
        let known = users.hashes.get(&name);
        let hash = known.unwrap_or(&users.decoy).clone();
        let turn = self.check_turn().await?;
        // The turn goes with the check: a client that leaves mid-check
        // frees it only once the check is done, so checks at once stay
        // within CONCURRENT_CHECKS however many clients come and go.
        let right = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .await
        .ok()?;
        if !(right && known.is_some()) {
            tracing::info!(name = ?shorten(&name), "sign-in failed: unknown user or wrong password");
            return None;
        }
        let mut remembered = self.remembered.lock().unwrap();
        if remembered.len() >= REMEMBERED_AT_MOST {
            remembered.clear();
        }
        remembered.insert(digest, (name.clone(), Instant::now()));
        Some(User(name))
    }
}

/// The name and password of `Basic base64(name:password)`.
fn decode_basic(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64ct::Base64::decode_vec(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (name, password) = decoded.split_once(':')?;
    Some((name.to_owned(), password.to_owned()))
}

/// A name as logged: whatever someone typed, at most 64 characters.
fn shorten(name: &str) -> String {
    name.chars().take(64).collect()
}

/// Lets through `/healthz` and requests from someone allowed (recording who
/// in the request's span); answers the rest with a 401 or a 403.
pub async fn require_identity(
    auth: axum::extract::State<Arc<Auth>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    match auth.identify(request.headers(), peer).await {
        Ok(user) => {
            tracing::Span::current().record("user", tracing::field::display(&user.0));
            let mut request = request;
            request.extensions_mut().insert(user);
            next.run(request).await
        }
        Err(Refusal::Unknown) => {
            tracing::Span::current().record("user", tracing::field::display("-"));
            (
                StatusCode::UNAUTHORIZED,
                [
                    (
                        WWW_AUTHENTICATE,
                        r#"Basic realm="rallypoint", charset="UTF-8""#,
                    ),
                    (CONTENT_TYPE, "text/plain; charset=utf-8"),
                    (CACHE_CONTROL, "no-store"),
                ],
                "401 Unauthorized: sign in to see the rallypoint dashboard.\n",
            )
                .into_response()
        }
        Err(Refusal::NotAllowed(user)) => {
            tracing::Span::current().record("user", tracing::field::display(shorten(&user)));
            tracing::info!("refused: the user is not in --allowed-users");
            (
                StatusCode::FORBIDDEN,
                [
                    (CONTENT_TYPE, "text/plain; charset=utf-8"),
                    (CACHE_CONTROL, "no-store"),
                ],
                "403 Forbidden: you are signed in, but not allowed to see the rallypoint \
                 dashboard; ask its operator.\n",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_values_are_decoded() {
        let value = format!("Basic {}", base64ct::Base64::encode_string(b"alice:pa:ss"));
        assert_eq!(
            decode_basic(value.as_bytes()),
            Some(("alice".into(), "pa:ss".into()))
        );
        assert_eq!(decode_basic(b"Bearer abc"), None);
        assert_eq!(decode_basic(b"Basic !!!"), None);
        let no_colon = format!("Basic {}", base64ct::Base64::encode_string(b"alice"));
        assert_eq!(decode_basic(no_colon.as_bytes()), None);
    }

    /// Every check busy (a flood of wrong passwords being hashed): a
    /// sign-in that is not remembered gives up after [`CHECK_WAIT`] instead
    /// of waiting for as long as the flood lasts.
    #[tokio::test]
    async fn a_sign_in_waits_for_a_password_check_no_longer_than_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users");
        std::fs::write(&file, users_line("alice", "right").unwrap()).unwrap();
        let auth = Auth::none();
        let users = Users::read(&file).unwrap();
        let flood = auth
            .checks
            .acquire_many(CONCURRENT_CHECKS as u32)
            .await
            .unwrap();
        let value = format!("Basic {}", base64ct::Base64::encode_string(b"alice:right"));
        let answer =
            tokio::time::timeout(CHECK_WAIT * 3, auth.basic(&users, value.as_bytes())).await;
        assert!(
            matches!(answer, Ok(None)),
            "a sign-in waited past {CHECK_WAIT:?} for a password check"
        );
        assert_eq!(auth.waiting.load(Relaxed), 0, "the waiter left its place");
        drop(flood);
        assert!(auth.basic(&users, value.as_bytes()).await.is_some());
    }

    #[test]
    fn networks_and_addresses_parse() {
        assert!(
            parse_network("10.0.0.0/8")
                .unwrap()
                .contains(&"10.1.2.3".parse::<IpAddr>().unwrap())
        );
        let one = parse_network(" 127.0.0.1").unwrap();
        assert!(one.contains(&"127.0.0.1".parse::<IpAddr>().unwrap()));
        assert!(!one.contains(&"127.0.0.2".parse::<IpAddr>().unwrap()));
        assert!(parse_network("nope").is_err());
        let proxy = Proxy {
            header: HeaderName::from_static("x-forwarded-user"),
            trusted: vec![one],
        };
        assert!(
            proxy.trusts("::ffff:127.0.0.1".parse().unwrap()),
            "v4-mapped peers"
        );
    }
}
